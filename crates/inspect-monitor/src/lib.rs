//! The receiving side of the alert link, as `inspect-monitor` runs it on a technician's laptop:
//! decode what the daemon sends (JSON Lines or COBS frames), keep the session's picture (alerts
//! deduplicated by `seq`, gaps, the device's last status, replies), reassemble evidence, and log
//! every new alert to JSONL and CSV. No terminal code here: the binary draws this state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use serde_json::Value;

use inspect_protocol::binary::kind;
use inspect_protocol::cobs;
use inspect_protocol::command::{EvidenceChunk, Part, Reply};
pub use inspect_protocol::Framing;
use inspect_protocol::{Alert, Command, Status};

/// Alerts kept for the view (the logs keep them all).
pub const VIEW_ALERTS: usize = 500;

/// Splits received bytes into messages, as JSON values whatever the framing.
#[derive(Debug)]
pub struct Decoder {
    framing: Framing,
    line: Vec<u8>,
    frames: cobs::Splitter,
    /// Messages that did not decode (torn lines, corrupted frames).
    pub garbled: u64,
}

fn parse_line(line: &str) -> Option<Value> {
    serde_json::from_str(line).ok()
}

/// A binary payload as the JSON value the line protocol would carry.
fn binary_to_json(payload: &[u8]) -> Option<Value> {
    let time = SystemTime::now();
    let line = match *payload.first()? {
        kind::ALERT => Alert::from_binary(payload).ok()?.to_line().ok()?,
        kind::STATUS => Status::from_binary(payload).ok()?.to_line().ok()?,
        kind::REPLY => Reply::from_binary(payload).ok()?.to_line("", time).ok()?,
        kind::EVIDENCE => EvidenceChunk::from_binary(payload)
            .ok()?
            .to_line("", time)
            .ok()?,
        _ => return None,
    };
    parse_line(&line)
}

impl Decoder {
    /// A decoder for `framing`.
    pub fn new(framing: Framing) -> Decoder {
        Decoder {
            framing,
            line: Vec::new(),
            frames: cobs::Splitter::new(),
            garbled: 0,
        }
    }

    /// Feeds received bytes; returns the messages they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Value> {
        let mut out = Vec::new();
        for &b in bytes {
            let message = match self.framing {
                Framing::Json if b == b'\n' => {
                    let text = String::from_utf8_lossy(&self.line).into_owned();
                    self.line.clear();
                    if text.trim().is_empty() {
                        continue;
                    }
                    Some(parse_line(&text))
                }
                Framing::Json => {
                    // A line longer than the protocol allows is noise: drop it.
                    if self.line.len() < 4096 {
                        self.line.push(b);
                    }
                    None
                }
                Framing::Cobs => self
                    .frames
                    .push(b)
                    .map(|frame| frame.ok().and_then(|p| binary_to_json(&p))),
            };
            match message {
                Some(Some(v)) => out.push(v),
                Some(None) => self.garbled += 1,
                None => {}
            }
        }
        out
    }
}

/// A command encoded for the link.
pub fn encode_command(command: Command, framing: Framing) -> Vec<u8> {
    match framing {
        Framing::Json => {
            let mut v = command.to_json().as_bytes().to_vec();
            v.push(b'\n');
            v
        }
        // Commands are a few bytes: encoding cannot fail.
        Framing::Cobs => cobs::encode(&command.to_binary())
            .map(|f| f.to_vec())
            .unwrap_or_default(),
    }
}

/// One alert as the view lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRow {
    /// Sequence number.
    pub seq: u64,
    /// Capture time as sent (RFC 3339).
    pub time: String,
    /// Frame number.
    pub frame: u64,
    /// Tile index.
    pub tile: u64,
    /// Anomaly score.
    pub score: f64,
    /// Threshold it passed.
    pub threshold: f64,
    /// Region `x, y, w, h` in frame pixels.
    pub region: [u64; 4],
    /// Fraction of the tile above the threshold.
    pub area: f64,
}

impl AlertRow {
    fn from_json(v: &Value) -> Option<AlertRow> {
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        Some(AlertRow {
            seq: v["seq"].as_u64()?,
            time: v["time"].as_str().unwrap_or("").to_string(),
            frame: n(&v["frame"]),
            tile: n(&v["tile"]["index"]),
            score: v["score"].as_f64().unwrap_or(f64::NAN),
            threshold: v["threshold"].as_f64().unwrap_or(f64::NAN),
            region: [
                n(&v["region"]["x"]),
                n(&v["region"]["y"]),
                n(&v["region"]["w"]),
                n(&v["region"]["h"]),
            ],
            area: v["region"]["area"].as_f64().unwrap_or(f64::NAN),
        })
    }
}

/// What a received message meant, for the caller to act on (ACK, print, save).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new alert (first copy of its `seq`).
    Alert(AlertRow),
    /// A re-sent alert already received (ACK it again, log nothing).
    Duplicate(u64),
    /// A status report.
    Status,
    /// The answer to a command, as text for a person.
    Reply(String),
    /// An evidence file is complete.
    Evidence {
        /// Alert it documents.
        seq: u64,
        /// `tile` or `heatmap`.
        part: String,
        /// The file's bytes.
        bytes: Vec<u8>,
    },
}

/// The receiver's picture of the session.
#[derive(Debug, Default)]
pub struct Session {
    /// Device id from the last message.
    pub device: String,
    /// Model id from the last alert or status.
    pub model: String,
    /// Recent alerts, newest last (at most [`VIEW_ALERTS`]).
    pub alerts: VecDeque<AlertRow>,
    /// Distinct alerts received.
    pub received: u64,
    /// Copies of alerts already received (re-sends after a cut or a lost ACK).
    pub duplicates: u64,
    /// The device's last status report.
    pub status: Option<Value>,
    /// Frames per second between the last two status reports.
    pub frames_per_s: Option<f64>,
    /// Recent replies and notices, newest last.
    pub notices: VecDeque<String>,
    seen: BTreeSet<u64>,
    evidence: BTreeMap<(u64, String), BTreeMap<u64, Vec<u8>>>,
}

impl Session {
    /// Sequence numbers missing between the first and the last alert received.
    pub fn gaps(&self) -> u64 {
        match (self.seen.first(), self.seen.last()) {
            (Some(&lo), Some(&hi)) => hi - lo + 1 - self.seen.len() as u64,
            _ => 0,
        }
    }

    /// The threshold in force, as the last reply or alert reported it.
    pub fn threshold(&self) -> Option<f64> {
        self.alerts.back().map(|a| a.threshold)
    }

    fn notice(&mut self, text: String) {
        self.notices.push_back(text);
        while self.notices.len() > 20 {
            self.notices.pop_front();
        }
    }

    /// Takes one message.
    pub fn on_message(&mut self, v: &Value) -> Option<Event> {
        if let Some(d) = v["device"].as_str().filter(|d| !d.is_empty()) {
            self.device = d.to_string();
        }
        if let Some(m) = v["model"].as_str() {
            self.model = m.to_string();
        }
        match v["type"].as_str()? {
            "alert" => {
                let row = AlertRow::from_json(v)?;
                if !self.seen.insert(row.seq) {
                    self.duplicates += 1;
                    return Some(Event::Duplicate(row.seq));
                }
                self.received += 1;
                self.alerts.push_back(row.clone());
                while self.alerts.len() > VIEW_ALERTS {
                    self.alerts.pop_front();
                }
                Some(Event::Alert(row))
            }
            "status" => {
                if let Some(prev) = &self.status {
                    let d =
                        |k: &str| v[k].as_f64().unwrap_or(0.0) - prev[k].as_f64().unwrap_or(0.0);
                    if d("uptime_s") > 0.0 {
                        self.frames_per_s = Some(d("frames") / d("uptime_s"));
                    }
                }
                self.status = Some(v.clone());
                Some(Event::Status)
            }
            "reply" => {
                let text = if v["ok"] == true {
                    match v["threshold"].as_f64() {
                        Some(t) => format!("{}: ok (threshold {t})", v["cmd"].as_str()?),
                        None => format!("{}: ok", v["cmd"].as_str()?),
                    }
                } else {
                    format!(
                        "{}: refused, {}: {}",
                        v["cmd"].as_str().unwrap_or("?"),
                        v["error"].as_str().unwrap_or("?"),
                        v["message"].as_str().unwrap_or("")
                    )
                };
                self.notice(text.clone());
                Some(Event::Reply(text))
            }
            "evidence" => self.on_chunk(v),
            _ => None,
        }
    }

    fn on_chunk(&mut self, v: &Value) -> Option<Event> {
        let seq = v["seq"].as_u64()?;
        let part = v["part"].as_str()?.to_string();
        let (index, count) = (v["index"].as_u64()?, v["count"].as_u64()?);
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str()?)
            .ok()?;
        let chunks = self.evidence.entry((seq, part.clone())).or_default();
        chunks.insert(index, data);
        if chunks.len() as u64 != count {
            return None;
        }
        let chunks = self.evidence.remove(&(seq, part.clone()))?;
        let bytes: Vec<u8> = chunks.into_values().flatten().collect();
        self.notice(format!(
            "evidence {part} of alert {seq}: {} bytes",
            bytes.len()
        ));
        Some(Event::Evidence { seq, part, bytes })
    }
}

/// The alert log: every new alert as a JSON line and a CSV row, flushed as it comes.
#[derive(Debug)]
pub struct AlertLog {
    jsonl: std::fs::File,
    csv: std::fs::File,
    evidence_dir: PathBuf,
}

/// CSV columns of `alerts.csv`.
pub const CSV_HEADER: &str =
    "received,seq,time,frame,tile,score,threshold,region_x,region_y,region_w,region_h,area,device,model";

impl AlertLog {
    /// Opens (appending) `dir/alerts.jsonl` and `dir/alerts.csv`; evidence goes to
    /// `dir/evidence/`.
    pub fn open(dir: &Path) -> std::io::Result<AlertLog> {
        std::fs::create_dir_all(dir.join("evidence"))?;
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
        };
        let jsonl = open("alerts.jsonl")?;
        let mut csv = open("alerts.csv")?;
        if csv.metadata()?.len() == 0 {
            writeln!(csv, "{CSV_HEADER}")?;
        }
        Ok(AlertLog {
            jsonl,
            csv,
            evidence_dir: dir.join("evidence"),
        })
    }

    /// Appends one new alert.
    pub fn alert(&mut self, v: &Value, session: &Session) -> std::io::Result<()> {
        writeln!(self.jsonl, "{v}")?;
        let Some(a) = AlertRow::from_json(v) else {
            return Ok(());
        };
        let received = humantime::format_rfc3339_millis(SystemTime::now());
        writeln!(
            self.csv,
            "{received},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            a.seq,
            a.time,
            a.frame,
            a.tile,
            a.score,
            a.threshold,
            a.region[0],
            a.region[1],
            a.region[2],
            a.region[3],
            a.area,
            session.device,
            session.model
        )?;
        self.jsonl.flush()?;
        self.csv.flush()
    }

    /// Saves an evidence file under the name the device's store uses; returns its path.
    pub fn evidence(&self, seq: u64, part: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let part = if part == "tile" {
            Part::Tile
        } else {
            Part::Heatmap
        };
        let path = self
            .evidence_dir
            .join(inspect_protocol::evidence::file_name(seq, part));
        std::fs::write(&path, bytes)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn alert(seq: u64) -> Alert {
        inspect_protocol::fixtures::alert(seq, seq * 2)
    }

    #[test]
    fn both_framings_give_the_same_messages_and_noise_is_counted() {
        let mut json = Decoder::new(Framing::Json);
        let mut bytes = Vec::new();
        for s in [0, 1] {
            bytes.extend_from_slice(alert(s).to_line().unwrap().as_bytes());
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(b"{\"type\":\"alert\",\"seq\":2,tor\n\n");
        // Split anywhere: messages complete across reads.
        let (a, b) = bytes.split_at(37);
        let mut got = json.push(a);
        got.extend(json.push(b));
        assert_eq!(got.len(), 2);
        assert_eq!(json.garbled, 1);

        let mut bin = Decoder::new(Framing::Cobs);
        let mut frames = Vec::new();
        for s in [0, 1] {
            frames.extend_from_slice(&cobs::encode(&alert(s).to_binary()).unwrap());
        }
        let from_cobs = bin.push(&frames);
        assert_eq!(from_cobs, got, "COBS alerts read as their JSON lines");
    }

    #[test]
    fn duplicates_and_gaps_are_counted() {
        let mut s = Session::default();
        let msg = |seq| parse_line(&alert(seq).to_line().unwrap()).unwrap();
        for seq in [5, 6, 8, 6, 9] {
            s.on_message(&msg(seq));
        }
        assert_eq!((s.received, s.duplicates, s.gaps()), (4, 1, 1));
        assert_eq!(
            s.on_message(&msg(7)),
            Some(Event::Alert(AlertRow::from_json(&msg(7)).unwrap()))
        );
        assert_eq!(s.gaps(), 0, "the re-sent alert fills the gap");
        assert_eq!(s.device, "dev");
    }

    #[test]
    fn evidence_reassembles_out_of_order() {
        let mut s = Session::default();
        let data: Vec<u8> = (0..500u32).map(|i| (i * 7) as u8).collect();
        let chunks: Vec<&[u8]> = data.chunks(192).collect();
        let mut events = Vec::new();
        for i in [2usize, 0, 1] {
            let c = EvidenceChunk {
                seq: 4,
                part: Part::Tile,
                index: i as u16,
                count: 3,
                data: chunks[i],
            };
            let v = parse_line(&c.to_line("dev", UNIX_EPOCH).unwrap()).unwrap();
            events.extend(s.on_message(&v));
        }
        assert_eq!(
            events,
            [Event::Evidence {
                seq: 4,
                part: "tile".into(),
                bytes: data
            }]
        );
    }
}
