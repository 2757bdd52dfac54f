//! Positions on alerts and the enrollment recording, with the real `inspectd`: a recorded run
//! (frames with a simulated odometer's chainage) replays with its positions and is recorded
//! again losslessly; a GNSS receiver on a pseudo-terminal puts its fixes on the alerts, marked
//! stale when it falls silent.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use serialport::SerialPort;

/// Runs the daemon on `config` until its finite source ends; its stdout lines as JSON.
fn run_to_end(config: &Path) -> (Vec<Value>, String) {
    let out = inspectd()
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (lines, log)
}

fn alerts(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|v| v["type"] == "alert").collect()
}

#[test]
fn a_recorded_run_replays_with_its_positions_and_every_alert_carries_its_chainage() {
    let dir = Scratch::new("position-replay");
    let bundle = bundle(&dir.0);
    // A drive past 4 frames, a simulated odometer giving 2.5 m per frame from 100 m.
    let frames = dir.path("drive");
    std::fs::create_dir_all(&frames).unwrap();
    let mut csv = String::from("file,frame,time,source,chainage_m,lat,lon,age_ms,stale\n");
    for i in 0..4u64 {
        let name = format!("f{i}.png");
        frame(
            &frames.join(&name),
            i + 1,
            &[patch(200 + 200 * i as u32, 300, 48)],
        );
        csv += &format!(
            "{name},{i},2026-12-04T10:00:0{i}.000Z,odometer,{:.3},,,0,false\n",
            100.0 + 2.5 * i as f64
        );
    }
    std::fs::write(frames.join("positions.csv"), csv).unwrap();
    let recorded = dir.path("recorded");
    let config = config(&dir.0, &bundle, &frames, "output = \"stdout\"");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!("[record]\ndir = \"{}\"\nevery = 2\n", recorded.display());
    std::fs::write(&config, text).unwrap();

    let (lines, log) = run_to_end(&config);
    let first = alerts(&lines);
    assert!(first.len() >= 4, "{log}");
    for a in &first {
        let frame = a["frame"].as_f64().unwrap();
        assert_eq!(a["pos"]["src"], "odometer", "{a}");
        assert_eq!(a["pos"]["chainage_m"], 100.0 + 2.5 * frame, "{a}");
        assert_eq!(a["pos"]["stale"], false);
    }
    assert!(log.contains("recorded 2 frames"), "{log}");

    // The recording: frames 0 and 2, pixel for pixel, with their chainage; it replays as the
    // drive did.
    for (saved, original) in [
        ("frame-00000000.png", "f0.png"),
        ("frame-00000001.png", "f2.png"),
    ] {
        let a = image::open(recorded.join(saved)).unwrap().into_rgb8();
        let b = image::open(frames.join(original)).unwrap().into_rgb8();
        assert!(a == b, "{saved} differs from {original}");
    }
    let config = common::config(&dir.0, &bundle, &recorded, "output = \"stdout\"");
    let (lines, log) = run_to_end(&config);
    let replayed = alerts(&lines);
    assert!(!replayed.is_empty(), "{log}");
    let chainage: BTreeMap<u64, f64> = replayed
        .iter()
        .map(|a| {
            (
                a["frame"].as_u64().unwrap(),
                a["pos"]["chainage_m"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        chainage.into_iter().collect::<Vec<_>>(),
        [(0, 100.0), (1, 105.0)]
    );
}

#[test]
fn gnss_fixes_over_a_serial_port_reach_the_alerts_and_go_stale_when_it_falls_silent() {
    let dir = Scratch::new("position-gnss");
    let bundle = bundle(&dir.0);
    let frames = dir.path("frames");
    std::fs::create_dir_all(&frames).unwrap();
    frame(&frames.join("f0.png"), 1, &[patch(300, 300, 48)]);
    frame(&frames.join("f1.png"), 2, &[patch(700, 200, 48)]);
    let (mut receiver, slave) = pty_pair();
    let link = dir.path("gnss");
    std::os::unix::fs::symlink(slave.name().unwrap(), &link).unwrap();
    let config = config(&dir.0, &bundle, &frames, "output = \"stdout\"");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace("path = ", "loop = true\nframe_interval_ms = 100\npath = ");
    text += &format!(
        "[position]\nsource = \"gnss\"\nport = \"{}\"\nmax_age_ms = 1000\n",
        link.display()
    );
    std::fs::write(&config, text).unwrap();
    let mut daemon = inspectd()
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = daemon.stdout.take().unwrap();
    let mut stderr = daemon.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["type"] == "alert" && tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    // The receiver talks for a while, in pieces as a UART delivers them, with noise between.
    let sentence = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n";
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut fresh = None;
    while fresh.is_none() {
        assert!(Instant::now() < deadline, "no alert with a fresh fix");
        for piece in sentence.chunks(13) {
            receiver.write_all(piece).unwrap();
        }
        receiver.write_all(b"$GPGGA,garbage*00\r\n").unwrap();
        while let Ok(a) = rx.recv_timeout(Duration::from_millis(100)) {
            if a["pos"]["src"] == "gnss" && a["pos"]["stale"] == false {
                fresh = Some(a);
            }
        }
    }
    let fresh = fresh.unwrap();
    let lat = fresh["pos"]["lat"].as_f64().unwrap();
    let lon = fresh["pos"]["lon"].as_f64().unwrap();
    assert!((lat - (48.0 + 7.038 / 60.0)).abs() < 1e-6, "{fresh}");
    assert!((lon - (11.0 + 31.0 / 60.0)).abs() < 1e-6, "{fresh}");
    assert!(fresh["pos"]["age_ms"].as_u64().unwrap() <= 1000);
    // Silence: the last fix stays on the alerts, older than the limit and marked stale.
    let mut stale = None;
    while stale.is_none() {
        assert!(Instant::now() < deadline, "the fix never went stale");
        if let Ok(a) = rx.recv_timeout(Duration::from_millis(200)) {
            if a["pos"]["stale"] == true {
                stale = Some(a);
            }
        }
    }
    let stale = stale.unwrap();
    assert_eq!(stale["pos"]["lat"], fresh["pos"]["lat"]);
    assert!(stale["pos"]["age_ms"].as_u64().unwrap() > 1000, "{stale}");
    signal(&daemon, libc::SIGTERM);
    let _ = daemon.wait();
    drop(receiver);
    // The crew sees what the receiver said: sentences read, noise refused, the fix's age.
    let log = log.join().unwrap();
    let said = log
        .lines()
        .find_map(|l| l.split("GNSS receiver: ").nth(1))
        .unwrap_or_else(|| panic!("no GNSS summary in the log:\n{log}"));
    let counts: Vec<u64> = said
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        counts.len() == 2 && counts[0] >= 1 && counts[1] >= 1,
        "{said}"
    );
    assert!(
        log.contains("GNSS: "),
        "the status line names the receiver:\n{log}"
    );
}
