//! The field faults of the alert link, with the real `inspectd` on a real pseudo-terminal:
//! a cut cable, a peer that never reads, a power cut (SIGKILL) mid-stream, and the peer's
//! commands (threshold, pause, evidence).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use edge_inspector::alerts::Command;
use serde_json::Value;
use serialport::SerialPort;

/// Frames with planted defects (about 2 alerts per frame), played in a loop.
fn looping_frames(dir: &Path) -> PathBuf {
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    frame(
        &frames.join("f0.png"),
        1,
        &[patch(100, 100, 48), patch(560, 300, 48)],
    );
    frame(&frames.join("f1.png"), 2, &[patch(300, 500, 40)]);
    frame(&frames.join("f2.png"), 3, &[]);
    frames
}

/// A config whose link goes to `port`; `extra` is appended (more tables).
fn link_config(dir: &Path, port: &Path, interval_ms: u64, alerts: &str, extra: &str) -> PathBuf {
    let bundle = bundle(dir);
    let frames = looping_frames(dir);
    let text = format!(
        r#"device_id = "link-rig"
[model]
bundle = "{}"
[source]
kind = "folder"
path = "{}"
loop = true
frame_interval_ms = {interval_ms}
[tiling]
tile_size = 256
overlap = 32
[alerts]
output = "serial"
port = "{}"
status_interval_s = 1
{alerts}
{extra}
"#,
        bundle.display(),
        frames.display(),
        port.display()
    );
    let path = dir.join("inspectd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(config: &Path) -> Child {
    inspectd()
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stderr_of(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A pty whose slave is reachable through a symlink (as `/dev/serial/by-id/...` is), so a
/// "re-plugged" cable can come back as another pty under the same name.
struct Cable {
    master: serialport::TTYPort,
    _slave: serialport::TTYPort,
    buf: Vec<u8>,
}

impl Cable {
    fn plug(link: &Path) -> Cable {
        let (mut master, slave) = pty_pair();
        master.set_timeout(Duration::from_millis(100)).unwrap();
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(slave.name().unwrap(), link).unwrap();
        Cable {
            master,
            _slave: slave,
            buf: Vec::new(),
        }
    }

    /// Reads lines for up to `wait`, calling `on_line` for each JSON line.
    fn read_for(&mut self, wait: Duration, mut on_line: impl FnMut(&mut Self, Value) -> bool) {
        let deadline = Instant::now() + wait;
        let mut chunk = [0u8; 4096];
        while Instant::now() < deadline {
            match self.master.read(&mut chunk) {
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return, // the daemon side is closed
            }
            while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    if on_line(self, v) {
                        return;
                    }
                }
            }
        }
    }

    fn send(&mut self, c: Command) {
        let mut line = c.to_json().as_bytes().to_vec();
        line.push(b'\n');
        // The daemon may be gone already at the end of a test: ignore a write error then.
        let _ = self.master.write_all(&line);
    }
}

/// What a receiver saw: alerts by seq (deduplicated), how many copies, the last status.
#[derive(Default)]
struct Received {
    alerts: BTreeMap<u64, Value>,
    copies: u64,
    last_status: Option<Value>,
}

impl Received {
    /// Takes a line; ACKs alerts when `ack`.
    fn take(&mut self, cable: &mut Cable, v: Value, ack: bool) {
        match v["type"].as_str() {
            Some("alert") => {
                let seq = v["seq"].as_u64().unwrap();
                self.copies += 1;
                if let Some(earlier) = self.alerts.get(&seq) {
                    // A re-send is the same alert, never another one under the same number.
                    assert_eq!(earlier["frame"], v["frame"], "seq {seq} reused");
                    assert_eq!(earlier["tile"], v["tile"], "seq {seq} reused");
                }
                // A version 2 peer: the ACK names the start that raised the alert.
                let boot = v["boot"]
                    .as_str()
                    .map(|b| u64::from_str_radix(b, 16).unwrap());
                self.alerts.insert(seq, v);
                if ack {
                    cable.send(Command::Ack { seq, boot });
                }
            }
            Some("status") => self.last_status = Some(v),
            _ => {}
        }
    }

    /// Every number from the first to the last came (without a journal file the daemon numbers
    /// from the clock, so the first is not 0).
    fn assert_complete(&self) {
        let min = *self.alerts.keys().next().expect("some alerts");
        let max = *self.alerts.keys().last().expect("some alerts");
        let missing: Vec<u64> = (min..=max)
            .filter(|s| !self.alerts.contains_key(s))
            .collect();
        assert!(
            missing.is_empty(),
            "missing seqs {missing:?} of {min}..={max}"
        );
    }
}

#[test]
fn a_cut_cable_loses_no_alert() {
    let dir = Scratch::new("link-cut");
    let tty = dir.path("tty");
    let mut cable = Cable::plug(&tty);
    let config = link_config(
        &dir.0,
        &tty,
        50,
        "require_ack = true\nack_timeout_ms = 500",
        "",
    );
    let daemon = spawn(&config);
    let mut got = Received::default();
    cable.read_for(Duration::from_secs(120), |c, v| {
        got.take(c, v, true);
        got.alerts.len() >= 8
    });
    assert!(got.alerts.len() >= 8, "alerts before the cut");
    // Cut: the pty disappears; the daemon goes on inspecting and journalling.
    drop(cable);
    std::thread::sleep(Duration::from_millis(1500));
    let before_cut = got.alerts.len();
    let mut cable = Cable::plug(&tty);
    cable.read_for(Duration::from_secs(20), |c, v| {
        got.take(c, v, true);
        got.alerts.len() >= before_cut + 12
    });
    signal(&daemon, libc::SIGTERM);
    // Keep reading and ACKing while it drains.
    cable.read_for(Duration::from_secs(10), |c, v| {
        got.take(c, v, true);
        false
    });
    let log = stderr_of(daemon);
    eprintln!(
        "cut cable: {} alerts, {} copies on the wire",
        got.alerts.len(),
        got.copies
    );
    got.assert_complete();
    let status = got
        .last_status
        .as_ref()
        .unwrap_or_else(|| panic!("no final status; {} alerts\n{log}", got.alerts.len()));
    assert_eq!(
        status["alerts"].as_u64().unwrap(),
        got.alerts.len() as u64,
        "every alert raised reached the peer\n{log}"
    );
    assert!(
        log.contains("alert link lost") || log.contains("retrying"),
        "{log}"
    );
    assert!(log.contains("0 undelivered"), "{log}");
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The daemon's periodic log line as numbers: `frames 16 alerts 22 ... lost alerts 0`.
fn status_numbers(line: &str) -> Option<BTreeMap<String, f64>> {
    let tail = line.split("edge_inspector::daemon] ").nth(1)?;
    if !tail.starts_with("frames ") {
        return None;
    }
    let words: Vec<&str> = tail.split_whitespace().collect();
    let mut out = BTreeMap::new();
    let mut name = Vec::new();
    for w in words {
        match w.parse::<f64>() {
            Ok(v) => {
                out.insert(name.join(" "), v);
                name.clear();
            }
            Err(_) => name.push(w),
        }
    }
    Some(out)
}

/// Runs the daemon on the looping frames with a peer that reads (`read`) or never does, for
/// `secs` status lines and until `done` holds for the last one; returns its status lines
/// (parsed) and RSS samples.
fn run_for(
    name: &str,
    read: bool,
    secs: u64,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> (Vec<BTreeMap<String, f64>>, Vec<u64>) {
    let dir = Scratch::new(name);
    let tty = dir.path("tty");
    let mut cable = Cable::plug(&tty);
    let config = link_config(
        &dir.0,
        &tty,
        0,
        "drain_timeout_ms = 200",
        "[journal]\nmax_bytes = 4096",
    );
    let mut daemon = spawn(&config);
    let stderr = daemon.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(n) = status_numbers(&line) {
                let _ = tx.send(n);
            }
        }
    });
    let mut statuses = Vec::new();
    let mut rss = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if read {
            // A peer that keeps up: read whatever is there.
            cable.read_for(Duration::from_millis(50), |_, _| false);
        }
        if let Ok(n) = rx.recv_timeout(Duration::from_millis(50)) {
            let finished = statuses.len() as u64 >= secs && done(&n);
            statuses.push(n);
            rss.push(rss_kb(daemon.id()));
            if finished {
                break;
            }
        }
    }
    signal(&daemon, libc::SIGTERM);
    let _ = daemon.wait();
    reader.join().unwrap();
    drop(cable);
    (statuses, rss)
}

#[test]
fn a_peer_that_never_reads_costs_alerts_not_inspection() {
    // The same run with a peer that reads, for the rate inference reaches (host only: under
    // qemu timings mean nothing).
    let on_host = std::env::var_os("EDGE_INSPECTOR_RUNNER").is_none();
    let (reading, _) = if on_host {
        run_for("link-reading", true, 6, |_| true)
    } else {
        (Vec::new(), Vec::new())
    };
    // Deaf: at least 6 status lines, and on until the journal has had to evict.
    let (deaf, rss) = run_for("link-deaf", false, 6, |n| n["lost alerts"] > 0.0);
    let rate = |s: &[BTreeMap<String, f64>]| {
        s[1..].iter().map(|n| n["tiles/s"]).sum::<f64>() / (s.len() - 1) as f64
    };
    let last = deaf.last().unwrap();
    eprintln!("deaf peer: {last:?}; RSS kB {rss:?}");
    // Alerts pile up: the oldest are evicted from the bounded journal and reported.
    assert!(last["lost alerts"] > 0.0, "{last:?}");
    assert!(last["alerts"] > last["unacked"] + last["lost alerts"] - 1.0);
    // What waits is bounded by the 4 KiB journal, not by how many alerts there were.
    let most_waiting = deaf.iter().map(|n| n["unacked"]).fold(0.0, f64::max);
    assert!(most_waiting <= 40.0, "{most_waiting} alerts waiting");
    if on_host {
        // Timings and RSS are meaningful on the host only (qemu's code cache grows).
        eprintln!(
            "tiles/s with a reading peer {:.1}, with a deaf one {:.1}",
            rate(&reading),
            rate(&deaf)
        );
        assert!(
            rate(&deaf) >= 0.5 * rate(&reading),
            "inference slowed down by the deaf peer: {:.1} vs {:.1} tiles/s",
            rate(&deaf),
            rate(&reading)
        );
        let (first, late) = (rss[1], *rss.last().unwrap());
        assert!(
            late <= first + 4096,
            "RSS grew from {first} kB to {late} kB"
        );
    }
}

#[test]
fn sigkill_mid_stream_then_restart_resends_what_was_not_acked() {
    let dir = Scratch::new("link-kill");
    let tty = dir.path("tty");
    let journal = dir.path("state/alerts.journal");
    let mut cable = Cable::plug(&tty);
    let config = link_config(
        &dir.0,
        &tty,
        50,
        "require_ack = true\nack_timeout_ms = 60000",
        &format!(
            "[journal]\npath = \"{}\"\nfsync = \"never\"",
            journal.display()
        ),
    );
    // First life: the peer reads, ACKs only the even alerts, moves the threshold, and the
    // power goes.
    let daemon = spawn(&config);
    let mut first = Received::default();
    let mut set_to = None;
    cable.read_for(Duration::from_secs(120), |c, v| {
        let even = v["seq"].as_u64().is_some_and(|s| s % 2 == 0);
        if set_to.is_none() && v["type"] == "alert" {
            let lowered = (v["threshold"].as_f64().unwrap() * 0.9) as f32;
            c.send(Command::SetThreshold { value: lowered });
            set_to = Some(lowered);
        }
        first.take(c, v, even);
        first.alerts.len() >= 10
    });
    let set_to = f64::from(set_to.unwrap());
    std::thread::sleep(Duration::from_millis(300)); // let the ACKs land
    let mut daemon = daemon;
    daemon.kill().unwrap(); // SIGKILL
    let _ = daemon.wait();
    // The power cut tore the record being written.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap();
    f.write_all(&[0x40, 0, 0, 0, 0xde, 0xad]).unwrap();
    drop(f);

    // Second life: everything unacknowledged comes again, with its own seq, before new alerts.
    let daemon = spawn(&config);
    let mut second = Received::default();
    let odd: Vec<u64> = first
        .alerts
        .keys()
        .copied()
        .filter(|s| s % 2 == 1)
        .collect();
    cable.read_for(Duration::from_secs(120), |c, v| {
        second.take(c, v, true);
        odd.iter().all(|s| second.alerts.contains_key(s))
            && second.alerts.len() > odd.len() + 3
            && second.last_status.is_some()
    });
    signal(&daemon, libc::SIGTERM);
    cable.read_for(Duration::from_secs(10), |c, v| {
        second.take(c, v, true);
        false
    });
    let log = stderr_of(daemon);
    assert!(log.contains("torn tail"), "{log}");
    for s in &odd {
        let (a, b) = (&first.alerts[s], &second.alerts[s]);
        assert_eq!(
            (&a["frame"], &a["tile"]),
            (&b["frame"], &b["tile"]),
            "seq {s}"
        );
    }
    // No even (acknowledged) alert of the first life is sent again.
    let first_max = *first.alerts.keys().last().unwrap();
    for (s, _) in second.alerts.range(..=first_max) {
        assert!(
            s % 2 == 1 || !first.alerts.contains_key(s),
            "acked {s} re-sent"
        );
    }
    // New alerts continue the numbering.
    assert!(*second.alerts.keys().last().unwrap() > first_max);
    assert!(log.contains("0 undelivered"), "{log}");
    // Re-sent alerts name the start that raised them; the second start has its own boot id,
    // which its status and its new alerts carry.
    let boot = |v: &Value| v["boot"].as_str().unwrap().to_string();
    let first_boot = boot(&first.alerts[&odd[0]]);
    for s in &odd {
        assert_eq!(boot(&second.alerts[s]), first_boot, "seq {s}");
    }
    let status = second.last_status.as_ref().unwrap();
    let second_boot = boot(status);
    assert_ne!(second_boot, first_boot);
    let newest = second.alerts.values().last().unwrap();
    assert_eq!(boot(newest), second_boot);
    // The threshold the peer set in the first life is in force in the second (journalled),
    // and the status reports it.
    assert!(log.contains("set by the peer before the restart"), "{log}");
    let reported = status["threshold"].as_f64().unwrap();
    assert!((reported - set_to).abs() < 1e-6, "{reported} vs {set_to}");
    assert!((newest["threshold"].as_f64().unwrap() - set_to).abs() < 1e-6);
}

#[test]
fn the_peer_sets_the_threshold_pauses_and_fetches_evidence() {
    let dir = Scratch::new("link-commands");
    let tty = dir.path("tty");
    let evidence = dir.path("evidence");
    let mut cable = Cable::plug(&tty);
    let config = link_config(
        &dir.0,
        &tty,
        100,
        "pause_max_s = 10",
        &format!("[evidence]\ndir = \"{}\"", evidence.display()),
    );
    let daemon = spawn(&config);
    let mut first: Option<Value> = None;
    cable.read_for(Duration::from_secs(120), |_, v| {
        if v["type"] == "alert" {
            first = Some(v);
            return true;
        }
        false
    });
    let alert = first.expect("an alert");
    let threshold = alert["threshold"].as_f64().unwrap();
    let seq = alert["seq"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(500)); // evidence is written by its own thread

    cable.send(Command::SetThreshold {
        value: (threshold * 100.0) as f32,
    });
    let lowered = (threshold * 0.75) as f32;
    cable.send(Command::SetThreshold { value: lowered });
    cable.send(Command::GetEvidence { seq });
    cable.send(Command::GetEvidence { seq: 999_999 });
    let mut replies = Vec::new();
    let mut parts: BTreeMap<String, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    let mut later_thresholds = Vec::new();
    let done = |parts: &BTreeMap<String, Vec<(u64, Vec<u8>)>>, n: usize| {
        n >= 4
            && ["tile", "heatmap"].iter().all(|p| {
                parts
                    .get(*p)
                    .is_some_and(|c| c.len() as u64 == c[0].0 >> 16)
            })
    };
    cable.read_for(Duration::from_secs(120), |_, v| {
        match v["type"].as_str() {
            Some("reply") => replies.push(v),
            Some("evidence") if v["seq"] == seq => {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(v["data"].as_str().unwrap())
                    .unwrap();
                let (index, count) = (v["index"].as_u64().unwrap(), v["count"].as_u64().unwrap());
                parts
                    .entry(v["part"].as_str().unwrap().to_string())
                    .or_default()
                    .push(((count << 16) | index, data));
            }
            Some("alert") if replies.len() >= 2 => {
                later_thresholds.push(v["threshold"].as_f64().unwrap())
            }
            _ => {}
        }
        done(&parts, replies.len())
            && later_thresholds
                .iter()
                .any(|t| (t - lowered as f64).abs() < 1e-6)
    });
    let outcome: Vec<(bool, &str)> = replies
        .iter()
        .map(|r| {
            (
                r["ok"].as_bool().unwrap(),
                r["error"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        [
            (false, "out_of_range"),
            (true, ""),
            (true, ""),
            (false, "not_found")
        ]
    );
    // Alerts raised after the change carry the new threshold.
    assert!(
        later_thresholds
            .iter()
            .any(|t| (t - lowered as f64).abs() < 1e-6),
        "{later_thresholds:?}"
    );
    // The chunks reassemble into a JPEG of the tile and a PNG of its heatmap.
    let file = |p: &str| -> Vec<u8> {
        let mut chunks = parts[p].clone();
        chunks.sort_by_key(|(k, _)| k & 0xffff);
        chunks.into_iter().flat_map(|(_, d)| d).collect()
    };
    let tile = image::load_from_memory(&file("tile")).unwrap();
    assert_eq!(
        (tile.width() as u64, tile.height() as u64),
        (
            alert["tile"]["w"].as_u64().unwrap(),
            alert["tile"]["h"].as_u64().unwrap()
        )
    );
    let heat = image::load_from_memory(&file("heatmap")).unwrap();
    assert!(heat.width() > 0);
    assert_eq!(
        std::fs::read(evidence.join(format!("{seq:012}-tile.jpg"))).unwrap(),
        file("tile")
    );

    // Pause: the status says so and no alert follows.
    cable.send(Command::Pause);
    let mut paused_status = None;
    cable.read_for(Duration::from_secs(30), |_, v| {
        if v["type"] == "status" && v["paused"] == true {
            paused_status = Some(v);
            return true;
        }
        false
    });
    let status = paused_status.expect("a status showing the pause");
    let alerts_then = status["alerts"].as_u64().unwrap();
    let mut alerts_while_paused = 0;
    cable.read_for(Duration::from_secs(2), |_, v| {
        if v["type"] == "alert" && v["seq"].as_u64().unwrap() >= alerts_then {
            alerts_while_paused += 1;
        }
        false
    });
    assert_eq!(alerts_while_paused, 0);
    // No resume comes: the pause ends by itself after pause_max_s (10 s).
    let mut resumed = false;
    cable.read_for(Duration::from_secs(30), |_, v| {
        resumed = v["type"] == "status" && v["paused"] == false;
        resumed
    });
    assert!(resumed, "the pause outlived pause_max_s");
    signal(&daemon, libc::SIGTERM);
    let log = stderr_of(daemon);
    assert!(
        log.contains("paused by the peer (for at most 10 s)"),
        "{log}"
    );
    assert!(log.contains("pause expired after 10 s"), "{log}");
}
