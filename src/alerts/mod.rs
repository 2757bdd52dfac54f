//! Alerts, status reports and commands, how they are framed, journalled and carried.
//!
//! [`message`] formats JSON Lines and [`binary`] fixed binary layouts (both into fixed-capacity
//! buffers: no allocation per alert); [`cobs`] frames binary payloads for radio links;
//! [`command`] decodes the peer's commands and encodes replies and evidence chunks; [`journal`]
//! keeps every alert on disk until the peer acknowledges it; [`link`] is the thread that sends,
//! re-sends, answers commands and reopens the port. Wire format: `docs/protocol.md`.

pub mod binary;
pub mod cobs;
pub mod command;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod journal;
#[cfg(target_os = "linux")]
pub mod link;
pub mod message;
#[cfg(target_os = "linux")]
mod port;
#[cfg(target_os = "linux")]
pub mod tty;

pub use command::{Command, Reply};
pub use journal::{FsyncPolicy, Journal};
#[cfg(target_os = "linux")]
pub use link::{AlertLink, Control, Framing, LinkError, LinkSettings, LinkTarget};
pub use message::{Alert, DeviceId, Line, ModelId, Status, LINE_CAPACITY, PROTOCOL_VERSION};
