//! The journal's file format.
//!
//! An 8-byte file magic, then records. Version 2 (`EIJRNL02`, written now):
//! `[EE 4A 52 02][length u32 LE][CRC-32 of length and body, u32 LE][body]`: the record magic lets
//! replay find the next record after a damaged one, the CRC covers the length so a damaged
//! length is caught too. Version 1 (`EIJRNL01`, read for upgrade): `[length][CRC-32 of
//! body][body]`, no resynchronisation possible.
//!
//! A body is an alert (`A` + its binary payload), an acknowledgement (`K` + seq), a floor (`B` +
//! a sequence number no alert below which may be numbered again: written before a block of
//! numbers is used, and at compaction) or a clean close (`C` + the next sequence number: the
//! reservations before it were not used), or a threshold the peer set (`T` + the threshold, the
//! threshold the config gave when it was set, and the model id: restored at the next start of
//! the same model and config).

use super::super::message::{Alert, ModelId};

/// File magic of the format written now.
pub const FILE_MAGIC: &[u8; 8] = b"EIJRNL02";
/// File magic of the first format (read, then rewritten as version 2).
pub const FILE_MAGIC_V1: &[u8; 8] = b"EIJRNL01";
/// Bytes of the file magic.
pub const HEADER: u64 = 8;
const RECORD_MAGIC: [u8; 4] = [0xEE, 0x4A, 0x52, 0x02];
// No real record is longer; a longer length field is damage.
const MAX_BODY: u32 = 1024;

/// Kind byte of an alert record.
pub const ALERT: u8 = b'A';
/// Kind byte of an acknowledgement record.
pub const ACK: u8 = b'K';
/// Kind byte of a sequence floor record.
pub const FLOOR: u8 = b'B';
/// Kind byte of a clean close record.
pub const CLOSE: u8 = b'C';
/// Kind byte of a threshold record.
pub const THRESHOLD: u8 = b'T';

/// Bytes a record of a `body`-byte body takes in the current format.
pub fn record_len(body: usize) -> u64 {
    12 + body as u64
}

/// One record in the current format.
pub fn encode(body: &[u8]) -> heapless::Vec<u8, 300> {
    let mut out = heapless::Vec::new();
    // Bodies are at most 1 + 135 bytes: everything fits.
    let len = (body.len() as u32).to_le_bytes();
    let _ = out.extend_from_slice(&RECORD_MAGIC);
    let _ = out.extend_from_slice(&len);
    let _ = out.extend_from_slice(&crc(&len, body).to_le_bytes());
    let _ = out.extend_from_slice(body);
    out
}

fn crc(len: &[u8; 4], body: &[u8]) -> u32 {
    let mut both = heapless::Vec::<u8, 1100>::new();
    let _ = both.extend_from_slice(len);
    let _ = both.extend_from_slice(body);
    inspect_protocol::cobs::crc32(&both)
}

/// The body of an alert record.
pub fn alert_body(alert: &Alert) -> heapless::Vec<u8, 160> {
    let mut body = heapless::Vec::new();
    let _ = body.push(ALERT);
    let _ = body.extend_from_slice(&alert.to_binary());
    body
}

/// The body of a record carrying a sequence number.
pub fn seq_body(kind: u8, seq: u64) -> [u8; 9] {
    let mut b = [kind; 9];
    b[1..].copy_from_slice(&seq.to_le_bytes());
    b
}

/// A threshold the peer set, as journalled.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerThreshold {
    /// The threshold set.
    pub value: f32,
    /// The threshold the config (or bundle) gave at the time: a different one at the next start
    /// means the operator changed it since, and theirs wins.
    pub configured: f32,
    /// The model it was set for.
    pub model: ModelId,
}

/// The body of a threshold record.
pub fn threshold_body(t: &PeerThreshold) -> heapless::Vec<u8, 32> {
    let mut body = heapless::Vec::new();
    // 1 + 4 + 4 + 1 + at most 12 bytes: fits.
    let _ = body.push(THRESHOLD);
    let _ = body.extend_from_slice(&t.value.to_le_bytes());
    let _ = body.extend_from_slice(&t.configured.to_le_bytes());
    let _ = body.push(t.model.len() as u8);
    let _ = body.extend_from_slice(t.model.as_bytes());
    body
}

fn decode_threshold(body: &[u8]) -> Option<PeerThreshold> {
    let f32_at = |at: usize| Some(f32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?));
    let len = *body.get(9)? as usize;
    let model = std::str::from_utf8(body.get(10..10 + len)?).ok()?;
    (body.len() == 10 + len).then_some(())?;
    Some(PeerThreshold {
        value: f32_at(1)?,
        configured: f32_at(5)?,
        model: ModelId::try_from(model).ok()?,
    })
}

/// A record body, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// An alert journalled for delivery.
    Alert(Alert),
    /// Alert `seq` was delivered.
    Ack(u64),
    /// No alert below this sequence number may be numbered again.
    Floor(u64),
    /// Closed cleanly; the next alert gets this sequence number.
    Close(u64),
    /// The peer set the threshold.
    Threshold(PeerThreshold),
}

impl Record {
    /// Decodes a body; `None` if it is not one.
    pub fn decode(body: &[u8]) -> Option<Record> {
        let seq = || Some(u64::from_le_bytes(body.get(1..9)?.try_into().ok()?));
        match *body.first()? {
            ALERT => Alert::from_binary(&body[1..]).ok().map(Record::Alert),
            ACK if body.len() == 9 => seq().map(Record::Ack),
            FLOOR if body.len() == 9 => seq().map(Record::Floor),
            CLOSE if body.len() == 9 => seq().map(Record::Close),
            THRESHOLD => decode_threshold(body).map(Record::Threshold),
            _ => None,
        }
    }
}

/// What replaying a file found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replayed {
    /// The records that decode, in file order.
    pub records: Vec<Record>,
    /// End of the last good record: what follows is a torn tail.
    pub valid_end: u64,
    /// Bytes skipped between good records (damage replay resynchronised past).
    pub skipped: u64,
    /// Damaged stretches skipped.
    pub damaged_stretches: usize,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The record at `at` and its end, if a whole, intact, decodable one starts there.
fn record_at(bytes: &[u8], at: usize, version: u8) -> Option<(Record, usize)> {
    let v2 = version != 1;
    let head = if v2 { RECORD_MAGIC.len() } else { 0 };
    if v2 && bytes.get(at..at + head)? != RECORD_MAGIC {
        return None;
    }
    let len = u32_at(bytes, at + head)?;
    let want = u32_at(bytes, at + head + 4)?;
    if len == 0 || len > MAX_BODY {
        return None;
    }
    let body_at = at + head + 8;
    let end = body_at + len as usize;
    let body = bytes.get(body_at..end)?;
    let got = if v2 {
        crc(&len.to_le_bytes(), body)
    } else {
        inspect_protocol::cobs::crc32(body)
    };
    if got != want {
        return None;
    }
    Record::decode(body).map(|record| (record, end))
}

/// Replays a journal file whose magic says `version` (1 or 2): every good record in order;
/// version 2 resynchronises past damage at the next record magic that starts a good record.
pub fn replay(bytes: &[u8], version: u8) -> Replayed {
    let mut out = Replayed {
        valid_end: HEADER,
        ..Replayed::default()
    };
    let mut at = HEADER as usize;
    while at < bytes.len() {
        if let Some((record, end)) = record_at(bytes, at, version) {
            out.records.push(record);
            out.valid_end = end as u64;
            at = end;
            continue;
        }
        if version == 1 {
            break;
        }
        // Damage: look for the next good record.
        let next = (at + 1..bytes.len().saturating_sub(3))
            .find(|&i| bytes[i..i + 4] == RECORD_MAGIC && record_at(bytes, i, version).is_some());
        match next {
            Some(i) => {
                out.skipped += (i - at) as u64;
                out.damaged_stretches += 1;
                at = i;
            }
            None => break,
        }
    }
    out
}
