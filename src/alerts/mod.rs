//! Alerts, status reports and commands, how they are framed, journalled and carried.
//!
//! What travels on the wire ([`message`], [`binary`], [`cobs`], [`command`]) is the
//! `inspect-protocol` crate, re-exported here; this module carries it: [`journal`] keeps every
//! alert on disk until the peer acknowledges it; [`link`] is the thread that sends, re-sends,
//! answers commands and reopens the port; [`settings`] is the config's `[alerts]`. Wire format:
//! `docs/protocol.md`.

pub use inspect_protocol::{binary, cobs, command, message, Framing};
pub mod journal;
#[cfg(target_os = "linux")]
pub mod link;
#[cfg(target_os = "linux")]
pub(crate) mod port;
pub mod settings;
#[cfg(target_os = "linux")]
pub mod tty;

pub use command::{Command, Reply};
pub use journal::{FsyncPolicy, Journal};
#[cfg(target_os = "linux")]
pub use link::{AlertLink, Control, LinkError, LinkSettings, LinkTarget};
pub use message::{Alert, DeviceId, Line, ModelId, Status, LINE_CAPACITY, PROTOCOL_VERSION};
