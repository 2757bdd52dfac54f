//! The peer's commands: ACKs go to the journal; the others are checked (range, evidence that
//! exists, room in the queues), forwarded to the daemon and answered with a reply that carries
//! the threshold in force, or refused with a reason.

use std::sync::atomic::Ordering;

use super::super::command::{Command, ErrorCode, Part, Rejected, Reply};
use super::worker::Worker;
use super::Control;
use crate::evidence::evidence_path;

/// Evidence requests waiting behind the one being sent.
const EVIDENCE_QUEUE: usize = 4;

impl Worker {
    pub(super) fn handle(&mut self, command: Result<Command, Rejected>) {
        let command = match command {
            Ok(Command::Ack { seq, boot }) => {
                // Only an alert this connection carried can have been delivered by it; an ACK
                // naming another boot id than the start that raised it was meant for another
                // device (or is forged).
                let mut journal = self.shared.journal();
                let other_boot =
                    boot.is_some_and(|b| journal.pending(seq).is_some_and(|a| a.boot != b));
                if other_boot || !self.sent_here.remove(&seq) {
                    self.shared
                        .counters
                        .acks_refused
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
                match journal.ack(seq) {
                    Ok(true) => {
                        self.shared.counters.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    Err(e) => log::error!("{e}"),
                }
                return;
            }
            other => other,
        };
        let name = match &command {
            Ok(c) => c.name(),
            Err(r) => r.cmd,
        };
        // Replies carry the threshold in force.
        let outcome = match command {
            Err(rejected) => Err(rejected),
            Ok(c @ Command::SetThreshold { value }) => {
                let (lo, hi) = self.settings.threshold_range;
                if value.is_finite() && value >= lo && value <= hi {
                    self.forward(c, Control::SetThreshold(value)).map(|()| {
                        self.threshold = value;
                        value
                    })
                } else {
                    Err(Rejected::new(
                        c.name(),
                        ErrorCode::OutOfRange,
                        format_args!("threshold {value} outside {lo} to {hi}; unchanged"),
                    ))
                }
            }
            Ok(c @ Command::Pause) => self.forward(c, Control::Pause).map(|()| self.threshold),
            Ok(c @ Command::Resume) => self.forward(c, Control::Resume).map(|()| self.threshold),
            Ok(c @ Command::GetStatus) => {
                self.forward(c, Control::StatusNow).map(|()| self.threshold)
            }
            Ok(c @ Command::GetEvidence { seq }) => self.queue_evidence(c, seq),
            Ok(Command::Ack { .. }) => return,
        };
        let cmd = match &outcome {
            Err(r) => r.cmd,
            Ok(_) => name,
        };
        let shared = self.shared.clone();
        let counters = &shared.counters;
        if outcome.is_err() {
            counters.rejected.fetch_add(1, Ordering::Relaxed);
            if !self.error_reply_allowed() {
                counters.replies_suppressed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // A bounded backlog of replies: a flood of bad input cannot grow memory (the command
        // itself was carried out or refused all the same; the count says how many went
        // unanswered).
        if self.replies.len() < 32 {
            self.replies.push_back(Reply { cmd, outcome });
        } else {
            counters.replies_suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn forward(&self, c: Command, control: Control) -> Result<(), Rejected> {
        self.controls.try_send(control).map_err(|_| {
            Rejected::new(
                c.name(),
                ErrorCode::Busy,
                format_args!("the daemon is not taking commands now"),
            )
        })
    }

    fn queue_evidence(&mut self, c: Command, seq: u64) -> Result<f32, Rejected> {
        let Some(dir) = &self.settings.evidence_dir else {
            return Err(Rejected::new(
                c.name(),
                ErrorCode::NotFound,
                format_args!("this device keeps no evidence (no [evidence] in its config)"),
            ));
        };
        if !evidence_path(dir, seq, Part::Tile).exists() {
            return Err(Rejected::new(
                c.name(),
                ErrorCode::NotFound,
                format_args!("no evidence for alert {seq} (never kept, or evicted)"),
            ));
        }
        if self.transfers.len() >= EVIDENCE_QUEUE {
            return Err(Rejected::new(
                c.name(),
                ErrorCode::Busy,
                format_args!("{EVIDENCE_QUEUE} evidence transfers already queued"),
            ));
        }
        self.transfers.push_back(seq);
        Ok(self.threshold)
    }
}
