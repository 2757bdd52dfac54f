//! edge-inspector's wire protocol, shared by the daemon (`inspectd`) and the technician's
//! receiver (`inspect-monitor`): what travels on the alert link and how it is framed.
//!
//! [`message`] writes alerts and status reports as JSON Lines and [`binary`] as fixed binary
//! layouts (both into fixed-capacity buffers: no allocation per alert); [`cobs`] frames binary
//! payloads for radio links; [`command`] decodes the peer's commands and encodes replies and
//! evidence chunks; [`evidence`] names the evidence files both ends keep. Wire format:
//! `docs/protocol.md`. No tract, no operating-system code: this crate builds for any target.

#![warn(missing_docs)]

pub mod binary;
pub mod cobs;
pub mod command;
pub mod evidence;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod geometry;
pub mod message;

pub use command::{Command, Reply};
pub use geometry::PixelBox;
pub use message::{Alert, DeviceId, Line, ModelId, Status, LINE_CAPACITY, PROTOCOL_VERSION};

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
