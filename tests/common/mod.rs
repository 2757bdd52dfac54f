//! Helpers shared by the integration tests: scratch folders, fixture bundles and frames, and
//! running the real `inspectd` binary (through a runner such as qemu when cross-testing).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use inspect_core::fixtures::{concrete_frame, write_brightness_bundle, BrightnessModel};
use inspect_core::tiler::PixelBox;

/// A fresh scratch folder for one test, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("edge-inspector-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the brightness bundle into `dir/bundle`.
pub fn bundle(dir: &Path) -> PathBuf {
    let path = dir.join("bundle");
    write_brightness_bundle(&path, &BrightnessModel::default()).unwrap();
    path
}

/// A defect box.
pub fn patch(x: u32, y: u32, side: u32) -> PixelBox {
    PixelBox {
        x,
        y,
        width: side,
        height: side,
    }
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

/// Writes a generic-layout defect source under `dir`: `images/` with three 120x90 colour
/// pictures of a dark reddish crack (a diagonal band 3 px wide, each at its own angle) and one
/// without, and `masks/` with their masks (the last one empty). Returns (images, masks).
pub fn defect_source(dir: &Path) -> (PathBuf, PathBuf) {
    use image::{GrayImage, Luma, Rgb, RgbImage};
    let (images, masks) = (dir.join("images"), dir.join("masks"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    for (i, slope) in [0.3f32, 0.8, -0.5, f32::NAN].iter().enumerate() {
        let crack = |x: u32, y: u32| {
            !slope.is_nan() && (10..110).contains(&x) && {
                let line = 45.0 + slope * (x as f32 - 60.0);
                (y as f32 - line).abs() < 1.5
            }
        };
        RgbImage::from_fn(120, 90, |x, y| {
            if crack(x, y) {
                Rgb([60, 20, 15])
            } else {
                Rgb([170, 160, 150 + (x % 7) as u8])
            }
        })
        .save(images.join(format!("crack{i}.png")))
        .unwrap();
        GrayImage::from_fn(120, 90, |x, y| Luma([if crack(x, y) { 255 } else { 0 }]))
            .save(masks.join(format!("crack{i}.png")))
            .unwrap();
    }
    (images, masks)
}

/// Writes `count` defect-free 160x120 concrete frames as PNG into `dir`.
pub fn normal_images(dir: &Path, count: u64) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..count)
        .map(|i| {
            let p = dir.join(format!("good{i:02}.png"));
            concrete_frame(160, 120, 100 + i, &[]).save(&p).unwrap();
            p
        })
        .collect()
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

/// Worst error of a flow's parameter gradients, per parameter tensor: max |got - want| over
/// max |want|, in the CPU flow's layout (per block W1, b1, W2, b2, g, offset). An f32 backward
/// cannot give every near-zero entry to 1e-5 of itself, but must give each tensor to 1e-5 of
/// its own scale.
pub fn gradient_error(got: &[f64], want: &[f64], channels: usize, condition: usize) -> f64 {
    assert_eq!(got.len(), want.len());
    let d = channels - channels / 2 + condition;
    let (h, o) = (2 * d, 2 * (channels / 2));
    let sizes = [h * d, h, o * h, o, channels, channels];
    let mut error = 0.0f64;
    let mut start = 0;
    for size in sizes.iter().cycle() {
        if start >= got.len() {
            break;
        }
        let (g, w) = (&got[start..start + size], &want[start..start + size]);
        let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
        let diff = g
            .iter()
            .zip(w)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        error = error.max(diff / scale);
        start += size;
    }
    assert_eq!(start, got.len(), "gradients of whole blocks");
    error
}
