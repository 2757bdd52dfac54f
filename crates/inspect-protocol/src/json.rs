//! Reading the device's JSON lines back into typed messages (what `message` and `command` write).
//! Unknown keys are ignored, as `docs/protocol.md` asks of receivers; a missing or mistyped field
//! makes the whole line a [`DecodeError::Json`].

use std::borrow::Cow;
use std::time::SystemTime;

use base64::Engine as _;
use serde::Deserialize;

use crate::binary::DecodeError;
use crate::command::{cmd_name_static, ErrorCode, EvidenceChunk, Part, Rejected, Reply};
use crate::device::DeviceMessage;
use crate::message::{is_plain_id, Alert, Status};
use crate::position::{Fix, Position};
use crate::PixelBox;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum RawLine {
    Alert(RawAlert),
    Status(RawStatus),
    Reply(RawReply),
    Evidence(RawChunk),
}

#[derive(Deserialize)]
struct RawBox {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

#[derive(Deserialize)]
struct RawTile {
    index: usize,
    #[serde(flatten)]
    pixels: RawBox,
}

#[derive(Deserialize)]
struct RawRegion {
    #[serde(flatten)]
    pixels: RawBox,
    area: Option<f32>,
}

#[derive(Deserialize)]
struct RawAlert {
    device: String,
    time: String,
    seq: u64,
    frame: u64,
    tile: RawTile,
    score: Option<f32>,
    threshold: Option<f32>,
    region: RawRegion,
    model: String,
    // Version 2: absent from version 1 lines.
    boot: Option<String>,
    pos: Option<RawPosition>,
}

#[derive(Deserialize)]
struct RawPosition {
    src: String,
    chainage_m: Option<f64>,
    lat: Option<f64>,
    lon: Option<f64>,
    age_ms: u32,
    stale: bool,
}

#[derive(Deserialize)]
struct RawStatus {
    device: String,
    time: String,
    frames: u64,
    tiles_per_s: Option<f32>,
    dropped_frames: u64,
    skipped_frames: u64,
    source_failures: u64,
    alerts: u64,
    dropped_alerts: u64,
    unacked: u64,
    paused: bool,
    uptime_s: u64,
    model: String,
    // Version 2: absent from version 1 lines.
    boot: Option<String>,
    threshold: Option<f32>,
    refused_commands: Option<u64>,
}

#[derive(Deserialize)]
struct RawReply {
    cmd: String,
    ok: bool,
    threshold: Option<f32>,
    error: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct RawChunk {
    seq: u64,
    part: String,
    index: u16,
    count: u16,
    data: String,
}

impl From<RawBox> for PixelBox {
    fn from(b: RawBox) -> PixelBox {
        PixelBox {
            x: b.x,
            y: b.y,
            width: b.w,
            height: b.h,
        }
    }
}

fn text<const N: usize>(s: &str) -> Result<heapless::String<N>, DecodeError> {
    heapless::String::try_from(s).map_err(|_| DecodeError::Text)
}

fn id<const N: usize>(s: &str) -> Result<heapless::String<N>, DecodeError> {
    if !is_plain_id(s) {
        return Err(DecodeError::Text);
    }
    text(s)
}

// 16 hexadecimal digits; an absent boot id (a version 1 device) reads as 0.
fn boot(s: Option<&str>) -> Result<u64, DecodeError> {
    match s {
        None => Ok(0),
        Some(s) if s.len() == 16 => u64::from_str_radix(s, 16).map_err(|_| DecodeError::Json),
        Some(_) => Err(DecodeError::Json),
    }
}

fn position(raw: Option<RawPosition>) -> Result<Option<Position>, DecodeError> {
    let Some(p) = raw else {
        return Ok(None);
    };
    let fix = match (p.src.as_str(), p.chainage_m, p.lat, p.lon) {
        ("odometer", Some(metres), _, _) => Fix::Chainage { metres },
        ("gnss", _, Some(lat), Some(lon)) => Fix::Gnss { lat, lon },
        _ => return Err(DecodeError::Position),
    };
    Ok(Some(
        Position {
            fix,
            age_ms: p.age_ms,
            stale: p.stale,
        }
        .sanitised(),
    ))
}

fn time(s: &str) -> Result<SystemTime, DecodeError> {
    humantime::parse_rfc3339(s).map_err(|_| DecodeError::Json)
}

// `null` stands for a number JSON cannot carry (NaN, infinity): read it back as NaN, and so a
// number too large for 32 bits, which the device would have sent as `null`.
fn number(v: Option<f32>) -> f32 {
    v.filter(|v| v.is_finite()).unwrap_or(f32::NAN)
}

/// Decodes one line the device sent (without its newline).
pub(crate) fn decode_line(line: &[u8]) -> Result<DeviceMessage<'static>, DecodeError> {
    let raw: RawLine = serde_json::from_slice(line).map_err(|_| DecodeError::Json)?;
    Ok(match raw {
        RawLine::Alert(a) => DeviceMessage::Alert(Alert {
            device: id(&a.device)?,
            seq: a.seq,
            frame: a.frame,
            time: time(&a.time)?,
            tile_index: a.tile.index,
            tile: a.tile.pixels.into(),
            score: number(a.score),
            threshold: number(a.threshold),
            region: a.region.pixels.into(),
            area_fraction: number(a.region.area),
            model: id(&a.model)?,
            boot: boot(a.boot.as_deref())?,
            position: position(a.pos)?,
        }),
        RawLine::Status(s) => DeviceMessage::Status(Status {
            device: id(&s.device)?,
            time: time(&s.time)?,
            frames: s.frames,
            tiles_per_s: number(s.tiles_per_s),
            dropped_frames: s.dropped_frames,
            skipped_frames: s.skipped_frames,
            source_failures: s.source_failures,
            alerts: s.alerts,
            dropped_alerts: s.dropped_alerts,
            unacked: s.unacked,
            paused: s.paused,
            uptime_s: s.uptime_s,
            model: id(&s.model)?,
            boot: boot(s.boot.as_deref())?,
            threshold: number(s.threshold),
            refused_commands: s.refused_commands.unwrap_or(0),
        }),
        RawLine::Reply(r) => {
            let cmd = cmd_name_static(&r.cmd);
            let outcome = if r.ok {
                Ok(number(r.threshold))
            } else {
                let code = r
                    .error
                    .as_deref()
                    .and_then(ErrorCode::from_name)
                    .ok_or(DecodeError::Json)?;
                let message = r.message.unwrap_or_default();
                Err(Rejected::new(cmd, code, format_args!("{message}")))
            };
            DeviceMessage::Reply(Reply { cmd, outcome })
        }
        RawLine::Evidence(c) => DeviceMessage::Evidence(EvidenceChunk {
            seq: c.seq,
            part: Part::from_name(&c.part).ok_or(DecodeError::Json)?,
            index: c.index,
            count: c.count,
            data: Cow::Owned(
                base64::engine::general_purpose::STANDARD
                    .decode(c.data)
                    .map_err(|_| DecodeError::Json)?,
            ),
        }),
    })
}
