//! Everything the device sends to its peer, as one type: what `json` reads back from a line
//! and `wire` encodes to and decodes from framed bytes (both import this; neither the other).

use crate::command::{EvidenceChunk, Reply};
use crate::message::{Alert, Status};

/// A message the device sends to its peer.
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceMessage<'a> {
    /// An alert.
    Alert(Alert),
    /// A status report.
    Status(Status),
    /// The answer to a command.
    Reply(Reply),
    /// One chunk of an evidence file.
    Evidence(EvidenceChunk<'a>),
}

impl DeviceMessage<'_> {
    /// The same message owning its data (an evidence chunk borrows its bytes when decoded).
    pub fn into_owned(self) -> DeviceMessage<'static> {
        match self {
            DeviceMessage::Alert(a) => DeviceMessage::Alert(a),
            DeviceMessage::Status(s) => DeviceMessage::Status(s),
            DeviceMessage::Reply(r) => DeviceMessage::Reply(r),
            DeviceMessage::Evidence(c) => DeviceMessage::Evidence(c.into_owned()),
        }
    }
}
