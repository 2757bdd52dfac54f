//! The link against a real pseudo-terminal: the peer's end reads what the thread writes and
//! sends commands back.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use inspect_protocol::fixtures::id;
use serialport::SerialPort;

use super::super::cobs;
use super::super::command::Command;
use super::super::journal::Journal;
use super::super::message::Alert;
use super::super::Framing;
use super::{AlertLink, Control, LinkSettings, LinkTarget};

fn alert(frame: u64) -> Alert {
    inspect_protocol::fixtures::alert(0, frame)
}

fn settings(port: PathBuf, framing: Framing, require_ack: bool) -> LinkSettings {
    LinkSettings {
        target: LinkTarget::Serial { port, baud: 115200 },
        framing,
        require_ack,
        ack_timeout: Duration::from_millis(300),
        threshold: 1.0,
        threshold_range: (0.5, 2.0),
        device: id("bench"),
        evidence_dir: None,
    }
}

/// The peer's end of a pty: reads JSON lines, sends commands.
struct Peer {
    master: serialport::TTYPort,
    buf: Vec<u8>,
}

impl Peer {
    fn lines_until(
        &mut self,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        let mut chunk = [0u8; 512];
        while !done(&got) {
            assert!(Instant::now() < deadline, "timed out; got {got:?}");
            if let Ok(n) = self.master.read(&mut chunk) {
                self.buf.extend_from_slice(&chunk[..n]);
            }
            while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if let Ok(v) = serde_json::from_slice(&line) {
                    got.push(v);
                }
            }
        }
        got
    }

    fn send(&mut self, c: Command) {
        self.master.write_all(c.to_json().as_bytes()).unwrap();
        self.master.write_all(b"\n").unwrap();
    }
}

fn pair() -> (Peer, PathBuf, serialport::TTYPort) {
    let (mut master, slave) = serialport::TTYPort::pair().unwrap();
    master.set_timeout(Duration::from_millis(50)).unwrap();
    let path = PathBuf::from(slave.name().unwrap());
    (
        Peer {
            master,
            buf: Vec::new(),
        },
        path,
        slave,
    )
}

fn seqs(lines: &[serde_json::Value], kind: &str) -> Vec<u64> {
    lines
        .iter()
        .filter(|v| v["type"] == kind)
        .filter_map(|v| v["seq"].as_u64())
        .collect()
}

#[test]
fn unacked_alerts_are_sent_again_until_acked() {
    let (mut peer, path, _slave) = pair();
    let link = AlertLink::start(
        settings(path, Framing::Json, true),
        Journal::in_memory(1 << 20),
    )
    .unwrap();
    for f in 0..5 {
        link.send_alert(&mut alert(f));
    }
    let first = peer.lines_until(|l| seqs(l, "alert").len() >= 5);
    assert_eq!(seqs(&first, "alert"), [0, 1, 2, 3, 4]);
    for seq in [0, 2, 4] {
        peer.send(Command::Ack { seq });
    }
    // After the timeout only the unacknowledged come again.
    let again = peer.lines_until(|l| seqs(l, "alert").len() >= 2);
    assert_eq!(seqs(&again, "alert")[..2], [1, 3]);
    for seq in [1, 3] {
        peer.send(Command::Ack { seq });
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while link.unacked() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(link.unacked(), 0);
    assert_eq!(link.counters().acked.load(Ordering::Relaxed), 5);
    assert_eq!(link.close(Duration::ZERO), 0);
}

#[test]
fn commands_are_validated_answered_and_forwarded() {
    let (mut peer, path, _slave) = pair();
    let link = AlertLink::start(
        settings(path, Framing::Json, false),
        Journal::in_memory(1 << 20),
    )
    .unwrap();
    peer.send(Command::SetThreshold { value: 9.0 });
    peer.master
        .write_all(b"{\"type\":\"reboot\"}\nnot json\n\n")
        .unwrap();
    peer.send(Command::SetThreshold { value: 1.5 });
    peer.send(Command::Pause);
    peer.send(Command::GetEvidence { seq: 3 });
    let replies = peer.lines_until(|l| l.iter().filter(|v| v["type"] == "reply").count() >= 6);
    let r: Vec<(&str, bool, &str)> = replies
        .iter()
        .map(|v| {
            (
                v["cmd"].as_str().unwrap(),
                v["ok"].as_bool().unwrap(),
                v["error"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        r,
        [
            ("set_threshold", false, "out_of_range"),
            ("?", false, "unknown_command"),
            ("?", false, "malformed"),
            ("set_threshold", true, ""),
            ("pause", true, ""),
            // No evidence store: a clear refusal.
            ("get_evidence", false, "not_found"),
        ]
    );
    assert_eq!(replies[3]["threshold"], 1.5);
    assert!(replies[0]["message"].as_str().unwrap().contains("0.5 to 2"));
    // Only the accepted commands reach the daemon, in order.
    let got: Vec<Control> = std::iter::from_fn(|| link.next_control()).collect();
    assert_eq!(got, [Control::SetThreshold(1.5), Control::Pause]);
    link.close(Duration::ZERO);
}

#[test]
fn cobs_framing_carries_alerts_and_binary_acks() {
    let (mut peer, path, _slave) = pair();
    let link = AlertLink::start(
        settings(path, Framing::Cobs, true),
        Journal::in_memory(1 << 20),
    )
    .unwrap();
    for f in 0..3 {
        link.send_alert(&mut alert(10 + f));
    }
    let mut splitter = cobs::Splitter::new();
    let mut alerts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 256];
    while alerts.len() < 3 {
        assert!(Instant::now() < deadline);
        let Ok(n) = peer.master.read(&mut chunk) else {
            continue;
        };
        for &b in &chunk[..n] {
            if let Some(Ok(payload)) = splitter.push(b) {
                alerts.push(Alert::from_binary(&payload).unwrap());
            }
        }
    }
    assert_eq!(
        alerts.iter().map(|a| (a.seq, a.frame)).collect::<Vec<_>>(),
        [(0, 10), (1, 11), (2, 12)]
    );
    for a in &alerts {
        let frame = cobs::encode(&Command::Ack { seq: a.seq }.to_binary()).unwrap();
        peer.master.write_all(&frame).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while link.unacked() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(link.unacked(), 0);
    link.close(Duration::ZERO);
}

#[test]
fn an_absent_port_costs_no_time_and_alerts_wait_bounded() {
    let link = AlertLink::start(
        settings(PathBuf::from("/nonexistent/tty"), Framing::Json, false),
        Journal::in_memory(8192),
    )
    .unwrap();
    let started = Instant::now();
    for f in 0..1000 {
        link.send_alert(&mut alert(f));
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(link.next_seq(), 1000);
    assert!(link.dropped() > 0, "a bounded journal must evict");
    assert_eq!(link.dropped() + link.unacked(), 1000);
    let undelivered = link.close(Duration::from_millis(50));
    assert!(undelivered > 0);
}
