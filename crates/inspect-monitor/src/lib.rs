//! The receiving side of the alert link, as `inspect-monitor` runs it on a technician's laptop:
//! decode what the daemon sends (JSON Lines or COBS frames), keep the session's picture (alerts
//! deduplicated by `seq`, gaps, the device's last status, replies), reassemble evidence, and log
//! every new alert to JSONL and CSV; [`report`] turns a log folder into the asset owner's HTML
//! report. No terminal code here: the binary draws this state.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use inspect_protocol::command::{Part, Reply};
use inspect_protocol::signing::{Direction, LinkKey, Verifier};
pub use inspect_protocol::Framing;
use inspect_protocol::{Alert, Deframer, DeviceMessage, Status};

pub mod report;

/// Alerts kept for the view (the logs keep them all).
pub const VIEW_ALERTS: usize = 500;

/// Splits received bytes into the device's messages, whatever the framing; with a link key,
/// only messages the device signed, each newer than the last, pass.
#[derive(Debug)]
pub struct Decoder {
    deframer: Deframer,
    verifier: Option<Verifier>,
    /// Messages that did not decode (torn lines, corrupted frames, unknown kinds).
    pub garbled: u64,
    /// Messages refused by their signature: unsigned, forged or replayed.
    pub refused: u64,
}

impl Decoder {
    /// A decoder for `framing`.
    pub fn new(framing: Framing) -> Decoder {
        Decoder {
            deframer: Deframer::new(framing),
            verifier: None,
            garbled: 0,
            refused: 0,
        }
    }

    /// A decoder for `framing` that accepts only messages signed with `key`.
    pub fn signed(framing: Framing, key: LinkKey) -> Decoder {
        Decoder {
            verifier: Some(Verifier::new(key, Direction::FromDevice, 0)),
            ..Decoder::new(framing)
        }
    }

    /// Feeds received bytes; returns the messages they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<DeviceMessage<'static>> {
        let mut out = Vec::new();
        for &b in bytes {
            let unframed = match self.deframer.push(b) {
                Some(Ok(unframed)) => unframed,
                Some(Err(_)) => {
                    self.garbled += 1;
                    continue;
                }
                None => continue,
            };
            let plain = match &mut self.verifier {
                None => Ok(unframed),
                Some(verifier) => verifier.verify(unframed),
            };
            match plain {
                Ok(plain) => match DeviceMessage::decode(plain) {
                    Ok(message) => out.push(message.into_owned()),
                    Err(_) => self.garbled += 1,
                },
                Err(_) => self.refused += 1,
            }
        }
        out
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

/// Width of the view's `seq` column: the widest sequence number listed, at least 7. A device
/// without a journal file numbers from its clock (seconds since 1970 times 2^20: 16 digits).
pub fn seq_column_width<'a>(alerts: impl IntoIterator<Item = &'a AlertRow>) -> usize {
    alerts
        .into_iter()
        .map(|a| a.seq.checked_ilog10().unwrap_or(0) as usize + 1)
        .max()
        .unwrap_or(0)
        .max(7)
}

impl From<&Alert> for AlertRow {
    fn from(a: &Alert) -> AlertRow {
        let r = &a.region;
        AlertRow {
            seq: a.seq,
            time: humantime::format_rfc3339_millis(a.time).to_string(),
            frame: a.frame,
            tile: a.tile_index as u64,
            score: a.score.into(),
            threshold: a.threshold.into(),
            region: [r.x, r.y, r.width, r.height].map(u64::from),
            area: a.area_fraction.into(),
        }
    }
}

/// What a received message meant, for the caller to act on (ACK, print, save).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new alert (first copy of its `seq`).
    Alert(Alert),
    /// A re-sent alert already received (ACK it again, log nothing).
    Duplicate {
        /// Its sequence number.
        seq: u64,
        /// The boot id it carries (0: a version 1 device).
        boot: u64,
    },
    /// A status report.
    Status,
    /// The answer to a command.
    Reply {
        /// The command it answers (`"?"` when the device could not read it).
        cmd: &'static str,
        /// Whether the command was carried out.
        ok: bool,
        /// The answer as text for a person.
        text: String,
    },
    /// An evidence file is complete.
    Evidence {
        /// Alert it documents.
        seq: u64,
        /// Which file.
        part: Part,
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
    pub status: Option<Status>,
    /// Frames per second between the last two status reports.
    pub frames_per_s: Option<f64>,
    /// Recent replies and notices, newest last.
    pub notices: VecDeque<String>,
    // Sequence numbers received, with the boot id of the start that raised each.
    seen: BTreeMap<u64, u64>,
    evidence: BTreeMap<(u64, u8), BTreeMap<u16, Vec<u8>>>,
}

impl Session {
    /// Sequence numbers missing between alerts of the same start of the device. Where
    /// numbering passes from one start to the next it jumps on purpose (a restart after a
    /// crash skips the numbers the last start had reserved): that is not a loss.
    pub fn gaps(&self) -> u64 {
        let mut gaps = 0;
        let mut previous: Option<(u64, u64)> = None;
        for (&seq, &boot) in &self.seen {
            if let Some((last, last_boot)) = previous {
                if boot == last_boot {
                    gaps += seq - last - 1;
                }
            }
            previous = Some((seq, boot));
        }
        gaps
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
    pub fn on_message(&mut self, message: &DeviceMessage<'_>) -> Option<Event> {
        match message {
            DeviceMessage::Alert(alert) => {
                self.device = alert.device.to_string();
                self.model = alert.model.to_string();
                if self.seen.insert(alert.seq, alert.boot).is_some() {
                    self.duplicates += 1;
                    return Some(Event::Duplicate {
                        seq: alert.seq,
                        boot: alert.boot,
                    });
                }
                self.received += 1;
                self.alerts.push_back(AlertRow::from(alert));
                while self.alerts.len() > VIEW_ALERTS {
                    self.alerts.pop_front();
                }
                Some(Event::Alert(alert.clone()))
            }
            DeviceMessage::Status(status) => {
                self.device = status.device.to_string();
                self.model = status.model.to_string();
                if let Some(prev) = &self.status {
                    let seconds = status.uptime_s.saturating_sub(prev.uptime_s);
                    if seconds > 0 {
                        let frames = status.frames.saturating_sub(prev.frames);
                        self.frames_per_s = Some(frames as f64 / seconds as f64);
                    }
                }
                self.status = Some(status.clone());
                Some(Event::Status)
            }
            DeviceMessage::Reply(reply) => {
                let text = reply_text(reply);
                self.notice(text.clone());
                Some(Event::Reply {
                    cmd: reply.cmd,
                    ok: reply.outcome.is_ok(),
                    text,
                })
            }
            DeviceMessage::Evidence(chunk) => {
                self.on_chunk(chunk.seq, chunk.part, chunk.index, chunk.count, &chunk.data)
            }
        }
    }

    fn on_chunk(
        &mut self,
        seq: u64,
        part: Part,
        index: u16,
        count: u16,
        data: &[u8],
    ) -> Option<Event> {
        let key = (seq, part as u8);
        let chunks = self.evidence.entry(key).or_default();
        chunks.insert(index, data.to_vec());
        if chunks.len() != usize::from(count) {
            return None;
        }
        let chunks = self.evidence.remove(&key)?;
        let bytes: Vec<u8> = chunks.into_values().flatten().collect();
        self.notice(format!(
            "evidence {} of alert {seq}: {} bytes",
            part.name(),
            bytes.len()
        ));
        Some(Event::Evidence { seq, part, bytes })
    }
}

/// A reply as a line for a person.
fn reply_text(reply: &Reply) -> String {
    match &reply.outcome {
        Ok(t) if t.is_finite() => format!("{}: ok (threshold {t})", reply.cmd),
        Ok(_) => format!("{}: ok", reply.cmd),
        Err(r) => format!("{}: refused, {}: {}", reply.cmd, r.code.name(), r.message),
    }
}

/// The alert log: every new alert as a JSON line and a CSV row, flushed as it comes.
#[derive(Debug)]
pub struct AlertLog {
    jsonl: std::fs::File,
    csv: std::fs::File,
    evidence_dir: PathBuf,
    /// Where an `alerts.csv` with other columns (an older monitor's) was moved on opening.
    pub moved_csv: Option<PathBuf>,
}

/// CSV columns of `alerts.csv`; the position columns as in the report's CSV.
pub const CSV_HEADER: &str = "received,seq,time,frame,tile,score,threshold,region_x,region_y,\
     region_w,region_h,area,device,model,boot,source,chainage_m,lat,lon,age_ms,stale";

/// An alert's position as CSV columns `source,chainage_m,lat,lon,age_ms,stale`: `none` and
/// empty fields without one; chainage for an odometer, latitude and longitude for GNSS.
pub fn position_columns(position: Option<inspect_protocol::Position>) -> [String; 6] {
    use inspect_protocol::Fix;
    let Some(p) = position else {
        return [
            "none".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ];
    };
    let (source, chainage, lat, lon) = match p.fix {
        Fix::Chainage { metres } => (
            "odometer",
            format!("{metres:.3}"),
            String::new(),
            String::new(),
        ),
        Fix::Gnss { lat, lon } => (
            "gnss",
            String::new(),
            format!("{lat:.7}"),
            format!("{lon:.7}"),
        ),
    };
    [
        source.into(),
        chainage,
        lat,
        lon,
        p.age_ms.to_string(),
        p.stale.to_string(),
    ]
}

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
        // Rows of other columns must not be appended under an older header: that file is kept
        // beside, under a name of its own, and a new one begins.
        let path = dir.join("alerts.csv");
        let mut moved_csv = None;
        if let Ok(file) = std::fs::File::open(&path) {
            // The header alone: a long session's log is not read whole. A header that is not
            // text counts as other columns.
            let mut header = String::new();
            let read = std::io::BufRead::read_line(&mut std::io::BufReader::new(file), &mut header);
            let ours = read.is_ok() && header.trim_end_matches(['\r', '\n']) == CSV_HEADER;
            if !ours && !matches!(read, Ok(0)) {
                let secs = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = dir.join(format!("alerts-until-{secs}.csv"));
                std::fs::rename(&path, &aside)?;
                moved_csv = Some(aside);
            }
        }
        let mut csv = open("alerts.csv")?;
        if csv.metadata()?.len() == 0 {
            writeln!(csv, "{CSV_HEADER}")?;
        }
        Ok(AlertLog {
            jsonl,
            csv,
            evidence_dir: dir.join("evidence"),
            moved_csv,
        })
    }

    /// Appends one new alert.
    pub fn alert(&mut self, alert: &Alert, session: &Session) -> std::io::Result<()> {
        // Every alert fits a line (a protocol test checks the widest).
        if let Ok(line) = alert.to_line() {
            writeln!(self.jsonl, "{line}")?;
        }
        let a = AlertRow::from(alert);
        let received = humantime::format_rfc3339_millis(SystemTime::now());
        let position = position_columns(alert.position).join(",");
        writeln!(
            self.csv,
            "{received},{},{},{},{},{},{},{},{},{},{},{},{},{},{:016x},{position}",
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
            session.model,
            alert.boot
        )?;
        self.jsonl.flush()?;
        self.csv.flush()
    }

    /// Saves an evidence file under the name the device's store uses; returns its path.
    pub fn evidence(&self, seq: u64, part: Part, bytes: &[u8]) -> std::io::Result<PathBuf> {
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
    use inspect_protocol::cobs;
    use inspect_protocol::command::EvidenceChunk;
    use std::borrow::Cow;
    use std::time::UNIX_EPOCH;

    fn alert(seq: u64) -> Alert {
        inspect_protocol::fixtures::alert(seq, seq * 2)
    }

    fn message(seq: u64) -> DeviceMessage<'static> {
        DeviceMessage::Alert(alert(seq))
    }

    #[test]
    fn the_seq_column_fits_the_widest_sequence_number() {
        let rows = |seqs: &[u64]| -> Vec<AlertRow> {
            let alert = |s| inspect_protocol::fixtures::alert(s, 1);
            seqs.iter().map(|&s| AlertRow::from(&alert(s))).collect()
        };
        assert_eq!(seq_column_width(&[]), 7);
        assert_eq!(seq_column_width(&rows(&[0, 12])), 7);
        assert_eq!(seq_column_width(&rows(&[5, 99_999_999])), 8);
        let clock = 1_796_000_000u64 << 20;
        assert_eq!(
            seq_column_width(&rows(&[3, clock])),
            clock.to_string().len()
        );
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
        assert_eq!(got, [message(0), message(1)]);
        assert_eq!(json.garbled, 1);

        let mut bin = Decoder::new(Framing::Cobs);
        let mut frames = Vec::new();
        for s in [0, 1] {
            frames.extend_from_slice(&cobs::encode(&alert(s).to_binary()).unwrap());
        }
        frames.extend_from_slice(&[7, 7, 7, 0]);
        let from_cobs = bin.push(&frames);
        assert_eq!(from_cobs, got, "COBS alerts read as their JSON lines");
        assert_eq!(bin.garbled, 1);
    }

    #[test]
    fn with_a_key_only_the_devices_signed_messages_pass() {
        use inspect_protocol::signing::Signer;
        let key = LinkKey::from_bytes([3; 32]);
        let mut device = Signer::new(key.clone(), 1, Direction::FromDevice);
        let mut stranger = Signer::new(LinkKey::from_bytes([4; 32]), 1, Direction::FromDevice);
        let time = UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let signed = |signer: &mut Signer, seq| {
            message(seq)
                .encode_signed(Framing::Json, "dev", time, false, signer)
                .unwrap()
        };
        let mut stream = Vec::new();
        stream.extend_from_slice(&signed(&mut device, 1));
        stream.extend_from_slice(&signed(&mut stranger, 2));
        stream.extend_from_slice(
            &message(3)
                .encode(Framing::Json, "dev", time, false)
                .unwrap(),
        );
        let replay = signed(&mut device, 4);
        stream.extend_from_slice(&replay);
        stream.extend_from_slice(&replay);
        let mut decoder = Decoder::signed(Framing::Json, key);
        let got = decoder.push(&stream);
        let seqs: Vec<u64> = got
            .iter()
            .filter_map(|m| match m {
                DeviceMessage::Alert(a) => Some(a.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, [1, 4]);
        assert_eq!((decoder.refused, decoder.garbled), (3, 0));
    }

    #[test]
    fn duplicates_and_gaps_are_counted() {
        let mut s = Session::default();
        for seq in [5, 6, 8, 6, 9] {
            s.on_message(&message(seq));
        }
        assert_eq!((s.received, s.duplicates, s.gaps()), (4, 1, 1));
        assert_eq!(s.on_message(&message(7)), Some(Event::Alert(alert(7))));
        assert_eq!(s.gaps(), 0, "the re-sent alert fills the gap");
        assert_eq!(s.device, "dev");
        assert_eq!(s.alerts.back().map(|a| (a.seq, a.area)), Some((7, 0.25)));
        // The device restarted after a crash: the next start numbers from its reservation,
        // far above; the jump is no loss, a hole within the new start is.
        let from_boot = |seq: u64, boot: u64| DeviceMessage::Alert(Alert { boot, ..alert(seq) });
        s.on_message(&from_boot(10, 7)); // raised before the crash, sent after it
        s.on_message(&from_boot(1033, 9));
        s.on_message(&from_boot(1034, 9));
        assert_eq!(s.gaps(), 0);
        assert_eq!(
            s.on_message(&from_boot(1033, 9)),
            Some(Event::Duplicate { seq: 1033, boot: 9 })
        );
        s.on_message(&from_boot(1036, 9));
        assert_eq!(s.gaps(), 1);
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
                data: Cow::Borrowed(chunks[i]),
            };
            // Through the JSON line, as a cable link carries it.
            let wire = DeviceMessage::Evidence(c)
                .encode(Framing::Json, "dev", UNIX_EPOCH, false)
                .unwrap();
            for m in Decoder::new(Framing::Json).push(&wire) {
                events.extend(s.on_message(&m));
            }
        }
        assert_eq!(
            events,
            [Event::Evidence {
                seq: 4,
                part: Part::Tile,
                bytes: data
            }]
        );
    }

    #[test]
    fn the_csv_log_carries_boot_and_position_and_an_older_log_is_kept_aside() {
        let dir = std::env::temp_dir().join(format!("monitor-csv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let old = "received,seq,time,frame\n2026-12-01T00:00:00Z,1,x,1\n";
        std::fs::write(dir.join("alerts.csv"), old).unwrap();
        let mut log = AlertLog::open(&dir).unwrap();
        let aside = log.moved_csv.clone().expect("the older log is moved");
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), old);
        let session = Session::default();
        let mut gnss = alert(5);
        gnss.position = Some(inspect_protocol::Position {
            fix: inspect_protocol::Fix::Gnss {
                lat: 48.1173,
                lon: -11.5,
            },
            age_ms: 2500,
            stale: true,
        });
        let mut nowhere = alert(6);
        nowhere.position = None;
        for a in [alert(2), gnss, nowhere] {
            log.alert(&a, &session).unwrap();
        }
        let csv = std::fs::read_to_string(dir.join("alerts.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        let columns = CSV_HEADER.split(',').count();
        assert!(
            lines.iter().all(|l| l.split(',').count() == columns),
            "{csv}"
        );
        assert!(
            lines[1].ends_with(",0000000000000007,odometer,1.000,,,12,false"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].ends_with(",gnss,,48.1173000,-11.5000000,2500,true"),
            "{}",
            lines[2]
        );
        assert!(lines[3].ends_with(",none,,,,,"), "{}", lines[3]);
        // Reopened with the current columns: appended to, nothing moved.
        drop(log);
        assert!(AlertLog::open(&dir).unwrap().moved_csv.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
