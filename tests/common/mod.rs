//! Helpers shared by the integration tests: scratch folders, fixture bundles and frames, and
//! running the real `inspectd` binary (through a runner such as qemu when cross-testing).

#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use inspect_core::fixtures::{brightness_bundle_in, concrete_frame};
pub use inspect_core::fixtures::{square as patch, Scratch};
use inspect_core::tiler::PixelBox;

/// Writes the brightness bundle into `dir/bundle`.
pub fn bundle(dir: &Path) -> PathBuf {
    brightness_bundle_in(dir).unwrap()
}

/// Writes a 1280x720 concrete frame with `defects` as PNG.
pub fn frame(path: &Path, seed: u64, defects: &[PixelBox]) {
    concrete_frame(1280, 720, seed, defects).save(path).unwrap();
}

/// A config for the daemon; `output` is the `[alerts]` body.
pub fn config(dir: &Path, bundle: &Path, frames: &Path, alerts: &str) -> PathBuf {
    let text = format!(
        r#"device_id = "test-rig"
[model]
bundle = "{}"
[source]
kind = "folder"
path = "{}"
[tiling]
tile_size = 256
overlap = 32
[alerts]
{alerts}
status_interval_s = 1
"#,
        bundle.display(),
        frames.display()
    );
    let path = dir.join("inspectd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The `inspectd` binary as a command, prefixed by `EDGE_INSPECTOR_RUNNER` when set
/// (e.g. `qemu-aarch64-static -cpu cortex-a72` for a cross-built binary).
pub fn inspectd() -> Command {
    binary(env!("CARGO_BIN_EXE_inspectd"))
}

/// A binary of this package as a command, through `EDGE_INSPECTOR_RUNNER` when set.
pub fn binary(bin: &str) -> Command {
    match std::env::var("EDGE_INSPECTOR_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut cmd = Command::new(parts.next().unwrap_or_default());
            cmd.args(parts).arg(bin);
            cmd
        }
        _ => Command::new(bin),
    }
}

/// The path of a binary of another package of the workspace, built into the same target
/// directory as this test (cargo only builds the tested package's own binaries); panics with the
/// command to run when it is not there.
pub fn workspace_binary(name: &str) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
        .expect("the test binary lies in target/<profile>/deps");
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build -p {name}` (tests/run.sh does)",
        path.display()
    );
    path.display().to_string()
}

/// Runs `inspectd` with `args` to completion.
pub fn run_inspectd(args: &[&str]) -> Output {
    inspectd()
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

/// Sends `sig` (e.g. `libc::SIGTERM`) to a child process.
pub fn signal(child: &std::process::Child, sig: libc::c_int) {
    // SAFETY: sends a signal to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// A pseudo-terminal pair whose descriptors children do not inherit: serialport opens both ends
/// without O_CLOEXEC, and a daemon started later would keep the pty alive after the test closes
/// its end ("pulls the cable").
pub fn pty_pair() -> (serialport::TTYPort, serialport::TTYPort) {
    use std::os::fd::AsRawFd;
    let (master, slave) = serialport::TTYPort::pair().unwrap();
    for fd in [master.as_raw_fd(), slave.as_raw_fd()] {
        // SAFETY: sets a flag on descriptors these objects own.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    (master, slave)
}

/// A pseudo-terminal pair whose master reads time out after 20 ms (for [`null_modem`]).
pub fn pty() -> (serialport::TTYPort, serialport::TTYPort) {
    use serialport::SerialPort;
    let (mut master, slave) = pty_pair();
    master
        .set_timeout(std::time::Duration::from_millis(20))
        .unwrap();
    (master, slave)
}

/// A null-modem cable: copies bytes both ways between two pty masters until `stop`.
pub fn null_modem(
    mut a: serialport::TTYPort,
    mut b: serialport::TTYPort,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = a.read(&mut buf) {
                let _ = b.write_all(&buf[..n]);
            }
            if let Ok(n) = b.read(&mut buf) {
                let _ = a.write_all(&buf[..n]);
            }
        }
    })
}
