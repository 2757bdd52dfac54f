//! NMEA 0183 from a GNSS receiver: the position sentences (`GGA`, `RMC`, any talker: `GP`, `GN`,
//! `GL`, `GA`, `GB`), checksum verified. Bytes arrive in arbitrary pieces from a serial port;
//! [`LineAssembler`] cuts them into sentences with a fixed buffer, so a receiver that sends
//! garbage costs no memory.

/// Longest sentence the standard allows (82 with `$` and CR LF); longer lines are noise.
const MAX_SENTENCE: usize = 82;

/// What a position sentence said.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reading {
    /// A valid fix, degrees (WGS 84).
    Fix {
        /// Degrees north (negative: south).
        lat: f64,
        /// Degrees east (negative: west).
        lon: f64,
    },
    /// The receiver has no fix (GGA quality 0, RMC status `V`): whatever position came before
    /// is no longer current.
    NoFix,
}

/// Why a line is not a usable sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NmeaError {
    /// No `$`, no `*hh` checksum, not ASCII, or too long.
    #[error("not an NMEA sentence")]
    Malformed,
    /// The checksum does not match (noise on the line).
    #[error("bad checksum")]
    Checksum,
    /// A sentence of another kind (satellites, speed...): not a position.
    #[error("not a position sentence")]
    Other,
    /// A position field that does not parse.
    #[error("bad position field")]
    Field,
}

/// Parses one sentence (without its line end): `$GPGGA,...*47`.
pub fn parse(line: &str) -> Result<Reading, NmeaError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.len() > MAX_SENTENCE || !line.is_ascii() {
        return Err(NmeaError::Malformed);
    }
    let body = line.strip_prefix('$').ok_or(NmeaError::Malformed)?;
    let (body, sum) = body.rsplit_once('*').ok_or(NmeaError::Malformed)?;
    let want = u8::from_str_radix(sum, 16).map_err(|_| NmeaError::Malformed)?;
    if sum.len() != 2 {
        return Err(NmeaError::Malformed);
    }
    if body.bytes().fold(0u8, |a, b| a ^ b) != want {
        return Err(NmeaError::Checksum);
    }
    let fields: heapless::Vec<&str, 24> =
        body.split(',').take(24).collect::<heapless::Vec<_, 24>>();
    let kind = fields.first().ok_or(NmeaError::Malformed)?;
    if kind.len() != 5 {
        return Err(NmeaError::Other);
    }
    let field = |i: usize| fields.get(i).copied().unwrap_or("");
    match &kind[2..] {
        // GGA: time, lat, N/S, lon, E/W, quality (0 = no fix), ...
        "GGA" => {
            if matches!(field(6), "" | "0") {
                return Ok(Reading::NoFix);
            }
            fix(field(2), field(3), field(4), field(5))
        }
        // RMC: time, status (A valid, V void), lat, N/S, lon, E/W, ...
        "RMC" => {
            if field(2) != "A" {
                return Ok(Reading::NoFix);
            }
            fix(field(3), field(4), field(5), field(6))
        }
        _ => Err(NmeaError::Other),
    }
}

/// `ddmm.mmmm` / `dddmm.mmmm` and a hemisphere letter as signed degrees.
fn fix(lat: &str, ns: &str, lon: &str, ew: &str) -> Result<Reading, NmeaError> {
    let lat = degrees(lat, 2, 90.0)?;
    let lon = degrees(lon, 3, 180.0)?;
    let lat = match ns {
        "N" => lat,
        "S" => -lat,
        _ => return Err(NmeaError::Field),
    };
    let lon = match ew {
        "E" => lon,
        "W" => -lon,
        _ => return Err(NmeaError::Field),
    };
    Ok(Reading::Fix { lat, lon })
}

fn degrees(text: &str, degree_digits: usize, max: f64) -> Result<f64, NmeaError> {
    let digits_ok =
        text.len() > degree_digits + 1 && text[..degree_digits].bytes().all(|b| b.is_ascii_digit());
    if !digits_ok {
        return Err(NmeaError::Field);
    }
    let whole: f64 = text[..degree_digits]
        .parse()
        .map_err(|_| NmeaError::Field)?;
    let minutes: f64 = text[degree_digits..]
        .parse()
        .map_err(|_| NmeaError::Field)?;
    let value = whole + minutes / 60.0;
    if !(0.0..60.0).contains(&minutes) || value > max {
        return Err(NmeaError::Field);
    }
    Ok(value)
}

/// Cuts a byte stream into lines of at most [`MAX_SENTENCE`] bytes (a longer one is dropped
/// whole), however the bytes are split across reads.
#[derive(Debug, Default)]
pub struct LineAssembler {
    line: heapless::Vec<u8, MAX_SENTENCE>,
    overflow: bool,
}

impl LineAssembler {
    /// Feeds bytes; calls `on_line` with each complete line (without its line end).
    pub fn push(&mut self, bytes: &[u8], mut on_line: impl FnMut(&str)) {
        for &b in bytes {
            match b {
                b'\n' => {
                    if !self.overflow {
                        if let Ok(text) = std::str::from_utf8(&self.line) {
                            on_line(text.trim_end_matches('\r'));
                        }
                    }
                    self.line.clear();
                    self.overflow = false;
                }
                // A `$` starts a sentence: a line cut off by a receiver restart is dropped.
                b'$' => {
                    self.line.clear();
                    self.overflow = false;
                    let _ = self.line.push(b);
                }
                _ => {
                    if self.line.push(b).is_err() {
                        self.overflow = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn near(r: Reading, want_lat: f64, want_lon: f64) {
        match r {
            Reading::Fix { lat, lon } => {
                assert!((lat - want_lat).abs() < 1e-9, "{lat} vs {want_lat}");
                assert!((lon - want_lon).abs() < 1e-9, "{lon} vs {want_lon}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn real_sentences_give_their_positions() {
        // The NMEA standard's own example (Munich) and u-blox's manual (Thalwil, CH).
        near(
            parse("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47").unwrap(),
            48.0 + 7.038 / 60.0,
            11.0 + 31.0 / 60.0,
        );
        near(
            parse("$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r")
                .unwrap(),
            48.0 + 7.038 / 60.0,
            11.0 + 31.0 / 60.0,
        );
        near(
            parse("$GPGGA,092725.00,4717.11399,N,00833.91590,E,1,08,1.01,499.6,M,48.0,M,,*5B")
                .unwrap(),
            47.0 + 17.11399 / 60.0,
            8.0 + 33.91590 / 60.0,
        );
        near(
            parse("$GPRMC,083559.00,A,4717.11437,N,00833.91522,E,0.004,77.52,091202,,,A*57")
                .unwrap(),
            47.0 + 17.11437 / 60.0,
            8.0 + 33.91522 / 60.0,
        );
        // Southern and western hemispheres are negative.
        near(
            parse("$GPGGA,002153.000,3342.6618,S,11751.3858,W,1,10,1.2,27.0,M,-34.2,M,,0000*43")
                .unwrap(),
            -(33.0 + 42.6618 / 60.0),
            -(117.0 + 51.3858 / 60.0),
        );
    }

    #[test]
    fn no_fix_bad_checksums_and_other_sentences_are_told_apart() {
        assert_eq!(parse("$GPGGA,,,,,,0,00,99.99,,,,,,*48"), Ok(Reading::NoFix));
        assert_eq!(parse("$GNRMC,,V,,,,,,,,,,N*4D"), Ok(Reading::NoFix));
        // One character changed in transit.
        assert_eq!(
            parse("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*46"),
            Err(NmeaError::Checksum)
        );
        assert_eq!(
            parse("$GPGGA,123519,4807.038,N,01131.001,E,1,08,0.9,545.4,M,46.9,M,,*47"),
            Err(NmeaError::Checksum)
        );
        assert_eq!(
            parse("$GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00*74"),
            Err(NmeaError::Other)
        );
        for junk in [
            "",
            "$",
            "GPGGA,1*00",
            "$GPGGA*4",
            "$GPGGA*zz",
            "$GPGGA,é*00",
        ] {
            assert_eq!(parse(junk), Err(NmeaError::Malformed), "{junk:?}");
        }
        // Valid checksum around nonsense fields.
        let body = "GPGGA,1,9907.038,N,01131.000,E,1,08,,,,,,,";
        let sum = body.bytes().fold(0u8, |a, b| a ^ b);
        assert_eq!(parse(&format!("${body}*{sum:02X}")), Err(NmeaError::Field));
    }

    #[test]
    fn sentences_split_across_reads_are_reassembled() {
        let stream =
            b"\x00\xffgarbage$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n\
$GPRMC,123519,A,4807.0\r\n$GPGGA,,,,,,0,00,99.99,,,,,,*48\r\n";
        // Every split point and a byte at a time give the same sentences.
        let whole = {
            let mut lines = Vec::new();
            LineAssembler::default().push(stream, |l| lines.push(l.to_string()));
            lines
        };
        assert_eq!(whole.len(), 3);
        assert_eq!(
            parse(&whole[0]).map(|r| matches!(r, Reading::Fix { .. })),
            Ok(true)
        );
        assert!(parse(&whole[1]).is_err(), "a cut sentence");
        assert_eq!(parse(&whole[2]), Ok(Reading::NoFix));
        for split in 0..stream.len() {
            let mut lines = Vec::new();
            let mut a = LineAssembler::default();
            a.push(&stream[..split], |l| lines.push(l.to_string()));
            a.push(&stream[split..], |l| lines.push(l.to_string()));
            assert_eq!(lines, whole, "split at {split}");
        }
        // A line longer than any sentence is dropped whole, and what follows still parses.
        let mut lines = Vec::new();
        let mut a = LineAssembler::default();
        a.push(&[b'x'; 500], |l| lines.push(l.to_string()));
        a.push(b"\n$GPGGA,,,,,,0,00,99.99,,,,,,*48\n", |l| {
            lines.push(l.to_string())
        });
        assert_eq!(lines, ["$GPGGA,,,,,,0,00,99.99,,,,,,*48"]);
    }
}
