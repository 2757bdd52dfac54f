//! One codec for both ends of the link. Sending: a message and the link's [`Framing`] give the
//! bytes to write ([`DeviceMessage::encode`], [`Command::encode`]). Receiving: a [`Deframer`]
//! cuts the byte stream into lines or COBS payloads, and [`DeviceMessage::decode`] /
//! [`Command::decode`] turn those into typed messages. The daemon and `inspect-monitor` use
//! these and nothing else, so the two framings cannot drift apart.

use std::time::SystemTime;

use crate::binary::{kind, DecodeError};
use crate::cobs::{self, FrameError, Payload};
use crate::command::{Command, ErrorCode, EvidenceChunk, Rejected, Reply};
use crate::device::DeviceMessage;
use crate::message::{Alert, Line, LineTooLong, Status};
use crate::signing::{Signer, SIGNED_LINE_CAPACITY};
pub use crate::unframed::Unframed;

/// How messages are framed on the link (the daemon's `alerts.framing`: `"json"` or `"cobs"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    /// One JSON object per line (readable; for cables and terminals).
    #[default]
    Json,
    /// COBS frames with CRC-32, zero-terminated (radio links: resynchronises after noise).
    Cobs,
}

/// The bytes of one framed message: the longest is a signed JSON line with a leading resync
/// newline and its own newline (a COBS frame is shorter).
pub type Wire = heapless::Vec<u8, { SIGNED_LINE_CAPACITY + 2 }>;

/// Why a message cannot be put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Its JSON line would exceed [`crate::message::LINE_CAPACITY`].
    #[error(transparent)]
    Line(#[from] LineTooLong),
    /// Its binary payload does not fit a COBS frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl DeviceMessage<'_> {
    /// The message as one JSON line. Alerts and status reports carry their own device and time;
    /// replies and evidence chunks are stamped with `device` and `time` (their binary form,
    /// shorter for radio links, carries neither).
    pub fn to_line(&self, device: &str, time: SystemTime) -> Result<Line, LineTooLong> {
        match self {
            DeviceMessage::Alert(a) => a.to_line(),
            DeviceMessage::Status(s) => s.to_line(),
            DeviceMessage::Reply(r) => r.to_line(device, time),
            DeviceMessage::Evidence(c) => c.to_line(device, time),
        }
    }

    /// The message as a binary payload (the body of a COBS frame).
    pub fn to_binary(&self) -> Payload {
        match self {
            DeviceMessage::Alert(a) => a.to_binary(),
            DeviceMessage::Status(s) => s.to_binary(),
            DeviceMessage::Reply(r) => r.to_binary(),
            DeviceMessage::Evidence(c) => c.to_binary(),
        }
    }

    /// The bytes to write for `framing`. `resync` puts a terminator first, so a peer holding the
    /// fragment of a message whose write broke off discards it instead of joining the two.
    pub fn encode(
        &self,
        framing: Framing,
        device: &str,
        time: SystemTime,
        resync: bool,
    ) -> Result<Wire, EncodeError> {
        match framing {
            Framing::Json => frame_line(&self.to_line(device, time)?, resync),
            Framing::Cobs => frame_payload(&self.to_binary(), resync),
        }
    }

    /// [`DeviceMessage::encode`], signed by `signer` (see [`crate::signing`]).
    pub fn encode_signed(
        &self,
        framing: Framing,
        device: &str,
        time: SystemTime,
        resync: bool,
        signer: &mut Signer,
    ) -> Result<Wire, EncodeError> {
        match framing {
            Framing::Json => {
                let line = self.to_line(device, time)?;
                let signed = signer.sign_line(&line, time).ok_or(LineTooLong)?;
                frame_line(&signed, resync)
            }
            Framing::Cobs => {
                let signed = signer
                    .sign_payload(&self.to_binary(), time)
                    .ok_or(FrameError::TooLong)?;
                frame_payload(&signed, resync)
            }
        }
    }

    /// Decodes what a [`Deframer`] cut out of the stream.
    pub fn decode<'b>(unframed: Unframed<'b>) -> Result<DeviceMessage<'b>, DecodeError> {
        match unframed {
            Unframed::Line(line) => crate::json::decode_line(line),
            Unframed::Binary(payload) => DeviceMessage::from_binary(payload),
        }
    }

    /// Decodes one binary payload of any device message kind.
    pub fn from_binary(payload: &[u8]) -> Result<DeviceMessage<'_>, DecodeError> {
        let k = *payload.first().ok_or(DecodeError::Truncated)?;
        Ok(match k {
            kind::ALERT => DeviceMessage::Alert(Alert::from_binary(payload)?),
            kind::STATUS => DeviceMessage::Status(Status::from_binary(payload)?),
            kind::REPLY => DeviceMessage::Reply(Reply::from_binary(payload)?),
            kind::EVIDENCE => DeviceMessage::Evidence(EvidenceChunk::from_binary(payload)?),
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }
}

impl Command {
    /// The bytes a peer writes to send this command.
    pub fn encode(&self, framing: Framing) -> Wire {
        // Commands are a few bytes: both framings always fit.
        let wire = match framing {
            Framing::Json => frame_line(&self.to_json(), false),
            Framing::Cobs => frame_payload(&self.to_binary(), false),
        };
        wire.unwrap_or_default()
    }

    /// The bytes a peer writes to send this command signed by `signer` at `time`.
    pub fn encode_signed(&self, framing: Framing, signer: &mut Signer, time: SystemTime) -> Wire {
        let wire = match framing {
            Framing::Json => signer
                .sign_line(&self.to_json(), time)
                .ok_or(EncodeError::Line(LineTooLong))
                .and_then(|line| frame_line(&line, false)),
            Framing::Cobs => signer
                .sign_payload(&self.to_binary(), time)
                .ok_or(EncodeError::Frame(FrameError::TooLong))
                .and_then(|payload| frame_payload(&payload, false)),
        };
        wire.unwrap_or_default()
    }

    /// Decodes what a [`Deframer`] cut out of the device's input; a refusal says why.
    pub fn decode(unframed: Unframed<'_>) -> Result<Command, Rejected> {
        match unframed {
            Unframed::Line(line) => Command::from_json(line),
            Unframed::Binary(payload) => Command::from_binary(payload),
        }
    }
}

fn frame_line(line: &str, resync: bool) -> Result<Wire, EncodeError> {
    let mut wire = Wire::new();
    let full = |_: u8| EncodeError::Line(LineTooLong);
    if resync {
        wire.push(b'\n').map_err(full)?;
    }
    wire.extend_from_slice(line.as_bytes())
        .map_err(|_| EncodeError::Line(LineTooLong))?;
    wire.push(b'\n').map_err(full)?;
    Ok(wire)
}

fn frame_payload(payload: &[u8], resync: bool) -> Result<Wire, EncodeError> {
    let mut wire = Wire::new();
    if resync {
        wire.push(0)
            .map_err(|_| EncodeError::Frame(FrameError::TooLong))?;
    }
    wire.extend_from_slice(&cobs::encode(payload)?)
        .map_err(|_| EncodeError::Frame(FrameError::TooLong))?;
    Ok(wire)
}

/// Why the bytes between two terminators are not a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeframeError {
    /// A line longer than the protocol allows (noise, or not this protocol).
    #[error("line longer than {SIGNED_LINE_CAPACITY} bytes")]
    LineTooLong,
    /// A COBS frame that does not decode or fails its CRC.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl From<DeframeError> for Rejected {
    fn from(e: DeframeError) -> Rejected {
        Rejected::new("?", ErrorCode::Malformed, format_args!("{e}"))
    }
}

/// Cuts a received byte stream into messages, in either framing. Bounded and allocation-free:
/// noise can neither grow it nor stop it, it resynchronises at the next terminator.
#[derive(Debug)]
pub struct Deframer {
    framing: Framing,
    line: heapless::Vec<u8, SIGNED_LINE_CAPACITY>,
    overflow: bool,
    // The last byte ended a line: clear it before taking the next byte.
    line_done: bool,
    frames: cobs::Splitter,
    payload: Payload,
}

impl Deframer {
    /// A deframer for `framing`.
    pub fn new(framing: Framing) -> Deframer {
        Deframer {
            framing,
            line: heapless::Vec::new(),
            overflow: false,
            line_done: false,
            frames: cobs::Splitter::new(),
            payload: Payload::new(),
        }
    }

    /// Feeds one byte; at the end of a message returns it, or why the bytes were not one.
    /// Blank lines (keep-alives, the remainder of a torn line) and empty frames return nothing.
    pub fn push(&mut self, byte: u8) -> Option<Result<Unframed<'_>, DeframeError>> {
        match self.framing {
            Framing::Json => {
                if std::mem::take(&mut self.line_done) {
                    self.line.clear();
                    self.overflow = false;
                }
                if byte != b'\n' {
                    if self.line.push(byte).is_err() {
                        self.overflow = true;
                    }
                    return None;
                }
                self.line_done = true;
                if self.overflow {
                    return Some(Err(DeframeError::LineTooLong));
                }
                let text = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
                if text.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                Some(Ok(Unframed::Line(text)))
            }
            Framing::Cobs => match self.frames.push(byte)? {
                Ok(payload) => {
                    self.payload = payload;
                    Some(Ok(Unframed::Binary(&self.payload)))
                }
                Err(e) => Some(Err(e.into())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Part;
    use crate::fixtures::{id, sample_alert};
    use crate::message::LINE_CAPACITY;
    use std::borrow::Cow;
    use std::time::{Duration, UNIX_EPOCH};

    fn status() -> Status {
        Status {
            device: id("robot-7"),
            time: UNIX_EPOCH + Duration::from_millis(1_795_000_000_500),
            frames: 150,
            tiles_per_s: f32::NAN,
            dropped_frames: 1,
            skipped_frames: 2,
            source_failures: 3,
            alerts: 4,
            dropped_alerts: 5,
            unacked: 6,
            paused: true,
            uptime_s: 10,
            model: id("0123456789ab"),
            boot: 0x5eed_0000_c0ff_ee01,
            threshold: 1.25,
            refused_commands: 2,
        }
    }

    fn messages() -> Vec<DeviceMessage<'static>> {
        let data: Vec<u8> = (0..=255u8).cycle().take(150).collect();
        vec![
            DeviceMessage::Alert(sample_alert()),
            DeviceMessage::Status(status()),
            DeviceMessage::Reply(Reply {
                cmd: "set_threshold",
                outcome: Ok(1.75),
            }),
            DeviceMessage::Reply(Reply {
                cmd: "get_evidence",
                outcome: Err(Rejected::new(
                    "get_evidence",
                    ErrorCode::NotFound,
                    format_args!("no evidence for alert 9 \"quoted\"\n"),
                )),
            }),
            DeviceMessage::Evidence(EvidenceChunk {
                seq: 9,
                part: Part::Heatmap,
                index: 1,
                count: 2,
                data: Cow::Owned(data),
            }),
        ]
    }

    // NaN never equals itself: compare messages through their binary form, which keeps the bits.
    fn same(a: &DeviceMessage<'_>, b: &DeviceMessage<'_>) -> bool {
        a.to_binary() == b.to_binary()
    }

    fn receive(framing: Framing, bytes: &[u8]) -> (Vec<DeviceMessage<'static>>, usize) {
        let mut deframer = Deframer::new(framing);
        let (mut got, mut bad) = (Vec::new(), 0);
        for &b in bytes {
            match deframer.push(b) {
                Some(Ok(unframed)) => match DeviceMessage::decode(unframed) {
                    Ok(m) => got.push(m.into_owned()),
                    Err(_) => bad += 1,
                },
                Some(Err(_)) => bad += 1,
                None => {}
            }
        }
        (got, bad)
    }

    #[test]
    fn every_device_message_round_trips_in_both_framings() {
        for framing in [Framing::Json, Framing::Cobs] {
            let mut stream = Vec::new();
            for (i, m) in messages().iter().enumerate() {
                // A resync terminator before some messages must not cost a message.
                let wire = m
                    .encode(framing, "robot-7", UNIX_EPOCH, i % 2 == 1)
                    .unwrap();
                stream.extend_from_slice(&wire);
            }
            let (got, bad) = receive(framing, &stream);
            assert_eq!(bad, 0, "{framing:?}");
            assert_eq!(got.len(), messages().len(), "{framing:?}");
            for (g, want) in got.iter().zip(messages()) {
                assert!(same(g, &want), "{framing:?}: {g:?} != {want:?}");
            }
        }
    }

    #[test]
    fn a_json_line_decodes_to_the_fields_it_was_written_from() {
        let alert = sample_alert();
        let line = alert.to_line().unwrap();
        let Ok(DeviceMessage::Alert(back)) = DeviceMessage::decode(Unframed::Line(line.as_bytes()))
        else {
            panic!("not an alert: {line}");
        };
        assert_eq!(back, alert);
        // null (a NaN on the device) reads back as NaN; unknown keys are ignored.
        let s = status()
            .to_line()
            .unwrap()
            .replace("\"paused\"", "\"later\":[1],\"paused\"");
        let Ok(DeviceMessage::Status(back)) = DeviceMessage::decode(Unframed::Line(s.as_bytes()))
        else {
            panic!("not a status: {s}");
        };
        assert!(back.tiles_per_s.is_nan());
        assert_eq!((back.unacked, back.paused), (6, true));
    }

    #[test]
    fn version_1_lines_still_decode_and_a_later_version_s_keys_are_ignored() {
        // What a version 1 device sends: no boot id, no position, no threshold in status.
        let v1 = r#"{"type":"alert","v":1,"device":"tunnel-robot-01","time":"2026-11-28T14:12:19.123Z","seq":41,"frame":1203,"tile":{"index":8,"x":448,"y":224,"w":256,"h":256},"score":2.31,"threshold":0.8,"region":{"x":552,"y":292,"w":64,"h":62,"area":0.061},"model":"3f2a9c0d1e2b"}"#;
        let Ok(DeviceMessage::Alert(a)) = DeviceMessage::decode(Unframed::Line(v1.as_bytes()))
        else {
            panic!("a version 1 alert no longer decodes");
        };
        assert_eq!((a.seq, a.boot, a.position), (41, 0, None));
        let status = r#"{"type":"status","v":1,"device":"d","time":"2026-11-28T14:12:29.000Z","frames":150,"tiles_per_s":360.2,"dropped_frames":0,"skipped_frames":1,"source_failures":0,"alerts":3,"dropped_alerts":0,"unacked":1,"paused":false,"uptime_s":10,"model":"3f2a9c0d1e2b"}"#;
        let Ok(DeviceMessage::Status(s)) = DeviceMessage::decode(Unframed::Line(status.as_bytes()))
        else {
            panic!("a version 1 status no longer decodes");
        };
        assert!(s.threshold.is_nan());
        assert_eq!((s.boot, s.refused_commands), (0, 0));
        // A version 3 line with keys this build does not know: read as far as it knows.
        let later = sample_alert()
            .to_line()
            .unwrap()
            .replace("\"v\":2", "\"v\":3")
            .replace("\"pos\":{", "\"pos\":{\"heading_deg\":12.5,");
        let Ok(DeviceMessage::Alert(a)) = DeviceMessage::decode(Unframed::Line(later.as_bytes()))
        else {
            panic!("{later}");
        };
        assert_eq!(a, sample_alert());
    }

    #[test]
    fn broken_input_is_an_error_never_a_message() {
        let alert = sample_alert().to_line().unwrap();
        let cases = [
            alert.replace("\"seq\":41,", ""),              // a field missing
            alert.replace("\"seq\":41", "\"seq\":\"41\""), // of the wrong type
            alert.replace("robot-7", &"x".repeat(33)),     // a device id too long
            alert.replace("2026", "yesterday"),            // not a time
            alert.replace("\"alert\"", "\"telemetry\""),   // an unknown type
            alert[..alert.len() - 5].to_string(),          // torn
        ];
        for line in cases {
            assert!(
                DeviceMessage::decode(Unframed::Line(line.as_bytes())).is_err(),
                "{line}"
            );
        }
        let mut payload = sample_alert().to_binary();
        payload.truncate(20);
        assert_eq!(
            DeviceMessage::decode(Unframed::Binary(&payload)),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            DeviceMessage::from_binary(&[0x10, 1]),
            Err(DecodeError::UnknownKind(0x10)),
            "a command is not a device message"
        );
        // What a line could not carry is refused in binary too: an id that would need escaping
        // (its JSON line would break) and a time past the year 9999 (RFC 3339 cannot write it).
        let mut quoted = sample_alert();
        quoted.device = id("robot\"7");
        assert_eq!(
            DeviceMessage::from_binary(&quoted.to_binary()),
            Err(DecodeError::Text)
        );
        let mut late = sample_alert();
        late.time = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(
            DeviceMessage::from_binary(&late.to_binary()),
            Err(DecodeError::Time)
        );
    }

    #[test]
    fn the_deframer_is_bounded_and_resynchronises() {
        let good = sample_alert().to_line().unwrap();
        let mut stream = vec![b'x'; 3 * LINE_CAPACITY];
        stream.extend_from_slice(b"\n\r\n  \n");
        stream.extend_from_slice(good.as_bytes());
        stream.extend_from_slice(b"\r\n");
        let (got, bad) = receive(Framing::Json, &stream);
        assert_eq!(
            (got.len(), bad),
            (1, 1),
            "the long line is one error, blanks nothing"
        );

        let mut frames = vec![0x42, 0x17, 0x00, 0x00];
        frames.extend_from_slice(&cobs::encode(&sample_alert().to_binary()).unwrap());
        let (got, bad) = receive(Framing::Cobs, &frames);
        assert_eq!(
            (got.len(), bad),
            (1, 1),
            "noise is one bad frame, empty frames nothing"
        );
    }

    #[test]
    fn commands_encode_and_decode_through_the_same_deframer() {
        let commands = [
            Command::Ack {
                seq: 41,
                boot: Some(7),
            },
            Command::SetThreshold { value: 1.5 },
            Command::GetEvidence { seq: 7 },
        ];
        for framing in [Framing::Json, Framing::Cobs] {
            let mut deframer = Deframer::new(framing);
            let mut got = Vec::new();
            for c in commands {
                for &b in c.encode(framing).iter() {
                    if let Some(u) = deframer.push(b) {
                        got.push(u.map_err(Rejected::from).and_then(Command::decode));
                    }
                }
            }
            assert_eq!(got, commands.map(Ok), "{framing:?}");
        }
    }
}
