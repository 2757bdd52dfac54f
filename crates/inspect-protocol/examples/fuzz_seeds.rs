//! Writes the seed corpora of the fuzz targets (`fuzz/seeds/<target>/`): one valid input per
//! message kind, so the fuzzers start from the real formats instead of from nothing.
//!
//!     cargo run -p inspect-protocol --features fixtures --example fuzz_seeds -- fuzz/seeds

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use inspect_protocol::cobs;
use inspect_protocol::command::{ErrorCode, EvidenceChunk, Part, Rejected};
use inspect_protocol::fixtures::{id, sample_alert};
use inspect_protocol::{Command, Reply, Status};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    let commands = [
        Command::Ack {
            seq: 41,
            boot: Some(7),
        },
        Command::GetStatus,
        Command::SetThreshold { value: 1.25 },
        Command::Pause,
        Command::Resume,
        Command::GetEvidence { seq: 41 },
    ];
    for c in &commands {
        let dir = root.join("command");
        write(&dir, &format!("{}.json", c.name()), c.to_json().as_bytes())?;
        write(&dir, &format!("{}.bin", c.name()), &c.to_binary())?;
        let frame = cobs::encode(&c.to_binary()).expect("a command fits a frame");
        write(
            &dir,
            &format!("{}.cobs", c.name()),
            &frame[..frame.len() - 1],
        )?;
    }

    // One stream of every message kind the device sends, COBS-framed.
    let status = Status {
        device: id("robot-7"),
        time: UNIX_EPOCH,
        frames: 150,
        tiles_per_s: 360.2,
        dropped_frames: 0,
        skipped_frames: 1,
        source_failures: 0,
        alerts: 3,
        dropped_alerts: 0,
        unacked: 1,
        paused: false,
        uptime_s: 10,
        model: id("0123456789ab"),
        boot: 0x5eed_0000_c0ff_ee01,
        threshold: 1.25,
        refused_commands: 0,
    };
    let refused = Rejected::new(
        "set_threshold",
        ErrorCode::OutOfRange,
        format_args!("threshold 9 outside 0.4 to 1.6; unchanged"),
    );
    let alert = sample_alert();
    let payloads = [
        alert.to_binary(),
        status.to_binary(),
        Reply {
            cmd: "set_threshold",
            outcome: Ok(1.6),
        }
        .to_binary(),
        Reply {
            cmd: "set_threshold",
            outcome: Err(refused),
        }
        .to_binary(),
        EvidenceChunk {
            seq: 41,
            part: Part::Tile,
            index: 0,
            count: 2,
            data: std::borrow::Cow::Borrowed(b"\xff\xd8\xff\xe0"),
        }
        .to_binary(),
    ];
    let mut stream = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let frame = cobs::encode(p).expect("a message fits a frame");
        write(
            &root.join("link_frame"),
            &format!("message-{i}.cobs"),
            &frame,
        )?;
        stream.extend_from_slice(&frame);
    }
    write(&root.join("link_frame"), "stream.cobs", &stream)?;
    Ok(())
}
