//! edge-inspector's wire protocol, shared by the daemon (`inspectd`) and the technician's
//! receiver (`inspect-monitor`): what travels on the alert link and how it is framed.
//!
//! [`message`] writes alerts and status reports as JSON Lines and [`binary`] as fixed binary
//! layouts (both into fixed-capacity buffers: no allocation per alert); [`cobs`] frames binary
//! payloads for radio links; [`command`] decodes the peer's commands and encodes replies and
//! evidence chunks; [`evidence`] names the evidence files both ends keep; [`DeviceMessage`] is
//! everything the device sends, as one type; [`wire`] is the one codec both ends use: typed
//! messages to framed bytes and back, in either [`Framing`]. Wire format:
//! `docs/protocol.md`. No tract, no operating-system code: this crate builds for any target.

#![warn(missing_docs)]

pub mod binary;
pub mod cobs;
pub mod command;
mod device;
pub mod evidence;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod geometry;
mod json;
pub mod message;
pub mod position;
pub mod secret_file;
pub mod signing;
mod unframed;
pub mod wire;

pub use command::{Command, Reply};
pub use device::DeviceMessage;
pub use geometry::PixelBox;
pub use message::{Alert, DeviceId, Line, ModelId, Status, LINE_CAPACITY, PROTOCOL_VERSION};
pub use position::{Fix, Position};
pub use wire::{Deframer, Framing, Unframed};
