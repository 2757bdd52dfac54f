//! COBS framing for radio links: `COBS(payload ++ CRC-32(payload) LE) ++ 0x00`.
//!
//! Consistent Overhead Byte Stuffing removes every zero byte from the frame, so `0x00` marks frame
//! ends unambiguously: a receiver that joins mid-stream or loses bytes resynchronises at the next
//! zero, and the CRC-32 (IEEE, as zlib) rejects what noise corrupted. Fixed capacities, no
//! allocation.

/// Largest payload a frame carries.
pub const MAX_PAYLOAD: usize = 255;

/// Largest encoded frame, terminating zero included: payload + CRC, one code byte per 254 bytes
/// and one more, and the zero.
pub const MAX_FRAME: usize = MAX_PAYLOAD + 4 + (MAX_PAYLOAD + 4) / 254 + 2;

/// One encoded frame.
pub type Frame = heapless::Vec<u8, MAX_FRAME>;

/// One decoded payload.
pub type Payload = heapless::Vec<u8, MAX_PAYLOAD>;

/// Why a frame was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The payload is larger than [`MAX_PAYLOAD`].
    #[error("payload longer than {MAX_PAYLOAD} bytes")]
    TooLong,
    /// The bytes are not valid COBS (a code byte points past the end, or a zero inside).
    #[error("malformed COBS frame")]
    Malformed,
    /// Shorter than a CRC.
    #[error("frame shorter than its CRC")]
    TooShort,
    /// The CRC does not match: corrupted on the way.
    #[error("CRC mismatch")]
    BadCrc,
}

/// CRC-32 (IEEE 802.3, the zlib/PNG polynomial) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Encodes `payload` as one frame, terminating zero included.
pub fn encode(payload: &[u8]) -> Result<Frame, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLong);
    }
    let crc = crc32(payload).to_le_bytes();
    let mut out = Frame::new();
    // Room is guaranteed by MAX_FRAME, so the pushes below cannot fail; map them anyway.
    let full = |_| FrameError::TooLong;
    let mut code_at = 0;
    out.push(0).map_err(full)?;
    let mut code = 1u8;
    for &b in payload.iter().chain(crc.iter()) {
        if b == 0 {
            out[code_at] = code;
            code_at = out.len();
            out.push(0).map_err(full)?;
            code = 1;
        } else {
            out.push(b).map_err(full)?;
            code += 1;
            if code == 0xff {
                out[code_at] = code;
                code_at = out.len();
                out.push(0).map_err(full)?;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    out.push(0).map_err(full)?;
    Ok(out)
}

/// Decodes one frame's bytes (without the terminating zero) and checks its CRC.
pub fn decode(frame: &[u8]) -> Result<Payload, FrameError> {
    let mut raw: heapless::Vec<u8, { MAX_PAYLOAD + 4 }> = heapless::Vec::new();
    let mut i = 0;
    while i < frame.len() {
        let code = frame[i] as usize;
        if code == 0 || i + code > frame.len() {
            return Err(FrameError::Malformed);
        }
        for &b in &frame[i + 1..i + code] {
            if b == 0 {
                return Err(FrameError::Malformed);
            }
            raw.push(b).map_err(|_| FrameError::TooLong)?;
        }
        i += code;
        // A block shorter than 254 data bytes stands for a zero, except at the very end.
        if code < 0xff && i < frame.len() {
            raw.push(0).map_err(|_| FrameError::TooLong)?;
        }
    }
    if raw.len() < 4 {
        return Err(FrameError::TooShort);
    }
    let body = raw.len() - 4;
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&raw[body..]);
    if crc32(&raw[..body]) != u32::from_le_bytes(crc) {
        return Err(FrameError::BadCrc);
    }
    Payload::from_slice(&raw[..body]).map_err(|_| FrameError::TooLong)
}

/// Splits a byte stream at zero bytes into frames; bounded, so noise cannot grow it.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: heapless::Vec<u8, MAX_FRAME>,
    overflowed: bool,
}

impl Splitter {
    /// An empty splitter.
    pub fn new() -> Splitter {
        Splitter::default()
    }

    /// Feeds one byte; at a frame end returns the decoded payload or why it was rejected.
    /// An empty frame (two zeros in a row) is ignored.
    pub fn push(&mut self, byte: u8) -> Option<Result<Payload, FrameError>> {
        if byte != 0 {
            if self.buf.push(byte).is_err() {
                self.overflowed = true;
            }
            return None;
        }
        let result = if self.overflowed {
            Some(Err(FrameError::TooLong))
        } else if self.buf.is_empty() {
            None
        } else {
            Some(decode(&self.buf))
        };
        self.buf.clear();
        self.overflowed = false;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuff(payload_with_crc: &[u8]) -> Vec<u8> {
        // Reference COBS from the definition, for the known vectors below.
        let mut out = vec![0u8];
        let (mut code_at, mut code) = (0, 1u8);
        for &b in payload_with_crc {
            if b == 0 {
                out[code_at] = code;
                code_at = out.len();
                out.push(0);
                code = 1;
            } else {
                out.push(b);
                code += 1;
                if code == 0xff {
                    out[code_at] = code;
                    code_at = out.len();
                    out.push(0);
                    code = 1;
                }
            }
        }
        out[code_at] = code;
        out
    }

    #[test]
    fn known_cobs_vectors() {
        // From Cheshire & Baker's paper / Wikipedia's table (without our CRC).
        assert_eq!(stuff(&[0x00]), [0x01, 0x01]);
        assert_eq!(stuff(&[0x00, 0x00]), [0x01, 0x01, 0x01]);
        assert_eq!(
            stuff(&[0x11, 0x22, 0x00, 0x33]),
            [0x03, 0x11, 0x22, 0x02, 0x33]
        );
        assert_eq!(
            stuff(&[0x11, 0x00, 0x00, 0x00]),
            [0x02, 0x11, 0x01, 0x01, 0x01]
        );
        let run: Vec<u8> = (1..=254).collect();
        let mut want = vec![0xff];
        want.extend(&run);
        want.push(0x01);
        assert_eq!(stuff(&run), want);
        // Our encoder is that plus the CRC and the terminator.
        let payload = [0x11, 0x22, 0x00, 0x33];
        let mut body = payload.to_vec();
        body.extend(crc32(&payload).to_le_bytes());
        let mut want = stuff(&body);
        want.push(0);
        assert_eq!(encode(&payload).unwrap().as_slice(), want.as_slice());
    }

    #[test]
    fn crc_is_the_ieee_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn frames_round_trip_and_contain_no_zero_before_the_end() {
        for len in [0usize, 1, 3, 250, 251, 253, 254, 255] {
            for fill in [0u8, 1, 0xff] {
                let payload: Vec<u8> = (0..len)
                    .map(|i| if fill == 1 { i as u8 } else { fill })
                    .collect();
                let frame = encode(&payload).unwrap();
                assert!(frame.len() <= MAX_FRAME);
                assert_eq!(frame.last(), Some(&0));
                assert!(!frame[..frame.len() - 1].contains(&0));
                let back = decode(&frame[..frame.len() - 1]).unwrap();
                assert_eq!(back.as_slice(), payload.as_slice(), "len {len} fill {fill}");
            }
        }
        assert_eq!(encode(&[1u8; 256]), Err(FrameError::TooLong));
    }

    #[test]
    fn corruption_is_detected_and_the_stream_resynchronises() {
        let good = encode(b"alert 1").unwrap();
        let mut bad = encode(b"alert 2").unwrap();
        bad[3] ^= 0x40;
        let mut stream = vec![0x42, 0x17]; // noise before the first frame
        stream.push(0);
        stream.extend(&bad);
        stream.extend(&good);
        let mut s = Splitter::new();
        let got: Vec<_> = stream.iter().filter_map(|&b| s.push(b)).collect();
        assert_eq!(got.len(), 3);
        assert!(got[0].is_err());
        assert!(matches!(
            got[1],
            Err(FrameError::BadCrc) | Err(FrameError::Malformed)
        ));
        assert_eq!(got[2].as_ref().unwrap().as_slice(), b"alert 1");
        // Endless noise without a zero is cut at the capacity, never grows.
        let mut s = Splitter::new();
        for _ in 0..10_000 {
            assert!(s.push(7).is_none());
        }
        assert_eq!(s.push(0), Some(Err(FrameError::TooLong)));
    }
}
