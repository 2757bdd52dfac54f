//! `positions.csv`: the position of each frame of a folder, as `[record]` writes it beside the
//! frames, and as the folder source reads it back, so a recorded run (or a test) replays with
//! the positions it had.
//!
//! Columns: `file,frame,time,source,chainage_m,lat,lon,age_ms,stale`: `source` is `odometer`
//! (then `chainage_m`), `gnss` (then `lat`, `lon`) or `none`; empty cells for the rest.

use std::collections::HashMap;
use std::path::Path;

use super::{Fix, Position};

/// The file's name in a frame folder.
pub const POSITIONS_FILE: &str = "positions.csv";

/// Its header line.
pub const HEADER: &str = "file,frame,time,source,chainage_m,lat,lon,age_ms,stale";

/// One row for the frame saved as `file` (a plain name, no comma).
pub fn row(file: &str, frame: u64, time: std::time::SystemTime, p: Option<&Position>) -> String {
    let time = humantime::format_rfc3339_millis(time);
    let cells = match p {
        None => "none,,,,,".to_string(),
        Some(p) => {
            let p = p.sanitised();
            let place = match p.fix {
                Fix::Chainage { metres } => format!("odometer,{metres:.3},,"),
                Fix::Gnss { lat, lon } => format!("gnss,,{lat:.7},{lon:.7}"),
            };
            format!("{place},{},{}", p.age_ms, p.stale)
        }
    };
    format!("{file},{frame},{time},{cells}")
}

/// A row that does not read.
#[derive(Debug, thiserror::Error)]
#[error("{path}, line {line}: {message}")]
pub struct ReplayError {
    /// The file.
    pub path: std::path::PathBuf,
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The positions in `folder/positions.csv` by file name; empty when there is no such file.
pub fn load(folder: &Path) -> Result<HashMap<String, Position>, ReplayError> {
    let path = folder.join(POSITIONS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => {
            return Err(ReplayError {
                path,
                line: 0,
                message: e.to_string(),
            })
        }
    };
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let fail = |message: String| ReplayError {
            path: path.clone(),
            line: i + 1,
            message,
        };
        let cells: Vec<&str> = line.split(',').collect();
        let [file, _frame, _time, source, chainage, lat, lon, age, stale] = cells[..] else {
            return Err(fail(format!(
                "expected 9 cells ({HEADER}), found {}",
                cells.len()
            )));
        };
        let number = |name: &str, v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| fail(format!("{name} {v:?} is not a number")))
        };
        let fix = match source {
            "none" => continue,
            "odometer" => Fix::Chainage {
                metres: number("chainage_m", chainage)?,
            },
            "gnss" => Fix::Gnss {
                lat: number("lat", lat)?,
                lon: number("lon", lon)?,
            },
            other => {
                return Err(fail(format!(
                    "source {other:?}: expected odometer, gnss or none"
                )))
            }
        };
        let position = Position {
            fix,
            age_ms: age
                .parse()
                .map_err(|_| fail(format!("age_ms {age:?} is not a whole number")))?,
            stale: match stale {
                "true" => true,
                "false" => false,
                other => return Err(fail(format!("stale {other:?}: expected true or false"))),
            },
        };
        out.insert(file.to_string(), position.sanitised());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rows_read_back_as_written_and_bad_rows_are_named() {
        let dir = std::env::temp_dir().join(format!("ei-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load(&dir).unwrap().is_empty(), "no file, no positions");
        let t = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        let odo = Position {
            fix: Fix::Chainage { metres: 1234.5 },
            age_ms: 0,
            stale: false,
        };
        let gnss = Position {
            fix: Fix::Gnss {
                lat: 45.764043,
                lon: -4.835659,
            },
            age_ms: 800,
            stale: true,
        };
        let text = [
            HEADER.to_string(),
            row("a.png", 0, t, Some(&odo)),
            row("b.png", 1, t, Some(&gnss)),
            row("c.png", 2, t, None),
        ]
        .join("\n");
        std::fs::write(dir.join(POSITIONS_FILE), text).unwrap();
        let got = load(&dir).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got["a.png"], odo);
        assert_eq!(got["b.png"], gnss);
        std::fs::write(
            dir.join(POSITIONS_FILE),
            format!("{HEADER}\nd.png,3,t,odometer,far,,,0,false\n"),
        )
        .unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("chainage_m"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
