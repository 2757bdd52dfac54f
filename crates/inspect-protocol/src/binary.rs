//! Fixed-layout binary encodings of the protocol's messages (the payloads of COBS frames, and the
//! alert records of the journal). Little-endian; layouts in `docs/protocol.md`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::cobs::{Payload, MAX_PAYLOAD};
use super::message::{is_plain_id, Alert, DeviceId, ModelId, Status};
use crate::position::{Fix, Position};
use crate::PixelBox;

/// The layout version, the second byte of every payload. Later protocol versions append fields
/// after a layout's own (see [`EXTENSION_V2`]), which readers of this layout skip: the byte
/// changes only when a layout breaks.
pub const LAYOUT_VERSION: u8 = 1;

/// First byte of the fields protocol version 2 appends to alerts and status reports (boot id,
/// position; for status also threshold and refused commands). Absent in version 1 payloads.
pub const EXTENSION_V2: u8 = 2;

/// 10000-01-01T00:00:00Z in milliseconds since 1970: the first time RFC 3339 cannot write.
const LAST_RFC3339_MS: u64 = 253_402_300_800_000;

/// Message kinds, the first byte of every payload.
pub mod kind {
    /// Device -> peer: an alert.
    pub const ALERT: u8 = 0x01;
    /// Device -> peer: a status report.
    pub const STATUS: u8 = 0x02;
    /// Peer -> device: acknowledge an alert by sequence number.
    pub const ACK: u8 = 0x10;
    /// Peer -> device: ask for a status report now.
    pub const GET_STATUS: u8 = 0x11;
    /// Peer -> device: set the alert threshold.
    pub const SET_THRESHOLD: u8 = 0x12;
    /// Peer -> device: stop inspecting (frames are still taken and discarded).
    pub const PAUSE: u8 = 0x13;
    /// Peer -> device: inspect again.
    pub const RESUME: u8 = 0x14;
    /// Peer -> device: send the evidence of an alert.
    pub const GET_EVIDENCE: u8 = 0x15;
    /// Device -> peer: the answer to a command.
    pub const REPLY: u8 = 0x20;
    /// Device -> peer: one chunk of an evidence file.
    pub const EVIDENCE: u8 = 0x21;
}

/// A payload that does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Empty, or shorter than its kind's layout.
    #[error("message too short for its kind")]
    Truncated,
    /// A kind this version does not know.
    #[error("unknown message kind 0x{0:02x}")]
    UnknownKind(u8),
    /// A layout version this build does not speak.
    #[error("binary layout version {0} not supported (this build speaks {LAYOUT_VERSION})")]
    Version(u8),
    /// A string field that is not UTF-8 or too long, or an id with other than plain characters.
    #[error("bad text field")]
    Text,
    /// A position of an unknown kind.
    #[error("unknown position kind")]
    Position,
    /// A time past the year 9999 (RFC 3339 cannot write it).
    #[error("time out of range")]
    Time,
    /// A JSON line that is not JSON, names an unknown type, or lacks a field (or has one of
    /// the wrong type).
    #[error("not a protocol line: invalid JSON, unknown type, or a field missing or mistyped")]
    Json,
}

/// Appends fields to a payload; the layouts are sized so they always fit.
struct Writer(Payload);

impl Writer {
    fn new(kind: u8) -> Writer {
        let mut w = Writer(Payload::new());
        w.bytes(&[kind, LAYOUT_VERSION]);
        w
    }
    fn bytes(&mut self, b: &[u8]) {
        // Every layout is far below MAX_PAYLOAD (checked by a test); never truncates in practice.
        let room = MAX_PAYLOAD - self.0.len();
        let _ = self.0.extend_from_slice(&b[..b.len().min(room)]);
    }
    fn u16(&mut self, v: u32) {
        self.bytes(&(v.min(u16::MAX as u32) as u16).to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.bytes(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.bytes(&v.to_le_bytes());
    }
    /// Tag (0 none, 1 chainage, 2 GNSS), two numbers, age and staleness: 22 bytes.
    fn position(&mut self, position: &Option<Position>) {
        let (tag, a, b, age, stale) = match position.map(Position::sanitised) {
            None => (0, 0.0, 0.0, 0, false),
            Some(p) => match p.fix {
                Fix::Chainage { metres } => (1, metres, 0.0, p.age_ms, p.stale),
                Fix::Gnss { lat, lon } => (2, lat, lon, p.age_ms, p.stale),
            },
        };
        self.bytes(&[tag]);
        self.f64(a);
        self.f64(b);
        self.bytes(&age.to_le_bytes());
        self.bytes(&[u8::from(stale)]);
    }
    fn pixel_box(&mut self, b: &PixelBox) {
        for v in [b.x, b.y, b.width, b.height] {
            self.u16(v);
        }
    }
    fn text(&mut self, s: &str) {
        self.bytes(&[s.len() as u8]);
        self.bytes(s.as_bytes());
    }
    fn time(&mut self, t: SystemTime) {
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        self.u64(ms.min(u64::MAX as u128) as u64);
    }
}

/// Reads fields of a payload, failing on truncation.
pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Checks kind and version and returns a reader over the rest.
    pub(crate) fn open(payload: &'a [u8], want: u8) -> Result<Reader<'a>, DecodeError> {
        let mut r = Reader(payload);
        let k = r.u8()?;
        if k != want {
            return Err(DecodeError::UnknownKind(k));
        }
        let v = r.u8()?;
        if v != LAYOUT_VERSION {
            return Err(DecodeError::Version(v));
        }
        Ok(r)
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(b))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    pub(crate) fn f32(&mut self) -> Result<f32, DecodeError> {
        Ok(f32::from_bits(self.u32()?))
    }
    fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }
    /// Whether protocol version 2's fields follow (a version 1 payload ends here; a later
    /// version's extension starts with a higher byte and begins with version 2's fields).
    fn has_v2(&mut self) -> Result<bool, DecodeError> {
        if self.0.is_empty() {
            return Ok(false);
        }
        Ok(self.u8()? >= EXTENSION_V2)
    }
    fn position(&mut self) -> Result<Option<Position>, DecodeError> {
        let tag = self.u8()?;
        let (a, b) = (self.f64()?, self.f64()?);
        let age_ms = self.u32()?;
        let stale = self.u8()? != 0;
        let fix = match tag {
            0 => return Ok(None),
            1 => Fix::Chainage { metres: a },
            2 => Fix::Gnss { lat: a, lon: b },
            _ => return Err(DecodeError::Position),
        };
        Ok(Some(Position { fix, age_ms, stale }.sanitised()))
    }
    fn pixel_box(&mut self) -> Result<PixelBox, DecodeError> {
        Ok(PixelBox {
            x: self.u16()?.into(),
            y: self.u16()?.into(),
            width: self.u16()?.into(),
            height: self.u16()?.into(),
        })
    }
    fn text<const N: usize>(&mut self) -> Result<heapless::String<N>, DecodeError> {
        let len = self.u8()? as usize;
        let s = std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::Text)?;
        heapless::String::try_from(s).map_err(|_| DecodeError::Text)
    }
    fn id<const N: usize>(&mut self) -> Result<heapless::String<N>, DecodeError> {
        let id = self.text::<N>()?;
        if !is_plain_id(&id) {
            return Err(DecodeError::Text);
        }
        Ok(id)
    }
    fn time(&mut self) -> Result<SystemTime, DecodeError> {
        let ms = self.u64()?;
        if ms >= LAST_RFC3339_MS {
            return Err(DecodeError::Time);
        }
        Ok(UNIX_EPOCH + Duration::from_millis(ms))
    }
}

impl Alert {
    /// The alert's binary payload (at most 135 bytes). Frame coordinates are sent as u16
    /// (frames are at most 4096 px, see the config); times in milliseconds since 1970.
    pub fn to_binary(&self) -> Payload {
        let mut w = Writer::new(kind::ALERT);
        w.u64(self.seq);
        w.u64(self.frame);
        w.time(self.time);
        w.u16(self.tile_index.min(u16::MAX as usize) as u32);
        w.pixel_box(&self.tile);
        w.f32(self.score);
        w.f32(self.threshold);
        w.pixel_box(&self.region);
        w.f32(self.area_fraction);
        w.text(&self.device);
        w.text(&self.model);
        w.bytes(&[EXTENSION_V2]);
        w.u64(self.boot);
        w.position(&self.position);
        w.0
    }

    /// Decodes [`Alert::to_binary`]'s payload (and a version 1 alert's, without boot id and
    /// position).
    pub fn from_binary(payload: &[u8]) -> Result<Alert, DecodeError> {
        let mut r = Reader::open(payload, kind::ALERT)?;
        let mut alert = Alert {
            seq: r.u64()?,
            frame: r.u64()?,
            time: r.time()?,
            tile_index: r.u16()?.into(),
            tile: r.pixel_box()?,
            score: r.f32()?,
            threshold: r.f32()?,
            region: r.pixel_box()?,
            area_fraction: r.f32()?,
            device: r.id::<32>()? as DeviceId,
            model: r.id::<12>()? as ModelId,
            boot: 0,
            position: None,
        };
        if r.has_v2()? {
            alert.boot = r.u64()?;
            alert.position = r.position()?;
        }
        Ok(alert)
    }
}

impl Status {
    /// The status report's binary payload (at most 146 bytes).
    pub fn to_binary(&self) -> Payload {
        let mut w = Writer::new(kind::STATUS);
        w.time(self.time);
        w.u64(self.frames);
        w.f32(self.tiles_per_s);
        w.u64(self.dropped_frames);
        w.u64(self.skipped_frames);
        w.u64(self.source_failures);
        w.u64(self.alerts);
        w.u64(self.dropped_alerts);
        w.u64(self.unacked);
        w.bytes(&[self.paused as u8]);
        w.u64(self.uptime_s);
        w.text(&self.device);
        w.text(&self.model);
        w.bytes(&[EXTENSION_V2]);
        w.u64(self.boot);
        w.f32(self.threshold);
        w.u64(self.refused_commands);
        w.0
    }

    /// Decodes [`Status::to_binary`]'s payload (and a version 1 status's).
    pub fn from_binary(payload: &[u8]) -> Result<Status, DecodeError> {
        let mut r = Reader::open(payload, kind::STATUS)?;
        let mut status = Status {
            time: r.time()?,
            frames: r.u64()?,
            tiles_per_s: r.f32()?,
            dropped_frames: r.u64()?,
            skipped_frames: r.u64()?,
            source_failures: r.u64()?,
            alerts: r.u64()?,
            dropped_alerts: r.u64()?,
            unacked: r.u64()?,
            paused: r.u8()? != 0,
            uptime_s: r.u64()?,
            device: r.id()?,
            model: r.id()?,
            boot: 0,
            threshold: f32::NAN,
            refused_commands: 0,
        };
        if r.has_v2()? {
            status.boot = r.u64()?;
            status.threshold = r.f32()?;
            status.refused_commands = r.u64()?;
        }
        Ok(status)
    }
}

/// Payload of a peer command or device reply: kind, version, then `fields`.
pub(crate) fn message(kind: u8, fields: &[&[u8]]) -> Payload {
    let mut w = Writer::new(kind);
    for f in fields {
        w.bytes(f);
    }
    w.0
}

/// Writes a short text field (length byte + bytes, cut at 200 bytes on a char boundary).
pub(crate) fn push_text(payload: &mut Payload, s: &str) {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut w = Writer(std::mem::take(payload));
    w.text(&s[..end]);
    *payload = w.0;
}

/// Reads a text field written by [`push_text`].
pub(crate) fn read_text(r: &mut Reader<'_>) -> Result<heapless::String<200>, DecodeError> {
    r.text()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{id, sample_alert};

    fn alert() -> Alert {
        Alert {
            device: id("tunnel-robot-01"),
            ..sample_alert()
        }
    }

    #[test]
    fn alert_round_trips_and_fits_a_frame() {
        let a = alert();
        let bytes = a.to_binary();
        assert_eq!(bytes[0], kind::ALERT);
        let v1 = 2 + 8 + 8 + 8 + 2 + 8 + 4 + 4 + 8 + 4 + 16 + 13;
        assert_eq!(bytes.len(), v1 + 1 + 8 + 22);
        assert_eq!(Alert::from_binary(&bytes).unwrap(), a);
        let mut wide = a.clone();
        wide.device = id(&"d".repeat(32));
        assert!(wide.to_binary().len() <= 135);
        // Every truncation is an error, never a panic or a wrong alert, except the version 1
        // layout, which decodes as a version 1 device sent it: no boot id, no position.
        for n in 0..bytes.len() {
            let decoded = Alert::from_binary(&bytes[..n]);
            if n == v1 {
                let old = Alert {
                    boot: 0,
                    position: None,
                    ..a.clone()
                };
                assert_eq!(decoded, Ok(old));
            } else {
                assert!(decoded.is_err(), "prefix {n}");
            }
        }
        // A later version's extension: its first fields are version 2's, the rest is skipped.
        let mut later = bytes.clone();
        later[v1] = 3;
        later.extend_from_slice(&[0xAB; 7]).unwrap();
        assert_eq!(Alert::from_binary(&later).unwrap(), a);
        let mut odd = bytes.clone();
        odd[v1 + 9] = 7;
        assert_eq!(Alert::from_binary(&odd), Err(DecodeError::Position));
        let mut future = bytes.clone();
        future[1] = 9;
        assert_eq!(Alert::from_binary(&future), Err(DecodeError::Version(9)));
    }

    #[test]
    fn status_round_trips() {
        let s = Status {
            device: id("d-1"),
            time: UNIX_EPOCH + Duration::from_millis(5),
            frames: 150,
            tiles_per_s: 360.25,
            dropped_frames: 1,
            skipped_frames: 2,
            source_failures: 6,
            alerts: 3,
            dropped_alerts: 4,
            unacked: 5,
            paused: true,
            uptime_s: 10,
            model: id("abc"),
            boot: 0xfeed_beef_0000_0001,
            threshold: 1.25,
            refused_commands: 9,
        };
        let bytes = s.to_binary();
        let wide = Status {
            device: id(&"d".repeat(32)),
            model: id("0123456789ab"),
            ..s.clone()
        };
        assert_eq!(wide.to_binary().len(), 146);
        assert_eq!(Status::from_binary(&bytes).unwrap(), s);
        // A version 1 status: the fields it lacks read as unknown.
        let v1 = Status::from_binary(&bytes[..bytes.len() - 1 - 8 - 4 - 8]).unwrap();
        assert!(v1.threshold.is_nan());
        assert_eq!((v1.boot, v1.refused_commands), (0, 0));
        assert_eq!(
            Status::from_binary(&alert().to_binary()),
            Err(DecodeError::UnknownKind(kind::ALERT))
        );
    }
}
