//! Alerts and status lines, and the link that carries them.
//!
//! [`message`] formats JSON Lines into fixed-capacity buffers (no allocation per alert);
//! [`link`] queues them to a writer thread that owns the serial port or standard output, so a
//! slow or absent reader never stalls inference: when the queue is full, lines are dropped and
//! counted, and the count is reported in the next status line.

pub mod link;
pub mod message;
#[cfg(target_os = "linux")]
pub mod tty;

pub use link::{AlertLink, LinkError, LinkTarget};
pub use message::{Alert, Line, Status, LINE_CAPACITY, PROTOCOL_VERSION};
