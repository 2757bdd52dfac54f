//! Signed frames, in the spirit of MAVLink 2 message signing: with a secret key shared by the
//! device and its peers, every message in both directions carries a link id, a 48-bit counter
//! that only grows, and an HMAC-SHA256 tag truncated to 8 bytes. A receiver refuses what is
//! unsigned, forged, or not newer than the last message it accepted from that link (a replay).
//!
//! The tag covers a domain string, the direction (so a device message can never pass as a
//! command), the link id, the counter and the message as it would be sent unsigned:
//! `HMAC-SHA256(key, "edge-inspector sig v1" || direction || link || counter (6 bytes LE) ||
//! message)[..8]`. In a binary payload the signature follows the message and the kind byte's
//! top bit says it is there: `[kind | 0x80][rest][link u8][counter u48 LE][tag 8 bytes]`. A JSON
//! line ends with it as its last key: `...,"sig":"LINK:COUNTER:TAG(16 hex)"}`. Byte by byte in
//! `docs/protocol.md`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::cobs::{Payload, MAX_PAYLOAD};
use crate::message::LINE_CAPACITY;
use crate::unframed::Unframed;

/// Bytes of a link key.
pub const KEY_LEN: usize = 32;
/// Bytes of the truncated tag.
pub const TAG_LEN: usize = 8;
/// Bytes a signature adds to a binary payload: link id, counter, tag.
pub const BINARY_SIGNATURE_LEN: usize = 1 + 6 + TAG_LEN;
/// Bytes a signature adds to a JSON line at most: `,"sig":"255:281474976710655:` + 16 hex + `"`.
pub const JSON_SIGNATURE_LEN: usize = 48;
/// The longest signed JSON line.
pub const SIGNED_LINE_CAPACITY: usize = LINE_CAPACITY + JSON_SIGNATURE_LEN;
/// The kind bit of a signed binary payload.
pub const SIGNED: u8 = 0x80;
/// The largest counter (48 bits).
pub const MAX_COUNTER: u64 = (1 << 48) - 1;
const DOMAIN: &[u8] = b"edge-inspector sig v1";
const JSON_MARK: &str = ",\"sig\":\"";

/// A signed JSON line.
pub type SignedLine = heapless::String<SIGNED_LINE_CAPACITY>;

/// Who sent a message: part of what the tag covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The device (alerts, status, replies, evidence).
    FromDevice,
    /// A peer (commands).
    ToDevice,
}

impl Direction {
    fn byte(self) -> u8 {
        match self {
            Direction::FromDevice => b'D',
            Direction::ToDevice => b'P',
        }
    }
}

/// Why a key file's content is not a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Neither 32 raw bytes nor 64 hexadecimal digits.
    #[error("a link key is 32 bytes, written as 64 hexadecimal digits; found {0} bytes")]
    Length(usize),
    /// 64 characters, not all hexadecimal.
    #[error("a link key is 64 hexadecimal digits; found other characters")]
    NotHex,
    /// All zero: a placeholder, not a secret.
    #[error("the link key is all zeros")]
    Zero,
}

/// Why a received message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// It carries no signature.
    #[error("unsigned message")]
    Unsigned,
    /// Its signature cannot be read.
    #[error("malformed signature")]
    Malformed,
    /// Its tag is not the key's (forged or damaged).
    #[error("bad signature tag (forged, or another key)")]
    BadTag,
    /// Its counter is not newer than the last accepted on its link (a replay, or stale).
    #[error("stale counter {counter} on link {link} (last accepted {last})")]
    Stale {
        /// Its link id.
        link: u8,
        /// Its counter.
        counter: u64,
        /// The last counter accepted on that link.
        last: u64,
    },
}

/// The secret shared by the device and its peers. Never printed.
#[derive(Clone)]
pub struct LinkKey([u8; KEY_LEN]);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(..)")
    }
}

// Configs compare equal when they hold the same key (for tests of config parsing).
impl PartialEq for LinkKey {
    fn eq(&self, other: &LinkKey) -> bool {
        self.0 == other.0
    }
}

impl LinkKey {
    /// A key from a key file's content: 64 hexadecimal digits (surrounding whitespace ignored)
    /// or 32 raw bytes.
    pub fn from_file_content(content: &[u8]) -> Result<LinkKey, KeyError> {
        let text = content.trim_ascii();
        let mut key = [0u8; KEY_LEN];
        if text.len() == 2 * KEY_LEN {
            for (i, pair) in text.chunks(2).enumerate() {
                let digits = std::str::from_utf8(pair).map_err(|_| KeyError::NotHex)?;
                key[i] = u8::from_str_radix(digits, 16).map_err(|_| KeyError::NotHex)?;
            }
        } else if content.len() == KEY_LEN {
            key.copy_from_slice(content);
        } else {
            return Err(KeyError::Length(content.len()));
        }
        if key == [0; KEY_LEN] {
            return Err(KeyError::Zero);
        }
        Ok(LinkKey(key))
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> LinkKey {
        LinkKey(bytes)
    }

    fn mac(&self, direction: Direction, link: u8, counter: u64) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(DOMAIN);
        mac.update(&[direction.byte(), link]);
        mac.update(&counter.to_le_bytes()[..6]);
        mac
    }

    /// The tag of `message` sent in `direction` on `link` with `counter`.
    pub fn tag(&self, direction: Direction, link: u8, counter: u64, message: &[u8]) -> [u8; 8] {
        let mut mac = self.mac(direction, link, counter);
        mac.update(message);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    fn verify(
        &self,
        direction: Direction,
        link: u8,
        counter: u64,
        parts: &[&[u8]],
        tag: &[u8],
    ) -> bool {
        let mut mac = self.mac(direction, link, counter);
        for part in parts {
            mac.update(part);
        }
        // Constant time: the comparison does not tell a forger how many bytes were right.
        mac.verify_truncated_left(tag).is_ok()
    }
}

/// The counter for `time`: tens of microseconds since 2015-01-01 UTC, as MAVLink's timestamp
/// (48 bits last until the year 2104).
pub fn counter_at(time: SystemTime) -> u64 {
    let epoch = UNIX_EPOCH + Duration::from_secs(1_420_070_400);
    time.duration_since(epoch)
        .map_or(0, |d| (d.as_micros() / 10) as u64)
        .min(MAX_COUNTER)
}

/// Signs what one end sends.
#[derive(Debug)]
pub struct Signer {
    key: LinkKey,
    link: u8,
    direction: Direction,
    last: u64,
}

impl Signer {
    /// A signer for messages sent in `direction` on `link`.
    pub fn new(key: LinkKey, link: u8, direction: Direction) -> Signer {
        Signer {
            key,
            link,
            direction,
            last: 0,
        }
    }

    /// The next counter: the clock's, or one more than the last if the clock has not moved on
    /// (or went back).
    fn next(&mut self, time: SystemTime) -> u64 {
        let counter = counter_at(time).max(self.last + 1).min(MAX_COUNTER);
        self.last = counter;
        counter
    }

    /// `payload` (a binary message) signed at `time`.
    pub fn sign_payload(&mut self, payload: &[u8], time: SystemTime) -> Option<Payload> {
        let (&kind, rest) = payload.split_first()?;
        let counter = self.next(time);
        let mut out = Payload::new();
        out.push(kind | SIGNED).ok()?;
        out.extend_from_slice(rest).ok()?;
        out.push(self.link).ok()?;
        out.extend_from_slice(&counter.to_le_bytes()[..6]).ok()?;
        let tag = self.key.tag(self.direction, self.link, counter, &out);
        out.extend_from_slice(&tag).ok()?;
        Some(out)
    }

    /// `line` (one JSON object) signed at `time`: the signature as its last key.
    pub fn sign_line(&mut self, line: &str, time: SystemTime) -> Option<SignedLine> {
        let body = line.strip_suffix('}')?;
        let counter = self.next(time);
        let tag = self
            .key
            .tag(self.direction, self.link, counter, line.as_bytes());
        let mut out = SignedLine::new();
        out.push_str(body).ok()?;
        use std::fmt::Write;
        write!(out, "{JSON_MARK}{}:{counter}:", self.link).ok()?;
        for b in tag {
            write!(out, "{b:02x}").ok()?;
        }
        out.push_str("\"}").ok()?;
        Some(out)
    }
}

/// Checks what one end receives, and keeps the last counter accepted per link.
#[derive(Debug)]
pub struct Verifier {
    key: LinkKey,
    direction: Direction,
    last: [u64; 256],
    floor: u64,
    line: heapless::Vec<u8, SIGNED_LINE_CAPACITY>,
    payload: heapless::Vec<u8, MAX_PAYLOAD>,
}

impl Verifier {
    /// A verifier of messages sent in `direction`; counters at or below `floor` are refused on
    /// every link (e.g. the counter of a minute ago, so a restart does not reopen the past).
    pub fn new(key: LinkKey, direction: Direction, floor: u64) -> Verifier {
        Verifier {
            key,
            direction,
            last: [0; 256],
            floor,
            line: heapless::Vec::new(),
            payload: heapless::Vec::new(),
        }
    }

    fn accept(&mut self, link: u8, counter: u64) -> Result<(), SignatureError> {
        let last = self.last[link as usize].max(self.floor);
        if counter <= last {
            return Err(SignatureError::Stale {
                link,
                counter,
                last,
            });
        }
        self.last[link as usize] = counter;
        Ok(())
    }

    /// Checks a received message; returns it as it was before signing.
    pub fn verify(&mut self, unframed: Unframed<'_>) -> Result<Unframed<'_>, SignatureError> {
        match unframed {
            Unframed::Binary(payload) => {
                let (&kind, _) = payload.split_first().ok_or(SignatureError::Unsigned)?;
                if kind & SIGNED == 0 {
                    return Err(SignatureError::Unsigned);
                }
                if payload.len() < 1 + BINARY_SIGNATURE_LEN {
                    return Err(SignatureError::Malformed);
                }
                let (signed, tag) = payload.split_at(payload.len() - TAG_LEN);
                let link = signed[signed.len() - 7];
                let mut counter = [0u8; 8];
                counter[..6].copy_from_slice(&signed[signed.len() - 6..]);
                let counter = u64::from_le_bytes(counter);
                if !self
                    .key
                    .verify(self.direction, link, counter, &[signed], tag)
                {
                    return Err(SignatureError::BadTag);
                }
                self.accept(link, counter)?;
                self.payload.clear();
                let message = &signed[..signed.len() - 7];
                let _ = self.payload.push(kind & !SIGNED);
                let _ = self.payload.extend_from_slice(&message[1..]);
                Ok(Unframed::Binary(&self.payload))
            }
            Unframed::Line(line) => {
                let text = std::str::from_utf8(line).map_err(|_| SignatureError::Malformed)?;
                let at = text.rfind(JSON_MARK).ok_or(SignatureError::Unsigned)?;
                let sig = text[at + JSON_MARK.len()..]
                    .strip_suffix("\"}")
                    .ok_or(SignatureError::Malformed)?;
                let mut fields = sig.split(':');
                let (Some(link), Some(counter), Some(hex), None) =
                    (fields.next(), fields.next(), fields.next(), fields.next())
                else {
                    return Err(SignatureError::Malformed);
                };
                let link: u8 = link.parse().map_err(|_| SignatureError::Malformed)?;
                let counter: u64 = counter.parse().map_err(|_| SignatureError::Malformed)?;
                // ASCII hex digits only: slicing other text by byte could split a character.
                if hex.len() != 2 * TAG_LEN
                    || !hex.bytes().all(|b| b.is_ascii_hexdigit())
                    || counter > MAX_COUNTER
                {
                    return Err(SignatureError::Malformed);
                }
                let mut tag = [0u8; TAG_LEN];
                for (i, t) in tag.iter_mut().enumerate() {
                    *t = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                        .map_err(|_| SignatureError::Malformed)?;
                }
                let body = &text[..at];
                if !self.key.verify(
                    self.direction,
                    link,
                    counter,
                    &[body.as_bytes(), b"}"],
                    &tag,
                ) {
                    return Err(SignatureError::BadTag);
                }
                self.accept(link, counter)?;
                self.line.clear();
                let _ = self.line.extend_from_slice(body.as_bytes());
                let _ = self.line.push(b'}');
                Ok(Unframed::Line(&self.line))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> LinkKey {
        LinkKey::from_bytes([byte; KEY_LEN])
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    #[test]
    fn signed_lines_and_payloads_verify_and_come_back_unsigned() {
        let mut signer = Signer::new(key(7), 3, Direction::ToDevice);
        let mut verifier = Verifier::new(key(7), Direction::ToDevice, 0);
        let line = r#"{"type":"ack","seq":41}"#;
        let signed = signer.sign_line(line, at(0)).unwrap();
        assert!(
            signed.starts_with(r#"{"type":"ack","seq":41,"sig":"3:"#),
            "{signed}"
        );
        let got = verifier.verify(Unframed::Line(signed.as_bytes())).unwrap();
        assert_eq!(got, Unframed::Line(line.as_bytes()));
        let payload = [0x11u8, 1, 2, 3];
        let signed = signer.sign_payload(&payload, at(1)).unwrap();
        assert_eq!(signed[0], 0x91);
        assert_eq!(signed.len(), payload.len() + BINARY_SIGNATURE_LEN);
        let got = verifier.verify(Unframed::Binary(&signed)).unwrap();
        assert_eq!(got, Unframed::Binary(&payload));
    }

    #[test]
    fn forged_replayed_unsigned_and_reflected_messages_are_refused() {
        let mut signer = Signer::new(key(7), 1, Direction::ToDevice);
        let mut verifier = Verifier::new(key(7), Direction::ToDevice, 0);
        let line = r#"{"type":"pause"}"#;
        let first = signer.sign_line(line, at(5)).unwrap();
        assert!(verifier.verify(Unframed::Line(first.as_bytes())).is_ok());
        // The same bytes again: a replay.
        assert!(matches!(
            verifier.verify(Unframed::Line(first.as_bytes())),
            Err(SignatureError::Stale { link: 1, .. })
        ));
        // The clock went back: the counter still grows.
        let second = signer.sign_line(line, at(0)).unwrap();
        assert!(verifier.verify(Unframed::Line(second.as_bytes())).is_ok());
        // Another command under the same signature.
        let third = signer.sign_line(line, at(9)).unwrap();
        let forged = third.replace("pause", "resum");
        assert_eq!(
            verifier.verify(Unframed::Line(forged.as_bytes())),
            Err(SignatureError::BadTag)
        );
        // Signed with another key.
        let mut stranger = Signer::new(key(8), 1, Direction::ToDevice);
        let theirs = stranger.sign_line(line, at(20)).unwrap();
        assert_eq!(
            verifier.verify(Unframed::Line(theirs.as_bytes())),
            Err(SignatureError::BadTag)
        );
        // A device message played back as a command.
        let mut device = Signer::new(key(7), 1, Direction::FromDevice);
        let reflected = device.sign_line(line, at(30)).unwrap();
        assert_eq!(
            verifier.verify(Unframed::Line(reflected.as_bytes())),
            Err(SignatureError::BadTag)
        );
        assert_eq!(
            verifier.verify(Unframed::Line(line.as_bytes())),
            Err(SignatureError::Unsigned)
        );
        // A tag of 16 bytes that are not 16 hex digits (multi-byte characters) is malformed.
        let odd = r#"{"type":"pause","sig":"1:99:aéééééééb"}"#;
        assert_eq!(
            verifier.verify(Unframed::Line(odd.as_bytes())),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verifier.verify(Unframed::Binary(&[0x11, 1])),
            Err(SignatureError::Unsigned)
        );
        let mut payload = signer.sign_payload(&[0x12, 9, 9], at(40)).unwrap();
        let last = payload.len() - 1;
        payload[last] ^= 1;
        assert_eq!(
            verifier.verify(Unframed::Binary(&payload)),
            Err(SignatureError::BadTag)
        );
        // Counters below the floor (before a restart) are refused on every link.
        let mut fresh = Verifier::new(key(7), Direction::ToDevice, counter_at(at(35)));
        let old = Signer::new(key(7), 9, Direction::ToDevice).sign_line(line, at(30));
        assert!(matches!(
            fresh.verify(Unframed::Line(old.unwrap().as_bytes())),
            Err(SignatureError::Stale { link: 9, .. })
        ));
    }

    #[test]
    fn the_tag_is_hmac_sha256_of_the_documented_bytes() {
        // Reference: Python's hmac.new(bytes(range(32)), b"edge-inspector sig v1" + b"P" +
        // bytes([2]) + (123456789).to_bytes(6, "little") + b'{"type":"get_status"}',
        // "sha256").hexdigest()[:16]
        let key = LinkKey::from_bytes(std::array::from_fn(|i| i as u8));
        let tag = key.tag(
            Direction::ToDevice,
            2,
            123_456_789,
            br#"{"type":"get_status"}"#,
        );
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, REFERENCE_TAG);
    }

    const REFERENCE_TAG: &str = "d2e3b6dc2e0791e6";

    #[test]
    fn key_files_hold_64_hex_digits_or_32_bytes() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
        assert!(LinkKey::from_file_content(hex.as_bytes()).is_ok());
        assert!(LinkKey::from_file_content(&[5u8; 32]).is_ok());
        assert_eq!(
            LinkKey::from_file_content(b"short").unwrap_err(),
            KeyError::Length(5)
        );
        let bad = "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        assert_eq!(
            LinkKey::from_file_content(bad.as_bytes()).unwrap_err(),
            KeyError::NotHex
        );
        assert_eq!(
            LinkKey::from_file_content(&[0u8; 32]).unwrap_err(),
            KeyError::Zero
        );
        assert_eq!(format!("{:?}", key(1)), "LinkKey(..)");
    }
}
