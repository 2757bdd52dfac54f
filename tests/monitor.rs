//! The real `inspectd` and the real `inspect-monitor` on the two ends of a serial cable: two
//! pseudo-terminals joined by the test as a null-modem. The monitor logs every alert the daemon
//! sent, in order, without gaps, and the daemon saw its ACKs (it requires them, and exits with
//! nothing undelivered). `inspect-monitor` is another package of the workspace: build it first
//! (`cargo build -p inspect-monitor`; tests/run.sh does).

mod common;

use std::io::Read;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use serialport::SerialPort;

#[test]
fn every_alert_reaches_the_monitor_log_in_order_and_is_acked() {
    over_the_cable(false);
}

#[test]
fn with_a_link_key_every_message_is_signed_and_every_alert_still_arrives() {
    over_the_cable(true);
}

/// The daemon and the monitor on a null-modem cable; with `signed`, both hold the same link key
/// (a file of mode 0600), so every alert and every ACK must pass signature checks.
fn over_the_cable(signed: bool) {
    if std::env::var_os("EDGE_INSPECTOR_RUNNER").is_some() {
        // Under qemu-user (cross/test.sh) the monitor cannot open a serial port: serialport's
        // termios2 ioctls are not emulated ("Function not implemented"). The monitor runs on the
        // technician's laptop, not on the board; the daemon's own serial tests do run there.
        eprintln!("skipped under an emulator: qemu-user cannot open a serial port for the monitor");
        return;
    }
    let dir = Scratch::new(if signed { "monitor-signed" } else { "monitor" });
    let bundle = bundle(&dir.0);
    let frames = dir.path("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..6u64 {
        let defects = [
            patch(100 + 150 * i as u32, 100, 48),
            patch(600, 300 + 40 * i as u32, 40),
        ];
        frame(
            &frames.join(format!("f{i}.png")),
            i,
            &defects[..(i % 2 + 1) as usize],
        );
    }
    let (master_a, slave_a) = pty();
    let (master_b, slave_b) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    let cable = null_modem(master_a, master_b, stop.clone());

    let logs = dir.path("logs");
    let key = dir.path("link.key");
    std::fs::write(
        &key,
        "3f1c9a7e5b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut args = vec![
        "--port".to_string(),
        slave_b.name().unwrap(),
        "--log-dir".to_string(),
        logs.to_str().unwrap().to_string(),
    ];
    if signed {
        args.extend(["--key-file".to_string(), key.to_str().unwrap().to_string()]);
    }
    let mut mon = binary(&workspace_binary("inspect-monitor"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let config = config(
        &dir.0,
        &bundle,
        &frames,
        &format!(
            "output = \"serial\"\nport = \"{}\"\nrequire_ack = true\nack_timeout_ms = 1000\ndrain_timeout_ms = 20000{}",
            slave_a.name().unwrap(),
            if signed {
                format!("\nkey_file = \"{}\"", key.display())
            } else {
                String::new()
            }
        ),
    );
    let daemon = run_inspectd(&["--config", config.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&daemon.stderr).into_owned();
    assert!(daemon.status.success(), "{log}");
    let stopped = log
        .lines()
        .find(|l| l.contains("stopped:"))
        .unwrap_or_else(|| panic!("{log}"));
    // The daemon waited for every ACK before it exited.
    assert!(stopped.contains(" 0 undelivered"), "{stopped}");
    let alerts: u64 = stopped
        .split(',')
        .find_map(|p| p.trim().strip_suffix(" alerts")?.parse().ok())
        .unwrap();
    assert!(alerts >= 6, "{stopped}");

    std::thread::sleep(Duration::from_millis(500));
    signal(&mon, libc::SIGTERM);
    let status = mon.wait().unwrap();
    let mut out = String::new();
    mon.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    stop.store(true, Ordering::Relaxed);
    cable.join().unwrap();
    drop((slave_a, slave_b));
    assert!(status.success(), "{out}");

    let jsonl = std::fs::read_to_string(logs.join("alerts.jsonl")).unwrap();
    let seqs: Vec<u64> = jsonl
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    // Without a journal file the numbering starts from the clock: consecutive from the first.
    let first = seqs.first().copied().unwrap_or_default();
    assert_eq!(
        seqs,
        (first..first + alerts).collect::<Vec<_>>(),
        "every alert, in order, once"
    );
    let csv = std::fs::read_to_string(logs.join("alerts.csv")).unwrap();
    assert_eq!(csv.lines().count() as u64, alerts + 1, "{csv}");
    assert!(csv.starts_with("received,seq,"));
    // The plain output (not a terminal) has a line per alert and the session summary.
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ALERT ")).count() as u64,
        alerts
    );
    let summary = out.lines().find(|l| l.starts_with("SUMMARY")).unwrap();
    assert!(
        summary.contains(&format!("alerts={alerts}"))
            && summary.contains("gaps=0")
            && summary.contains("refused=0"),
        "{summary}"
    );
    if !signed {
        assert!(
            log.contains("commands are not authenticated"),
            "the daemon warns when the link has no key: {log}"
        );
    }
}
