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
        key: None,
        link_id: 1,
        boot: BOOT,
    }
}

/// The boot id of the links under test.
const BOOT: u64 = 0xB007_0000_0000_0001;

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

impl Peer {
    /// Raw lines (without newlines) until `count` have come.
    fn raw_lines(&mut self, count: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        let mut chunk = [0u8; 512];
        while got.len() < count {
            assert!(
                Instant::now() < deadline,
                "timed out after {} lines",
                got.len()
            );
            if let Ok(n) = self.master.read(&mut chunk) {
                self.buf.extend_from_slice(&chunk[..n]);
            }
            while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if line.len() > 1 {
                    got.push(line[..line.len() - 1].to_vec());
                }
            }
        }
        got
    }
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn with_a_key_only_signed_fresh_commands_count_and_everything_sent_is_signed() {
    use inspect_protocol::signing::{Direction, LinkKey, Signer, Verifier};
    use inspect_protocol::wire::Unframed;
    use std::time::SystemTime;

    let key = LinkKey::from_bytes([9; 32]);
    let (mut peer, path, _slave) = pair();
    let mut s = settings(path, Framing::Json, true);
    s.key = Some(key.clone());
    s.link_id = 4;
    s.ack_timeout = Duration::from_secs(60);
    let link = AlertLink::start(s, Journal::in_memory(1 << 20)).unwrap();
    for f in 0..3 {
        link.send_alert(&mut alert(f));
    }
    // What the device sends verifies with the key, as the device's, on link 4.
    let mut from_device = Verifier::new(key.clone(), Direction::FromDevice, 0);
    for (i, line) in peer.raw_lines(3).iter().enumerate() {
        let plain = match from_device.verify(Unframed::Line(line)) {
            Ok(Unframed::Line(plain)) => plain.to_vec(),
            other => panic!("line {i}: {other:?}: {}", String::from_utf8_lossy(line)),
        };
        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(v["seq"], i as u64);
    }
    let counters = link.counters();
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    // A stranger's unsigned ACK, an ACK under another key, a good one, and its replay.
    peer.send(Command::Ack { seq: 0, boot: None });
    let now = SystemTime::now();
    let mut stranger = Signer::new(LinkKey::from_bytes([8; 32]), 4, Direction::ToDevice);
    let forged =
        Command::Ack { seq: 2, boot: None }.encode_signed(Framing::Json, &mut stranger, now);
    peer.master.write_all(&forged).unwrap();
    let mut ours = Signer::new(key.clone(), 4, Direction::ToDevice);
    let good = Command::Ack { seq: 1, boot: None }.encode_signed(Framing::Json, &mut ours, now);
    peer.master.write_all(&good).unwrap();
    peer.master.write_all(&good).unwrap();
    // A command signed before the daemon started (over a minute ago): stale.
    let old = now - Duration::from_secs(120);
    let mut past = Signer::new(key.clone(), 5, Direction::ToDevice);
    let replayed = Command::Ack { seq: 2, boot: None }.encode_signed(Framing::Json, &mut past, old);
    peer.master.write_all(&replayed).unwrap();
    wait_for("the refusals", || {
        count(&counters.refused_stale) == 2
            && count(&counters.refused_forged) == 1
            && count(&counters.refused_unsigned) == 1
    });
    assert_eq!(count(&counters.acked), 1, "only the good ACK counts");
    assert_eq!(link.unacked(), 2);
    // An unsigned pause is neither obeyed nor answered; a signed status request is.
    peer.send(Command::Pause);
    let status = Command::GetStatus.encode_signed(Framing::Json, &mut ours, SystemTime::now());
    peer.master.write_all(&status).unwrap();
    let reply = peer.raw_lines(1).remove(0);
    let plain = match from_device.verify(Unframed::Line(&reply)) {
        Ok(Unframed::Line(plain)) => plain.to_vec(),
        other => panic!("{other:?}"),
    };
    let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["cmd"].as_str()),
        (Some("reply"), Some("get_status"))
    );
    assert_eq!(link.next_control(), Some(Control::StatusNow));
    assert_eq!(
        link.next_control(),
        None,
        "the unsigned pause was not forwarded"
    );
    assert_eq!(count(&counters.refused_unsigned), 2);
    link.close(Duration::ZERO);
}

#[test]
fn acks_count_only_for_alerts_this_connection_carried() {
    let (mut peer, path, _slave) = pair();
    let mut s = settings(path, Framing::Json, true);
    s.ack_timeout = Duration::from_secs(60);
    let link = AlertLink::start(s, Journal::in_memory(1 << 20)).unwrap();
    for f in 0..4 {
        link.send_alert(&mut alert(f));
    }
    let lines = peer.lines_until(|l| seqs(l, "alert").len() >= 4);
    // Every alert names the start that raised it (the fixture's boot id 7).
    for line in lines.iter().filter(|l| l["type"] == "alert") {
        assert_eq!(line["boot"], "0000000000000007");
    }
    // An ACK naming another boot id is refused, the right one accepted.
    peer.send(Command::Ack {
        seq: 3,
        boot: Some(8),
    });
    peer.send(Command::Ack {
        seq: 3,
        boot: Some(7),
    });
    // A peer that ACKs everything it could guess, read or not (version 1: no boot id): 0-2
    // were carried, 3 is acknowledged already, 4-99 never existed.
    for seq in 0..100 {
        peer.send(Command::Ack { seq, boot: None });
    }
    let counters = link.counters();
    wait_for("the ACKs", || {
        counters.acks_refused.load(Ordering::Relaxed) == 1 + 1 + 96
    });
    assert_eq!(counters.acked.load(Ordering::Relaxed), 1 + 3);
    // Alerts raised after the guesses still wait for their own ACK.
    link.send_alert(&mut alert(4));
    link.send_alert(&mut alert(5));
    let later = peer.lines_until(|l| seqs(l, "alert").len() >= 2);
    assert_eq!(seqs(&later, "alert"), [4, 5]);
    assert_eq!(link.unacked(), 2);
    link.close(Duration::ZERO);
}

#[test]
fn a_garbage_flood_neither_holds_alerts_back_nor_earns_an_answer_each() {
    let (mut peer, path, _slave) = pair();
    let link = AlertLink::start(
        settings(path, Framing::Json, false),
        Journal::in_memory(1 << 20),
    )
    .unwrap();
    let start = Instant::now();
    let junk = b"garbage that is not a command\n".repeat(3000);
    peer.master.write_all(&junk).unwrap();
    for f in 0..50 {
        link.send_alert(&mut alert(f));
    }
    let got = peer.lines_until(|l| seqs(l, "alert").len() >= 50);
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(seqs(&got, "alert"), (0..50).collect::<Vec<_>>());
    let counters = link.counters();
    wait_for("every junk line", || {
        counters.rejected.load(Ordering::Relaxed) == 3000
    });
    let errors = got.iter().filter(|v| v["type"] == "reply").count() as f64;
    // At most the burst plus the rate over the time it took (and a turn's slack).
    assert!(
        errors <= 10.0 + 5.0 * (elapsed + 0.5),
        "{errors} error replies in {elapsed:.2} s"
    );
    assert!(counters.replies_suppressed.load(Ordering::Relaxed) >= 2900);
    link.close(Duration::ZERO);
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
        peer.send(Command::Ack { seq, boot: None });
    }
    // After the timeout only the unacknowledged come again.
    let again = peer.lines_until(|l| seqs(l, "alert").len() >= 2);
    assert_eq!(seqs(&again, "alert")[..2], [1, 3]);
    for seq in [1, 3] {
        peer.send(Command::Ack { seq, boot: None });
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
        let frame = cobs::encode(
            &Command::Ack {
                seq: a.seq,
                boot: None,
            }
            .to_binary(),
        )
        .unwrap();
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
