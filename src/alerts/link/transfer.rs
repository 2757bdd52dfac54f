//! Evidence files on their way to the peer: both files of an alert read once, then sent in
//! chunks of `EVIDENCE_CHUNK` bytes between the other messages.

use std::borrow::Cow;

use inspect_protocol::wire::{EncodeError, Wire};
use inspect_protocol::DeviceMessage;

use super::super::command::{EvidenceChunk, Part, EVIDENCE_CHUNK};
use super::worker::Worker;
use crate::evidence::evidence_path;

/// An evidence file being sent in chunks.
pub(super) struct Transfer {
    seq: u64,
    parts: Vec<(Part, Vec<u8>)>,
    part: usize,
    chunk: usize,
}

impl Worker {
    /// The next chunk of the evidence being sent, framed; `None` when no transfer is queued.
    pub(super) fn next_chunk(&mut self) -> Option<Result<Wire, EncodeError>> {
        if self.transfer.is_none() {
            let seq = self.transfers.pop_front()?;
            let dir = self.settings.evidence_dir.as_deref()?;
            let parts: Vec<(Part, Vec<u8>)> = [Part::Tile, Part::Heatmap]
                .into_iter()
                .filter_map(|p| {
                    std::fs::read(evidence_path(dir, seq, p))
                        .ok()
                        .map(|b| (p, b))
                })
                .collect();
            if parts.is_empty() {
                return None;
            }
            self.transfer = Some(Transfer {
                seq,
                parts,
                part: 0,
                chunk: 0,
            });
        }
        let t = self.transfer.as_mut()?;
        let (part, bytes) = &t.parts[t.part];
        let count = bytes.len().div_ceil(EVIDENCE_CHUNK).max(1);
        let start = t.chunk * EVIDENCE_CHUNK;
        let chunk = EvidenceChunk {
            seq: t.seq,
            part: *part,
            index: t.chunk as u16,
            count: count as u16,
            data: Cow::Borrowed(
                &bytes[start.min(bytes.len())..(start + EVIDENCE_CHUNK).min(bytes.len())],
            ),
        };
        let framed = super::worker::encode(
            &self.settings,
            self.signer.as_mut(),
            self.torn,
            &DeviceMessage::Evidence(chunk),
        );
        t.chunk += 1;
        if t.chunk >= count {
            t.chunk = 0;
            t.part += 1;
            if t.part >= t.parts.len() {
                self.transfer = None;
            }
        }
        Some(framed)
    }
}
