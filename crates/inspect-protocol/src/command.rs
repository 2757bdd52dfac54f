//! Commands from the peer (ACK, status, threshold, pause/resume, evidence) and the device's
//! replies, in both framings. A command that does not decode, names an unknown kind or carries an
//! out-of-range value gets an error reply and changes nothing.

use std::borrow::Cow;
use std::fmt::Write;
use std::time::SystemTime;

use base64::Engine as _;

use super::binary::{self, kind, DecodeError, Reader};
use super::cobs::Payload;
use super::message::{Line, LineTooLong};

/// Raw bytes of evidence per chunk: 192 bytes are 256 base64 characters, so a JSON chunk line
/// stays well inside [`super::LINE_CAPACITY`].
pub const EVIDENCE_CHUNK: usize = 192;

/// A command from the peer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Command {
    /// The peer has alert `seq`: stop re-sending it.
    Ack {
        /// Alert sequence number.
        seq: u64,
        /// The boot id the alert carried (protocol version 2; absent from a version 1 peer):
        /// an ACK naming another is refused.
        boot: Option<u64>,
    },
    /// Send a status report now.
    GetStatus,
    /// Use `value` as the alert threshold (bounded by the config).
    SetThreshold {
        /// New threshold.
        value: f32,
    },
    /// Stop inspecting until [`Command::Resume`].
    Pause,
    /// Inspect again.
    Resume,
    /// Send the evidence files of alert `seq`.
    GetEvidence {
        /// Alert sequence number.
        seq: u64,
    },
}

impl Command {
    /// The command's name in JSON and in replies.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ack { .. } => "ack",
            Command::GetStatus => "get_status",
            Command::SetThreshold { .. } => "set_threshold",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::GetEvidence { .. } => "get_evidence",
        }
    }

    /// The command's binary kind.
    pub fn kind(&self) -> u8 {
        match self {
            Command::Ack { .. } => kind::ACK,
            Command::GetStatus => kind::GET_STATUS,
            Command::SetThreshold { .. } => kind::SET_THRESHOLD,
            Command::Pause => kind::PAUSE,
            Command::Resume => kind::RESUME,
            Command::GetEvidence { .. } => kind::GET_EVIDENCE,
        }
    }

    /// Parses one JSON line, e.g. `{"type":"ack","seq":41}`. Unknown keys are ignored.
    pub fn from_json(line: &[u8]) -> Result<Command, Rejected> {
        #[derive(serde::Deserialize)]
        struct Raw<'a> {
            #[serde(rename = "type", borrow)]
            kind: &'a str,
            seq: Option<u64>,
            value: Option<f64>,
            boot: Option<&'a str>,
        }
        let raw: Raw<'_> = serde_json::from_slice(line)
            .map_err(|e| Rejected::new("?", ErrorCode::Malformed, format_args!("{e}")))?;
        let seq = |name| {
            raw.seq.ok_or_else(|| {
                Rejected::new(name, ErrorCode::Malformed, format_args!("`seq` is missing"))
            })
        };
        match raw.kind {
            "ack" => {
                let boot = match raw.boot {
                    None => None,
                    Some(hex) => Some(parse_boot(hex).ok_or_else(|| {
                        Rejected::new(
                            "ack",
                            ErrorCode::Malformed,
                            format_args!("`boot` is not 16 hexadecimal digits"),
                        )
                    })?),
                };
                Ok(Command::Ack {
                    seq: seq("ack")?,
                    boot,
                })
            }
            "get_status" => Ok(Command::GetStatus),
            "set_threshold" => {
                let value = raw.value.ok_or_else(|| {
                    Rejected::new(
                        "set_threshold",
                        ErrorCode::Malformed,
                        format_args!("`value` is missing"),
                    )
                })?;
                let narrowed = value as f32;
                if !narrowed.is_finite() {
                    return Err(Rejected::new(
                        "set_threshold",
                        ErrorCode::OutOfRange,
                        format_args!("value {value} is not a finite 32-bit number"),
                    ));
                }
                Ok(Command::SetThreshold { value: narrowed })
            }
            "pause" => Ok(Command::Pause),
            "resume" => Ok(Command::Resume),
            "get_evidence" => Ok(Command::GetEvidence {
                seq: seq("get_evidence")?,
            }),
            other => Err(Rejected::new(
                "?",
                ErrorCode::Unknown,
                format_args!("unknown command `{}`", other.escape_debug()),
            )),
        }
    }

    /// Parses one binary payload (see `docs/protocol.md`).
    pub fn from_binary(payload: &[u8]) -> Result<Command, Rejected> {
        let malformed =
            |e: DecodeError| Rejected::new("?", ErrorCode::Malformed, format_args!("{e}"));
        let k = *payload
            .first()
            .ok_or_else(|| malformed(DecodeError::Truncated))?;
        let mut r = Reader::open(payload, k).map_err(malformed)?;
        let command = match k {
            kind::ACK => Command::Ack {
                seq: r.u64().map_err(malformed)?,
                // Version 2 appends the boot id.
                boot: r.u64().ok(),
            },
            kind::GET_STATUS => Command::GetStatus,
            kind::SET_THRESHOLD => {
                // Refused here as in JSON (found by fuzzing: a NaN decoded and compared unequal
                // to itself; the link's range check refused it, but no decoder should pass it).
                let value = r.f32().map_err(malformed)?;
                if !value.is_finite() {
                    return Err(Rejected::new(
                        "set_threshold",
                        ErrorCode::OutOfRange,
                        format_args!("value {value} is not a finite 32-bit number"),
                    ));
                }
                Command::SetThreshold { value }
            }
            kind::PAUSE => Command::Pause,
            kind::RESUME => Command::Resume,
            kind::GET_EVIDENCE => Command::GetEvidence {
                seq: r.u64().map_err(malformed)?,
            },
            other => {
                return Err(Rejected::new(
                    "?",
                    ErrorCode::Unknown,
                    format_args!("unknown command kind 0x{other:02x}"),
                ))
            }
        };
        Ok(command)
    }

    /// The command as a JSON line (what a peer sends; used by tests and the monitor).
    pub fn to_json(&self) -> Line {
        let mut line = Line::new();
        // Short fixed shapes: always fit.
        let _ = match self {
            Command::Ack {
                seq,
                boot: Some(boot),
            } => write!(
                line,
                "{{\"type\":\"ack\",\"seq\":{seq},\"boot\":\"{boot:016x}\"}}"
            ),
            Command::Ack { seq, boot: None } | Command::GetEvidence { seq } => {
                write!(line, "{{\"type\":\"{}\",\"seq\":{seq}}}", self.name())
            }
            Command::SetThreshold { value } => {
                write!(line, "{{\"type\":\"{}\",\"value\":{value}}}", self.name())
            }
            _ => write!(line, "{{\"type\":\"{}\"}}", self.name()),
        };
        line
    }

    /// The command as a binary payload.
    pub fn to_binary(&self) -> Payload {
        match self {
            Command::Ack {
                seq,
                boot: Some(boot),
            } => binary::message(self.kind(), &[&seq.to_le_bytes(), &boot.to_le_bytes()]),
            Command::Ack { seq, boot: None } | Command::GetEvidence { seq } => {
                binary::message(self.kind(), &[&seq.to_le_bytes()])
            }
            Command::SetThreshold { value } => {
                binary::message(self.kind(), &[&value.to_le_bytes()])
            }
            _ => binary::message(self.kind(), &[]),
        }
    }
}

/// A boot id as JSON carries it: 16 hexadecimal digits.
fn parse_boot(hex: &str) -> Option<u64> {
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Why a command was refused, as sent in an error reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// Not valid JSON / COBS / layout, or a field is missing.
    Malformed = 1,
    /// A command this device does not know.
    Unknown = 2,
    /// A value outside its accepted range.
    OutOfRange = 3,
    /// The alert or its evidence does not exist (any more).
    NotFound = 4,
    /// The device cannot take it now (e.g. too many evidence transfers queued).
    Busy = 5,
}

impl ErrorCode {
    /// The code's name in JSON replies.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::Unknown => "unknown_command",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Busy => "busy",
        }
    }

    /// The code named `name` in a JSON reply.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.name() == name)
    }

    const ALL: [ErrorCode; 5] = [
        ErrorCode::Malformed,
        ErrorCode::Unknown,
        ErrorCode::OutOfRange,
        ErrorCode::NotFound,
        ErrorCode::Busy,
    ];

    fn from_u8(v: u8) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| *c as u8 == v)
    }
}

/// Short human text in replies.
pub type Message = heapless::String<160>;

/// A refused command: which one (`"?"` when it could not be read), why, and a message.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    /// Command name, or `"?"`.
    pub cmd: &'static str,
    /// Why.
    pub code: ErrorCode,
    /// Details for a person.
    pub message: Message,
}

impl Rejected {
    /// A rejection; the message is cut to fit.
    pub fn new(cmd: &'static str, code: ErrorCode, message: std::fmt::Arguments<'_>) -> Rejected {
        let mut text = Message::new();
        let mut cut = Cut(&mut text);
        let _ = cut.write_fmt(message);
        Rejected {
            cmd,
            code,
            message: text,
        }
    }
}

// Writes as much as fits and drops the rest, so a long parser message cannot fail a reply.
struct Cut<'a>(&'a mut Message);

impl std::fmt::Write for Cut<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// The device's answer to a command (ACKs get none).
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// Command name it answers, or `"?"`.
    pub cmd: &'static str,
    /// `Ok` with the threshold in force (NaN when not relevant), or why it was refused.
    pub outcome: Result<f32, Rejected>,
}

fn cmd_kind(name: &str) -> u8 {
    match name {
        "ack" => kind::ACK,
        "get_status" => kind::GET_STATUS,
        "set_threshold" => kind::SET_THRESHOLD,
        "pause" => kind::PAUSE,
        "resume" => kind::RESUME,
        "get_evidence" => kind::GET_EVIDENCE,
        _ => 0,
    }
}

/// A command name as the static string replies hold (`"?"` for a name this version lacks).
pub(crate) fn cmd_name_static(name: &str) -> &'static str {
    cmd_name(cmd_kind(name))
}

fn cmd_name(k: u8) -> &'static str {
    match k {
        kind::ACK => "ack",
        kind::GET_STATUS => "get_status",
        kind::SET_THRESHOLD => "set_threshold",
        kind::PAUSE => "pause",
        kind::RESUME => "resume",
        kind::GET_EVIDENCE => "get_evidence",
        _ => "?",
    }
}

impl Reply {
    /// The reply as one JSON line.
    pub fn to_line(&self, device: &str, time: SystemTime) -> Result<Line, LineTooLong> {
        let mut line = Line::new();
        super::message::write_head(&mut line, "reply", device, time)?;
        write!(line, ",\"cmd\":\"{}\"", self.cmd)?;
        match &self.outcome {
            Ok(threshold) if threshold.is_finite() => {
                write!(line, ",\"ok\":true,\"threshold\":{threshold}}}")?
            }
            Ok(_) => write!(line, ",\"ok\":true}}")?,
            Err(r) => {
                // The message may quote peer input: write it as a JSON string.
                let text = serde_json::to_string(r.message.as_str()).map_err(|_| LineTooLong)?;
                write!(
                    line,
                    ",\"ok\":false,\"error\":\"{}\",\"message\":{text}}}",
                    r.code.name()
                )?
            }
        }
        Ok(line)
    }

    /// The reply as a binary payload: command kind, code (0 = ok), threshold, message.
    pub fn to_binary(&self) -> Payload {
        let (code, value, message) = match &self.outcome {
            Ok(t) => (0u8, *t, ""),
            Err(r) => (r.code as u8, f32::NAN, r.message.as_str()),
        };
        let mut p = binary::message(
            kind::REPLY,
            &[&[cmd_kind(self.cmd), code], &value.to_le_bytes()],
        );
        binary::push_text(&mut p, message);
        p
    }

    /// Decodes [`Reply::to_binary`]'s payload.
    pub fn from_binary(payload: &[u8]) -> Result<Reply, DecodeError> {
        let mut r = Reader::open(payload, kind::REPLY)?;
        let cmd = cmd_name(r.u8()?);
        let code = r.u8()?;
        let value = r.f32()?;
        let text = binary::read_text(&mut r)?;
        let outcome = match ErrorCode::from_u8(code) {
            None if code == 0 => Ok(value),
            None => return Err(DecodeError::Truncated),
            Some(code) => Err(Rejected::new(cmd, code, format_args!("{text}"))),
        };
        Ok(Reply { cmd, outcome })
    }
}

/// Which evidence file a chunk belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The flagged tile, JPEG.
    Tile = 0,
    /// Its anomaly heatmap, PNG.
    Heatmap = 1,
}

impl Part {
    /// Name in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Part::Tile => "tile",
            Part::Heatmap => "heatmap",
        }
    }

    /// The part named `name` in JSON.
    pub fn from_name(name: &str) -> Option<Part> {
        [Part::Tile, Part::Heatmap]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// One chunk of an evidence file: the daemon lends its bytes, a receiver may own them.
#[derive(Clone, Debug, PartialEq)]
pub struct EvidenceChunk<'a> {
    /// The alert it documents.
    pub seq: u64,
    /// Which file.
    pub part: Part,
    /// Chunk number, from 0.
    pub index: u16,
    /// Chunks in the file.
    pub count: u16,
    /// At most [`EVIDENCE_CHUNK`] bytes.
    pub data: Cow<'a, [u8]>,
}

impl EvidenceChunk<'_> {
    /// The chunk as one JSON line, data in standard base64.
    pub fn to_line(&self, device: &str, time: SystemTime) -> Result<Line, LineTooLong> {
        let mut line = Line::new();
        super::message::write_head(&mut line, "evidence", device, time)?;
        let mut b64 = [0u8; EVIDENCE_CHUNK.div_ceil(3) * 4];
        let data = &self.data[..self.data.len().min(EVIDENCE_CHUNK)];
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(data, &mut b64)
            .map_err(|_| LineTooLong)?;
        let b64 = std::str::from_utf8(&b64[..n]).map_err(|_| LineTooLong)?;
        write!(
            line,
            ",\"seq\":{},\"part\":\"{}\",\"index\":{},\"count\":{},\"data\":\"{b64}\"}}",
            self.seq,
            self.part.name(),
            self.index,
            self.count
        )?;
        Ok(line)
    }

    /// The chunk as a binary payload: seq, part, index, count, length, data.
    pub fn to_binary(&self) -> Payload {
        let data = &self.data[..self.data.len().min(EVIDENCE_CHUNK)];
        binary::message(
            kind::EVIDENCE,
            &[
                &self.seq.to_le_bytes(),
                &[self.part as u8],
                &self.index.to_le_bytes(),
                &self.count.to_le_bytes(),
                &(data.len() as u16).to_le_bytes(),
                data,
            ],
        )
    }
}

impl<'a> EvidenceChunk<'a> {
    /// The same chunk owning its bytes.
    pub fn into_owned(self) -> EvidenceChunk<'static> {
        EvidenceChunk {
            data: Cow::Owned(self.data.into_owned()),
            ..self
        }
    }

    /// Decodes [`EvidenceChunk::to_binary`]'s payload.
    pub fn from_binary(payload: &'a [u8]) -> Result<EvidenceChunk<'a>, DecodeError> {
        let mut r = Reader::open(payload, kind::EVIDENCE)?;
        let seq = r.u64()?;
        let part = match r.u8()? {
            0 => Part::Tile,
            1 => Part::Heatmap,
            _ => return Err(DecodeError::Truncated),
        };
        let index = r.u16()?;
        let count = r.u16()?;
        let len = r.u16()? as usize;
        let data = r.take(len)?;
        Ok(EvidenceChunk {
            seq,
            part,
            index,
            count,
            data: Cow::Borrowed(data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Command; 7] = [
        Command::Ack {
            seq: 41,
            boot: None,
        },
        Command::Ack {
            seq: 42,
            boot: Some(0x5eed_0000_c0ff_ee01),
        },
        Command::GetStatus,
        Command::SetThreshold { value: 1.5 },
        Command::Pause,
        Command::Resume,
        Command::GetEvidence { seq: 7 },
    ];

    #[test]
    fn every_command_round_trips_in_both_framings() {
        for c in ALL {
            assert_eq!(Command::from_json(c.to_json().as_bytes()), Ok(c), "{c:?}");
            assert_eq!(Command::from_binary(&c.to_binary()), Ok(c), "{c:?}");
        }
        // Extra keys are ignored (later protocol versions may add them).
        assert_eq!(
            Command::from_json(br#"{"type":"ack","seq":3,"from":"monitor"}"#),
            Ok(Command::Ack { seq: 3, boot: None })
        );
    }

    #[test]
    fn the_documented_wire_examples_hold() {
        // docs/protocol.md, "Binary framing": computed there with Python's zlib.crc32.
        let hex = |b: &[u8]| {
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let ack = crate::cobs::encode(
            &Command::Ack {
                seq: 41,
                boot: None,
            }
            .to_binary(),
        )
        .unwrap();
        assert_eq!(hex(&ack), "04 10 01 29 01 01 01 01 01 01 05 a0 84 66 35 00");
        let set = Command::SetThreshold { value: 1.6 }.to_binary();
        let set = crate::cobs::encode(&set).unwrap();
        assert_eq!(hex(&set), "0b 12 01 cd cc cc 3f 03 c7 07 0f 00");
    }

    #[test]
    fn bad_commands_are_rejected_with_a_reason() {
        let cases: [(&[u8], ErrorCode, &str); 6] = [
            (b"{\"type\":\"ack\"}", ErrorCode::Malformed, "seq"),
            (
                b"{\"type\":\"ack\",\"seq\":-1}",
                ErrorCode::Malformed,
                "invalid",
            ),
            (
                b"{\"type\":\"set_threshold\"}",
                ErrorCode::Malformed,
                "value",
            ),
            (b"{\"type\":\"reboot\"}", ErrorCode::Unknown, "reboot"),
            (b"not json", ErrorCode::Malformed, "expected"),
            (b"{\"seq\":1}", ErrorCode::Malformed, "type"),
        ];
        for (input, code, word) in cases {
            let r = Command::from_json(input).unwrap_err();
            assert_eq!(r.code, code, "{}", String::from_utf8_lossy(input));
            assert!(r.message.contains(word), "{}", r.message);
        }
        assert_eq!(
            Command::from_binary(&[0x10, 1, 1, 2]).unwrap_err().code,
            ErrorCode::Malformed
        );
        assert_eq!(
            Command::from_binary(&[0x77, 1]).unwrap_err().code,
            ErrorCode::Unknown
        );
        // Found by the command fuzz target: a NaN threshold in binary decoded as a command.
        for bits in [f32::NAN, f32::INFINITY] {
            let mut nan = vec![kind::SET_THRESHOLD, 1];
            nan.extend_from_slice(&bits.to_le_bytes());
            assert_eq!(
                Command::from_binary(&nan).unwrap_err().code,
                ErrorCode::OutOfRange
            );
        }
        assert_eq!(
            Command::from_binary(&[]).unwrap_err().code,
            ErrorCode::Malformed
        );
    }

    #[test]
    fn replies_in_json_and_binary() {
        let t = std::time::UNIX_EPOCH;
        let ok = Reply {
            cmd: "set_threshold",
            outcome: Ok(1.75),
        };
        let v: serde_json::Value = serde_json::from_str(&ok.to_line("dev", t).unwrap()).unwrap();
        assert_eq!(v["type"], "reply");
        assert_eq!(v["ok"], true);
        assert_eq!(v["threshold"], 1.75);
        let no = Reply {
            cmd: "?",
            outcome: Err(Rejected::new(
                "?",
                ErrorCode::Unknown,
                format_args!("unknown command `\"quoted\"\n`"),
            )),
        };
        let v: serde_json::Value = serde_json::from_str(&no.to_line("dev", t).unwrap()).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"], "unknown_command");
        assert!(v["message"].as_str().unwrap().contains("\"quoted\""));
        assert_eq!(Reply::from_binary(&ok.to_binary()).unwrap(), ok);
        assert_eq!(Reply::from_binary(&no.to_binary()).unwrap(), no);
        // A long message is cut, never an error.
        let long = Rejected::new(
            "?",
            ErrorCode::Malformed,
            format_args!("{}", "é".repeat(500)),
        );
        assert!(long.message.len() <= 160);
    }

    #[test]
    fn evidence_chunks_carry_their_bytes() {
        let data: Vec<u8> = (0..=255u8).cycle().take(EVIDENCE_CHUNK).collect();
        let c = EvidenceChunk {
            seq: 9,
            part: Part::Heatmap,
            index: 3,
            count: 4,
            data: Cow::Borrowed(&data),
        };
        assert_eq!(EvidenceChunk::from_binary(&c.to_binary()).unwrap(), c);
        let line = c.to_line("dev", std::time::UNIX_EPOCH).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let back = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(back, data);
        assert_eq!(v["part"], "heatmap");
        assert_eq!(v["count"], 4);
    }
}
