//! A live camera that delivers corrupt frames, goes away and comes back: the real `inspectd`
//! reads an MJPEG stream from a FIFO (as from `rpicam-vid --codec mjpeg -o fifo`); the test is
//! the camera. Corrupt frames are skipped and counted, the lost camera is reopened with
//! backoff, inspection resumes without a restart.

mod common;

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn jpeg_frame(seed: u64, defects: &[inspect_core::tiler::PixelBox]) -> Vec<u8> {
    let img = inspect_core::fixtures::concrete_frame(1280, 720, seed, defects);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .encode_image(&img)
        .unwrap();
    out
}

#[test]
fn a_camera_that_fails_and_comes_back_is_reopened_without_a_restart() {
    let dir = Scratch::new("camera");
    let fifo = dir.path("camera.mjpeg");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: creates a FIFO at a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let bundle = bundle(&dir.0);
    let config = dir.path("inspectd.toml");
    std::fs::write(
        &config,
        format!(
            r#"device_id = "camera-rig"
[model]
bundle = "{}"
[source]
kind = "stream"
path = "{}"
[tiling]
tile_size = 256
overlap = 32
[alerts]
output = "stdout"
status_interval_s = 1
"#,
            bundle.display(),
            fifo.display()
        ),
    )
    .unwrap();
    let mut daemon = inspectd()
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = daemon.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let defect = patch(560, 300, 48);
    let good = jpeg_frame(3, &[defect]);
    let mut corrupt = vec![0xFF, 0xD8, 0xFF, 0xE0];
    corrupt.extend_from_slice(b"a frame torn on the USB bus");
    corrupt.extend_from_slice(&[0xFF, 0xD9]);

    // Wait for each frame to be inspected before the next (a live source keeps only the newest),
    // so the counts below are exact.
    let mut lines: Vec<Value> = Vec::new();
    let mut frames_seen = |want: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
                let reached = v["type"] == "status" && v["frames"].as_u64() >= Some(want);
                lines.push(v);
                if reached {
                    return;
                }
            }
        }
        panic!("the daemon did not reach {want} frames");
    };
    // First life of the camera: two good frames, a corrupt one, one more good; then unplugged.
    {
        // Opening for writing waits until the daemon has the FIFO open.
        let mut camera = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        for (i, bytes) in [&good, &good, &corrupt, &good].into_iter().enumerate() {
            camera.write_all(bytes).unwrap();
            camera.flush().unwrap();
            if i != 2 {
                let want = if i < 2 { i as u64 + 1 } else { 3 };
                frames_seen(want);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(1200));
    // Plugged back in: the daemon reopens it and inspects again.
    {
        let mut camera = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        for want in 4..=5 {
            camera.write_all(&good).unwrap();
            frames_seen(want);
        }
    }
    signal(&daemon, libc::SIGTERM);
    let status = daemon.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut daemon.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let last = lines
        .iter()
        .rev()
        .find(|v| v["type"] == "status")
        .unwrap_or_else(|| panic!("no final status\n{stderr}"));
    assert_eq!(last["frames"], 5, "{last}");
    assert_eq!(last["skipped_frames"], 1, "{last}");
    assert!(last["source_failures"].as_u64().unwrap() >= 1, "{last}");
    assert!(stderr.contains("frame source failed"), "{stderr}");
    assert!(stderr.contains("frame source back"), "{stderr}");
    // Frames after the reconnect were inspected: their alerts carry frame numbers 3 and 4.
    let alert_frames: Vec<u64> = lines
        .iter()
        .filter(|v| v["type"] == "alert")
        .filter_map(|v| v["frame"].as_u64())
        .collect();
    assert!(alert_frames.contains(&4), "{alert_frames:?}");
}

/// The systemd notifications a daemon sent, read from a fake `NOTIFY_SOCKET`.
fn drain(socket: &std::os::unix::net::UnixDatagram, for_: Duration) -> Vec<String> {
    let until = std::time::Instant::now() + for_;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < until {
        if let Ok(n) = socket.recv(&mut buf) {
            got.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_string),
            );
        }
    }
    got
}

#[test]
fn the_watchdog_is_fed_only_while_frames_flow() {
    let dir = Scratch::new("watchdog");
    let fifo = dir.path("camera.mjpeg");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: creates a FIFO at a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let notify_path = dir.path("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let bundle = bundle(&dir.0);
    let config = dir.path("inspectd.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"wd\"\n[model]\nbundle = \"{}\"\n[source]\nkind = \"stream\"\npath = \"{}\"\n\
             [tiling]\ntile_size = 256\n[alerts]\noutput = \"stdout\"\nstatus_interval_s = 1\n",
            bundle.display(),
            fifo.display()
        ),
    )
    .unwrap();
    let daemon = inspectd()
        .args(["--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let frame = jpeg_frame(5, &[]);
    let mut camera = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let pings = |msgs: &[String]| msgs.iter().filter(|m| *m == "WATCHDOG=1").count();
    // One frame at a time, each waited for (slow under qemu): exactly one ping per frame.
    let mut flowing = Vec::new();
    for want in 1..=3 {
        camera.write_all(&frame).unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(120);
        while pings(&flowing) < want && std::time::Instant::now() < until {
            flowing.extend(drain(&notify, Duration::from_millis(200)));
        }
    }
    assert!(flowing.iter().any(|m| m == "READY=1"), "{flowing:?}");
    assert_eq!(pings(&flowing), 3, "one ping per frame: {flowing:?}");
    // The camera is still connected but sends nothing: no frame, no ping (systemd would
    // restart the service after WatchdogSec); status reports go on.
    let stalled = drain(&notify, Duration::from_secs(3));
    assert_eq!(pings(&stalled), 0, "{stalled:?}");
    assert!(
        stalled.iter().any(|m| m.starts_with("STATUS=")),
        "{stalled:?}"
    );
    camera.write_all(&frame).unwrap();
    let mut resumed = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while pings(&resumed) == 0 && std::time::Instant::now() < until {
        resumed.extend(drain(&notify, Duration::from_millis(200)));
    }
    assert_eq!(pings(&resumed), 1, "{resumed:?}");
    signal(&daemon, libc::SIGTERM);
    let mut daemon = daemon;
    assert!(daemon.wait().unwrap().success());
    let last = drain(&notify, Duration::from_millis(300));
    assert!(last.iter().any(|m| m == "STOPPING=1"), "{last:?}");
}
