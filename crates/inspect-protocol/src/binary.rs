//! Fixed-layout binary encodings of the protocol's messages (the payloads of COBS frames, and the
//! alert records of the journal). Little-endian; layouts in `docs/protocol.md`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::cobs::{Payload, MAX_PAYLOAD};
use super::message::{is_plain_id, Alert, DeviceId, ModelId, Status, PROTOCOL_VERSION};
use crate::PixelBox;

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
    /// A version this build does not speak.
    #[error("protocol version {0} not supported (this build speaks {PROTOCOL_VERSION})")]
    Version(u8),
    /// A string field that is not UTF-8 or too long, or an id with other than plain characters.
    #[error("bad text field")]
    Text,
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
        w.bytes(&[kind, PROTOCOL_VERSION as u8]);
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
        if u32::from(v) != PROTOCOL_VERSION {
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
    /// The alert's binary payload (at most 103 bytes). Frame coordinates are sent as u16
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
        w.0
    }

    /// Decodes [`Alert::to_binary`]'s payload.
    pub fn from_binary(payload: &[u8]) -> Result<Alert, DecodeError> {
        let mut r = Reader::open(payload, kind::ALERT)?;
        Ok(Alert {
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
        })
    }
}

impl Status {
    /// The status report's binary payload (at most 125 bytes).
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
        w.0
    }

    /// Decodes [`Status::to_binary`]'s payload.
    pub fn from_binary(payload: &[u8]) -> Result<Status, DecodeError> {
        let mut r = Reader::open(payload, kind::STATUS)?;
        Ok(Status {
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
        })
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
        assert_eq!(bytes.len(), 2 + 8 + 8 + 8 + 2 + 8 + 4 + 4 + 8 + 4 + 16 + 13);
        assert_eq!(Alert::from_binary(&bytes).unwrap(), a);
        let mut wide = a.clone();
        wide.device = id(&"d".repeat(32));
        assert!(wide.to_binary().len() <= 103);
        // Every truncation is an error, never a panic or a wrong alert.
        for n in 0..bytes.len() {
            assert!(Alert::from_binary(&bytes[..n]).is_err(), "prefix {n}");
        }
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
        };
        let bytes = s.to_binary();
        assert!(bytes.len() <= 125);
        assert_eq!(Status::from_binary(&bytes).unwrap(), s);
        assert_eq!(
            Status::from_binary(&alert().to_binary()),
            Err(DecodeError::UnknownKind(kind::ALERT))
        );
    }
}
