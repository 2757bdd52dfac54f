//! The JSON Lines protocol (see `docs/protocol.md`).

use std::fmt::Write;
use std::time::SystemTime;

use crate::position::{Fix, Position};
use crate::PixelBox;

/// Version of the line protocol, sent as `"v"` in every line. Version 2 added the boot id, the
/// position and the status's threshold and refused commands: keys (and a binary trailer) that
/// version 1 receivers ignore.
pub const PROTOCOL_VERSION: u32 = 2;

/// Longest line the protocol sends, newline excluded.
pub const LINE_CAPACITY: usize = 512;

/// One protocol line, held without allocation.
pub type Line = heapless::String<LINE_CAPACITY>;

/// Device id as sent: at most 32 characters (validated by the config).
pub type DeviceId = heapless::String<32>;

/// Model id as sent: the first 12 hex digits of the manifest's SHA-256.
pub type ModelId = heapless::String<12>;

/// An alert: one tile of one frame whose score passed the threshold. Held without allocation; the
/// same fields travel as a JSON line, a binary frame and a journal record.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Device id from the config.
    pub device: DeviceId,
    /// Alert sequence number, from 0, +1 per alert (a gap means alerts were lost).
    pub seq: u64,
    /// Frame number from the source.
    pub frame: u64,
    /// Capture time of the frame.
    pub time: SystemTime,
    /// Tile index in the frame's grid (row-major).
    pub tile_index: usize,
    /// The tile in frame pixels.
    pub tile: PixelBox,
    /// Tile anomaly score (max of its anomaly map).
    pub score: f32,
    /// Threshold it passed.
    pub threshold: f32,
    /// Region above the threshold, in frame pixels.
    pub region: PixelBox,
    /// Fraction of the tile's area above the threshold.
    pub area_fraction: f32,
    /// Model id (bundle hash prefix).
    pub model: ModelId,
    /// The boot id of the daemon's start that raised the alert (random per start; 0: a version 1
    /// device). ACKs carry it back with the seq, naming exactly one alert of one device; a
    /// receiver sees from it where numbering jumped because the device restarted.
    pub boot: u64,
    /// Where the frame was taken, when the device knows.
    pub position: Option<Position>,
}

/// A periodic status line.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// Device id from the config.
    pub device: DeviceId,
    /// When the line was made.
    pub time: SystemTime,
    /// Frames processed since start.
    pub frames: u64,
    /// Tiles per second over the last interval.
    pub tiles_per_s: f32,
    /// Frames dropped because inference fell behind a live source.
    pub dropped_frames: u64,
    /// Frames that could not be decoded.
    pub skipped_frames: u64,
    /// Times the camera failed and was reopened.
    pub source_failures: u64,
    /// Alerts raised since start.
    pub alerts: u64,
    /// Alerts lost before the peer had them: evicted unacknowledged from a full journal.
    pub dropped_alerts: u64,
    /// Alerts journalled but not yet acknowledged (or, without ACKs, not yet written).
    pub unacked: u64,
    /// Whether the peer paused inspection.
    pub paused: bool,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Model id (bundle hash prefix).
    pub model: ModelId,
    /// The boot id of the daemon's current start (0: a version 1 device).
    pub boot: u64,
    /// The alert threshold in force (NaN: not reported, a version 1 device).
    pub threshold: f32,
    /// Commands refused since start: unsigned, forged, stale, or ACKs for alerts not sent.
    pub refused_commands: u64,
}

/// The line did not fit in [`LINE_CAPACITY`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("protocol line longer than {LINE_CAPACITY} bytes")]
pub struct LineTooLong;

impl From<std::fmt::Error> for LineTooLong {
    fn from(_: std::fmt::Error) -> Self {
        LineTooLong
    }
}

// JSON has no NaN or infinity: write them as null rather than break the line.
struct Num(f32);

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        if !v.is_finite() {
            f.write_str("null")
        } else if v != 0.0 && !(1e-4..1e7).contains(&v.abs()) {
            // Exponent form for extreme values: `{}` would write up to 45 digits.
            write!(f, "{v:e}")
        } else {
            write!(f, "{v}")
        }
    }
}

// Frame coordinates as the binary layout sends them: at most u16 (frames are at most 4096 px,
// see the config), so no value makes a line longer than the real ones.
fn coordinate(v: u32) -> u32 {
    v.min(u16::MAX.into())
}

fn write_box(line: &mut Line, b: &PixelBox) -> std::fmt::Result {
    write!(
        line,
        "\"x\":{},\"y\":{},\"w\":{},\"h\":{}",
        coordinate(b.x),
        coordinate(b.y),
        coordinate(b.width),
        coordinate(b.height)
    )
}

// An alert's boot id, and its position when there is one (protocol version 2).
fn write_boot_and_position(
    line: &mut Line,
    boot: u64,
    position: &Option<Position>,
) -> std::fmt::Result {
    write!(line, ",\"boot\":\"{boot:016x}\"")?;
    let Some(p) = position.map(Position::sanitised) else {
        return Ok(());
    };
    write!(line, ",\"pos\":{{\"src\":\"{}\",", p.fix.source())?;
    // Millimetres and about a centimetre of latitude are finer than either source measures.
    match p.fix {
        Fix::Chainage { metres } => write!(line, "\"chainage_m\":{metres:.3}")?,
        Fix::Gnss { lat, lon } => write!(line, "\"lat\":{lat:.7},\"lon\":{lon:.7}")?,
    }
    write!(line, ",\"age_ms\":{},\"stale\":{}}}", p.age_ms, p.stale)
}

/// Whether `id` may name a device or a model on the wire: 1 to 32 characters of
/// `A-Z a-z 0-9 . _ -`. Lines carry such ids unescaped, so decoders refuse any other.
pub fn is_plain_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

// Device ids are plain (the config checks them with `is_plain_id`) and model ids are hex, so
// no escaping is needed.
pub(crate) fn write_head(
    line: &mut Line,
    kind: &str,
    device: &str,
    time: SystemTime,
) -> std::fmt::Result {
    write!(
        line,
        "{{\"type\":\"{kind}\",\"v\":{PROTOCOL_VERSION},\"device\":\"{device}\",\"time\":\"{}\"",
        humantime::format_rfc3339_millis(time)
    )
}

impl Alert {
    /// The alert as one JSON line (no trailing newline).
    pub fn to_line(&self) -> Result<Line, LineTooLong> {
        let mut line = Line::new();
        write_head(&mut line, "alert", &self.device, self.time)?;
        write!(
            line,
            ",\"seq\":{},\"frame\":{},\"tile\":{{\"index\":{},",
            self.seq,
            self.frame,
            self.tile_index.min(u16::MAX.into())
        )?;
        write_box(&mut line, &self.tile)?;
        write!(
            line,
            "}},\"score\":{},\"threshold\":{},\"region\":{{",
            Num(self.score),
            Num(self.threshold)
        )?;
        write_box(&mut line, &self.region)?;
        write!(
            line,
            ",\"area\":{}}},\"model\":\"{}\"",
            Num(self.area_fraction),
            self.model
        )?;
        write_boot_and_position(&mut line, self.boot, &self.position)?;
        line.push('}').map_err(|_| LineTooLong)?;
        Ok(line)
    }
}

impl Status {
    /// The status as one JSON line (no trailing newline).
    pub fn to_line(&self) -> Result<Line, LineTooLong> {
        let mut line = Line::new();
        write_head(&mut line, "status", &self.device, self.time)?;
        write!(
            line,
            ",\"frames\":{},\"tiles_per_s\":{},\"dropped_frames\":{},\"skipped_frames\":{},\"source_failures\":{},\"alerts\":{},\"dropped_alerts\":{},\"unacked\":{},\"paused\":{},\"uptime_s\":{},\"model\":\"{}\",\"threshold\":{},\"refused_commands\":{}",
            self.frames,
            Num(self.tiles_per_s),
            self.dropped_frames,
            self.skipped_frames,
            self.source_failures,
            self.alerts,
            self.dropped_alerts,
            self.unacked,
            self.paused,
            self.uptime_s,
            self.model,
            Num(self.threshold),
            self.refused_commands
        )?;
        write!(line, ",\"boot\":\"{:016x}\"}}", self.boot)?;
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{id, sample_alert};
    use crate::position::MAX_CHAINAGE_M;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn alert_line_is_json_with_every_field() {
        let line = sample_alert().to_line().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "alert");
        assert_eq!(v["v"], 2);
        assert_eq!(v["boot"], "5eed0000c0ffee01");
        assert_eq!(v["pos"]["src"], "gnss");
        assert_eq!(v["pos"]["lat"], 45.764043);
        assert_eq!(v["pos"]["lon"], 4.835659);
        assert_eq!(v["pos"]["age_ms"], 800);
        assert_eq!(v["pos"]["stale"], false);
        assert_eq!(v["seq"], 41);
        assert_eq!(v["frame"], 1203);
        assert_eq!(v["time"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["tile"]["index"], 9);
        assert_eq!(v["tile"]["x"], 224);
        assert_eq!(v["score"], 2.5);
        assert_eq!(v["region"]["h"], 36);
        assert!((v["region"]["area"].as_f64().unwrap() - 0.0234).abs() < 1e-6);
        assert_eq!(v["model"], "0123456789ab");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn status_line_writes_non_finite_as_null() {
        let status = Status {
            device: id("d"),
            time: UNIX_EPOCH,
            frames: 3,
            tiles_per_s: f32::NAN,
            dropped_frames: 1,
            skipped_frames: 2,
            source_failures: 4,
            alerts: 0,
            dropped_alerts: 5,
            unacked: 7,
            paused: true,
            uptime_s: 60,
            model: id("m"),
            boot: 1,
            threshold: f32::INFINITY,
            refused_commands: 3,
        };
        let v: serde_json::Value = serde_json::from_str(&status.to_line().unwrap()).unwrap();
        assert_eq!(v["type"], "status");
        assert!(v["tiles_per_s"].is_null());
        assert!(v["threshold"].is_null());
        assert_eq!(v["refused_commands"], 3);
        assert_eq!(v["boot"], "0000000000000001");
        assert_eq!(v["dropped_alerts"], 5);
        assert_eq!(v["skipped_frames"], 2);
        assert_eq!(v["source_failures"], 4);
        assert_eq!(v["unacked"], 7);
        assert_eq!(v["paused"], true);
    }

    #[test]
    fn the_longest_alert_and_status_fit_a_line() {
        // Every field at its widest: the fixed capacity must never refuse a real alert.
        let mut alert = sample_alert();
        alert.device = id(&"x".repeat(32));
        (alert.seq, alert.frame, alert.tile_index) = (u64::MAX, u64::MAX, usize::MAX);
        alert.time = UNIX_EPOCH + Duration::from_secs(253_402_300_799); // 9999-12-31
        let wide = PixelBox {
            x: u32::MAX,
            y: u32::MAX,
            width: u32::MAX,
            height: u32::MAX,
        };
        (alert.tile, alert.region) = (wide, wide);
        (alert.score, alert.threshold, alert.area_fraction) =
            (-f32::MIN_POSITIVE, f32::MIN, -1e-38);
        alert.boot = u64::MAX;
        let widest_positions = [
            Fix::Gnss {
                lat: -90.0,
                lon: -180.0,
            },
            Fix::Chainage {
                metres: -MAX_CHAINAGE_M,
            },
        ];
        for fix in widest_positions {
            alert.position = Some(Position {
                fix,
                age_ms: u32::MAX,
                stale: false,
            });
            // (The signature has room of its own beyond LINE_CAPACITY.)
            assert!(alert.to_line().is_ok(), "{fix:?}");
        }
        // Counters up to 2^53, the integers JSON readers hold exactly (285 years of frames at
        // 1000 per second).
        let most = (1u64 << 53) - 1;
        let status = Status {
            device: alert.device.clone(),
            time: alert.time,
            frames: most,
            tiles_per_s: f32::MIN,
            dropped_frames: most,
            skipped_frames: most,
            source_failures: most,
            alerts: most,
            dropped_alerts: most,
            unacked: most,
            paused: false,
            uptime_s: most,
            model: alert.model.clone(),
            boot: u64::MAX,
            threshold: f32::MIN,
            refused_commands: most,
        };
        assert!(status.to_line().is_ok());
    }
}
