//! The alert journal: every alert is written here before it is sent, and stays until the peer
//! acknowledges it, across link cuts, restarts and power loss.
//!
//! On disk: an 8-byte magic, then records `[length u32 LE][CRC-32 u32 LE][body]`. A body is an
//! alert (`A` + its binary payload), an acknowledgement (`K` + seq) or a base (`B` + the next
//! sequence number, written when the file is compacted so numbering survives it). Opening replays
//! the records; the first one that is short or fails its CRC is a torn write from a power cut:
//! the file is cut there and everything before it kept. When the file passes its size bound it is
//! rewritten with only the unacknowledged alerts; if those alone pass half the bound, the oldest
//! are evicted and counted. The in-memory copy is bounded the same way.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::message::Alert;
use inspect_core::settings::{Checker, ConfigError};

const MAGIC: &[u8; 8] = b"EIJRNL01";
const HEADER: u64 = 8;
// No real record is longer; a longer length field is damage.
const MAX_RECORD: u32 = 1024;
const ALERT: u8 = b'A';
const ACK: u8 = b'K';
const BASE: u8 = b'B';

/// When the journal forces its writes to the storage device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every alert (safest; each alert costs a flush of the SD card).
    Always,
    /// At most this long after a write (a power cut loses at most this window).
    Interval(Duration),
    /// Never explicitly: the kernel writes back on its own (a crash of the process loses nothing,
    /// a power cut may lose the last ~30 s).
    Never,
}

/// `journal.fsync` as written in the config: the [`FsyncPolicy`] without its interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// After every alert.
    Always,
    /// At most `fsync_interval_ms` after a write.
    #[default]
    Interval,
    /// Leave it to the kernel.
    Never,
}
/// `[journal]`: where alerts wait for their ACK.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSettings {
    /// Journal file; absent keeps alerts in memory only (lost on restart).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Size bound of the file (and of the alerts kept in memory), 4096 to 1073741824 bytes.
    #[serde(default = "default_journal_bytes")]
    pub max_bytes: u64,
    /// `always`, `interval` or `never`.
    #[serde(default)]
    pub fsync: FsyncMode,
    /// With `fsync = "interval"`: milliseconds, 10-60000.
    #[serde(default = "default_fsync_interval")]
    pub fsync_interval_ms: u64,
}

impl Default for JournalSettings {
    fn default() -> Self {
        JournalSettings {
            path: None,
            max_bytes: default_journal_bytes(),
            fsync: FsyncMode::default(),
            fsync_interval_ms: default_fsync_interval(),
        }
    }
}

fn default_journal_bytes() -> u64 {
    1 << 20
}
fn default_fsync_interval() -> u64 {
    1000
}

impl JournalSettings {
    /// Checks the size bound and the sync interval.
    pub fn validate(&self, c: &Checker<'_>) -> Result<(), ConfigError> {
        c.range("journal.max_bytes", self.max_bytes, 4096, 1 << 30)?;
        c.range(
            "journal.fsync_interval_ms",
            self.fsync_interval_ms,
            10,
            60_000,
        )
    }

    /// When to force writes to storage.
    pub fn policy(&self) -> FsyncPolicy {
        match self.fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Interval => {
                FsyncPolicy::Interval(Duration::from_millis(self.fsync_interval_ms))
            }
            FsyncMode::Never => FsyncPolicy::Never,
        }
    }

    /// Opens the journal file (its folder created if missing) and reports what it recovered;
    /// in memory only when no path is set.
    pub fn open(&self) -> Result<Journal, JournalError> {
        let Some(path) = &self.path else {
            return Ok(Journal::in_memory(self.max_bytes));
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let journal = Journal::open(path, self.max_bytes, self.policy())?;
        let r = journal.recovery();
        log::info!(
            "alert journal {}: {} alerts waiting for delivery, next seq {}{}",
            path.display(),
            r.unacked,
            journal.next_seq(),
            if r.torn_bytes > 0 {
                format!(", torn tail of {} bytes dropped", r.torn_bytes)
            } else {
                String::new()
            }
        );
        Ok(journal)
    }
}

/// Errors of the journal file. Alerts stay in memory and are still sent when writing fails.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading, writing or syncing the file failed.
    #[error("alert journal {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What opening the journal found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Alerts found waiting for an acknowledgement.
    pub unacked: usize,
    /// Bytes of a torn or damaged tail that were cut off.
    pub torn_bytes: u64,
    /// The file was not a journal and was moved aside.
    pub replaced: bool,
}

struct Disk {
    path: PathBuf,
    file: File,
    len: u64,
    dirty_since: Option<Instant>,
}

/// The alert journal (on disk, or in memory only when no path is configured).
pub struct Journal {
    disk: Option<Disk>,
    max_bytes: u64,
    fsync: FsyncPolicy,
    pending: BTreeMap<u64, Alert>,
    pending_bytes: u64,
    next_seq: u64,
    evicted: u64,
    recovery: Recovery,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.disk.as_ref().map(|d| &d.path))
            .field("unacked", &self.pending.len())
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

fn record_len(body: usize) -> u64 {
    8 + body as u64
}

fn encode(body: &[u8]) -> heapless::Vec<u8, 300> {
    let mut out = heapless::Vec::new();
    // Bodies are at most 1 + 103 bytes.
    let _ = out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let _ = out.extend_from_slice(&super::cobs::crc32(body).to_le_bytes());
    let _ = out.extend_from_slice(body);
    out
}

fn alert_body(alert: &Alert) -> heapless::Vec<u8, 128> {
    let mut body = heapless::Vec::new();
    let _ = body.push(ALERT);
    let _ = body.extend_from_slice(&alert.to_binary());
    body
}

fn seq_body(kind: u8, seq: u64) -> [u8; 9] {
    let mut b = [kind; 9];
    b[1..].copy_from_slice(&seq.to_le_bytes());
    b
}

impl Journal {
    /// A journal that only lives in memory (no `[journal]` in the config): ACKs and re-sending
    /// work, a restart forgets.
    pub fn in_memory(max_bytes: u64) -> Journal {
        Journal {
            disk: None,
            max_bytes,
            fsync: FsyncPolicy::Never,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            next_seq: 0,
            evicted: 0,
            recovery: Recovery::default(),
        }
    }

    /// Opens (or creates) the journal at `path` and replays it.
    pub fn open(path: &Path, max_bytes: u64, fsync: FsyncPolicy) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut journal = Journal::in_memory(max_bytes);
        journal.fsync = fsync;
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(io)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        if !bytes.is_empty() && !bytes.starts_with(MAGIC) {
            // Not ours (or its header is gone): keep it for a person to look at, start afresh.
            let aside = path.with_extension("not-a-journal");
            log::error!(
                "{}: not an alert journal; moved to {} and starting a new one",
                path.display(),
                aside.display()
            );
            std::fs::rename(path, &aside).map_err(io)?;
            bytes.clear();
            journal.recovery.replaced = true;
        }
        let valid = if bytes.is_empty() {
            0
        } else {
            journal.replay(&bytes)
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        if valid < bytes.len() as u64 || bytes.is_empty() {
            journal.recovery.torn_bytes = bytes.len() as u64 - valid;
            if bytes.is_empty() {
                file.write_all(MAGIC).map_err(io)?;
            } else {
                log::warn!(
                    "{}: cut a torn tail of {} bytes (power loss during a write); {} records before it kept",
                    path.display(),
                    journal.recovery.torn_bytes,
                    journal.pending.len()
                );
                file.set_len(valid).map_err(io)?;
            }
            file.sync_all().map_err(io)?;
        }
        let len = file.metadata().map_err(io)?.len();
        use std::io::Seek;
        file.seek(std::io::SeekFrom::End(0)).map_err(io)?;
        journal.disk = Some(Disk {
            path: path.to_path_buf(),
            file,
            len,
            dirty_since: None,
        });
        journal.recovery.unacked = journal.pending.len();
        if len > max_bytes {
            journal.compact()?;
        }
        Ok(journal)
    }

    /// Replays records into memory; returns the length of the valid prefix.
    fn replay(&mut self, bytes: &[u8]) -> u64 {
        let mut at = HEADER as usize;
        while at + 8 <= bytes.len() {
            let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
            let crc =
                u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
            let end = at + 8 + len as usize;
            if len == 0 || len > MAX_RECORD || end > bytes.len() {
                break;
            }
            let body = &bytes[at + 8..end];
            if super::cobs::crc32(body) != crc || !self.apply(body) {
                break;
            }
            at = end;
        }
        at as u64
    }

    /// Applies one record body; `false` if it does not decode.
    fn apply(&mut self, body: &[u8]) -> bool {
        let seq =
            |b: &[u8]| -> Option<u64> { Some(u64::from_le_bytes(b.get(1..9)?.try_into().ok()?)) };
        match body[0] {
            ALERT => match Alert::from_binary(&body[1..]) {
                Ok(alert) => {
                    self.next_seq = self.next_seq.max(alert.seq + 1);
                    self.insert(alert, body.len());
                    true
                }
                Err(_) => false,
            },
            ACK => seq(body).map(|s| self.remove(s)).is_some(),
            BASE => seq(body)
                .map(|s| self.next_seq = self.next_seq.max(s))
                .is_some(),
            _ => false,
        }
    }

    fn insert(&mut self, alert: Alert, body_len: usize) {
        self.pending_bytes += record_len(body_len);
        self.pending.insert(alert.seq, alert);
        // Keep the unacknowledged set within half the bound, so compaction always frees room.
        while self.pending_bytes > self.max_bytes / 2 && self.pending.len() > 1 {
            if let Some((_, old)) = self.pending.pop_first() {
                self.pending_bytes -= record_len(alert_body(&old).len());
                self.evicted += 1;
                log::warn!(
                    "alert journal full: alert {} evicted unacknowledged",
                    old.seq
                );
            }
        }
    }

    fn remove(&mut self, seq: u64) -> bool {
        match self.pending.remove(&seq) {
            Some(old) => {
                self.pending_bytes -= record_len(alert_body(&old).len());
                true
            }
            None => false,
        }
    }

    fn write(&mut self, body: &[u8]) -> Result<(), JournalError> {
        let Some(disk) = &mut self.disk else {
            return Ok(());
        };
        let record = encode(body);
        disk.file
            .write_all(&record)
            .map_err(|source| JournalError::Io {
                path: disk.path.clone(),
                source,
            })?;
        disk.len += record.len() as u64;
        disk.dirty_since.get_or_insert_with(Instant::now);
        if disk.len > self.max_bytes {
            self.compact()?;
        }
        Ok(())
    }

    /// Gives `alert` the next sequence number, journals it, and keeps it until acknowledged.
    /// The alert is kept (and will be sent) even when the write fails; the error says why it
    /// would not survive a restart.
    pub fn append(&mut self, alert: &mut Alert) -> Result<u64, JournalError> {
        alert.seq = self.next_seq;
        self.next_seq += 1;
        let body = alert_body(alert);
        self.insert(alert.clone(), body.len());
        self.write(&body)?;
        if self.fsync == FsyncPolicy::Always {
            self.sync()?;
        }
        Ok(alert.seq)
    }

    /// Marks alert `seq` delivered. Returns whether it was waiting (a duplicate ACK is not).
    pub fn ack(&mut self, seq: u64) -> Result<bool, JournalError> {
        if !self.remove(seq) {
            return Ok(false);
        }
        self.write(&seq_body(ACK, seq))?;
        Ok(true)
    }

    /// The first unacknowledged alert with a sequence number of at least `from`.
    pub fn pending_from(&self, from: u64) -> Option<&Alert> {
        self.pending.range(from..).next().map(|(_, a)| a)
    }

    /// Whether alert `seq` waits for an acknowledgement.
    pub fn is_pending(&self, seq: u64) -> bool {
        self.pending.contains_key(&seq)
    }

    /// Alerts waiting for an acknowledgement.
    pub fn unacked(&self) -> u64 {
        self.pending.len() as u64
    }

    /// Alerts evicted unacknowledged because the journal was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The sequence number the next alert will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// What opening found.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// Bytes the journal file holds now (0 in memory).
    pub fn file_len(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.len)
    }

    /// Forces written records to the storage device.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        if let Some(disk) = &mut self.disk {
            if disk.dirty_since.take().is_some() {
                disk.file.sync_data().map_err(|source| JournalError::Io {
                    path: disk.path.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Syncs when the interval policy says it is time; call it often.
    pub fn sync_if_due(&mut self) -> Result<(), JournalError> {
        let due = match (self.fsync, &self.disk) {
            (FsyncPolicy::Interval(every), Some(d)) => {
                d.dirty_since.is_some_and(|t| t.elapsed() >= every)
            }
            _ => false,
        };
        if due {
            self.sync()?;
        }
        Ok(())
    }

    /// Rewrites the file with only the unacknowledged alerts (atomically: a new file renamed
    /// over the old one).
    fn compact(&mut self) -> Result<(), JournalError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let path = disk.path.clone();
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension("compacting");
        let mut out = Vec::with_capacity(self.pending_bytes as usize + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&encode(&seq_body(BASE, self.next_seq)));
        for alert in self.pending.values() {
            out.extend_from_slice(&encode(&alert_body(alert)));
        }
        let mut file = File::create(&tmp).map_err(io)?;
        file.write_all(&out).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let file = OpenOptions::new().append(true).open(&path).map_err(io)?;
        self.disk = Some(Disk {
            path: path.clone(),
            file,
            len: out.len() as u64,
            dirty_since: None,
        });
        log::debug!(
            "{}: compacted to {} bytes ({} unacknowledged alerts)",
            path.display(),
            out.len(),
            self.pending.len()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(frame: u64) -> Alert {
        inspect_protocol::fixtures::alert(0, frame)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ei-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("alerts.journal")
    }

    #[test]
    fn unacked_alerts_and_numbering_survive_a_restart() {
        let path = scratch("restart");
        {
            let mut j = Journal::open(&path, 1 << 20, FsyncPolicy::Always).unwrap();
            for f in 0..5 {
                j.append(&mut alert(f)).unwrap();
            }
            assert!(j.ack(1).unwrap());
            assert!(j.ack(3).unwrap());
            assert!(!j.ack(3).unwrap(), "a duplicate ACK is not news");
            assert!(!j.ack(99).unwrap());
        }
        let j = Journal::open(&path, 1 << 20, FsyncPolicy::Always).unwrap();
        let left: Vec<u64> = j.pending.keys().copied().collect();
        assert_eq!(left, [0, 2, 4]);
        assert_eq!(j.next_seq(), 5);
        assert_eq!(j.pending_from(3).unwrap().frame, 4);
        assert_eq!(j.recovery().unacked, 3);
        assert_eq!(j.recovery().torn_bytes, 0);
    }

    #[test]
    fn a_torn_tail_is_cut_and_everything_before_it_kept() {
        let path = scratch("torn");
        {
            let mut j = Journal::open(&path, 1 << 20, FsyncPolicy::Never).unwrap();
            for f in 0..4 {
                j.append(&mut alert(f)).unwrap();
            }
        }
        let whole = std::fs::read(&path).unwrap();
        // Every cut inside the last record (a power cut mid-write) and a flipped bit in it.
        let last = whole.len() - (8 + alert_body(&alert(3)).len());
        for cut in (last + 1..whole.len()).step_by(7) {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let j = Journal::open(&path, 1 << 20, FsyncPolicy::Never).unwrap();
            assert_eq!(j.unacked(), 3, "cut at {cut}");
            assert_eq!(j.recovery().torn_bytes, (cut - last) as u64);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), last as u64);
        }
        let mut flipped = whole.clone();
        flipped[last + 20] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let mut j = Journal::open(&path, 1 << 20, FsyncPolicy::Never).unwrap();
        assert_eq!(j.unacked(), 3);
        // Writing goes on after the cut, and the next reopen sees it.
        assert_eq!(j.append(&mut alert(9)).unwrap(), 3);
        drop(j);
        let j = Journal::open(&path, 1 << 20, FsyncPolicy::Never).unwrap();
        assert_eq!(j.unacked(), 4);
        assert_eq!(j.pending_from(3).unwrap().frame, 9);
    }

    #[test]
    fn the_file_stays_bounded_and_the_oldest_unacked_are_evicted() {
        let path = scratch("bounded");
        let max = 4096;
        let mut j = Journal::open(&path, max, FsyncPolicy::Never).unwrap();
        for f in 0..1000 {
            j.append(&mut alert(f)).unwrap();
            if f % 2 == 0 {
                j.ack(f).unwrap();
            }
            assert!(j.file_len() <= max + 200, "file at {}", j.file_len());
        }
        assert!(j.evicted() > 0);
        assert!(j.pending_bytes <= max / 2);
        // The newest survive, the numbering goes on across a reopen after compactions.
        let newest = *j.pending.keys().last().unwrap();
        assert_eq!(newest, 999);
        let count = j.unacked();
        drop(j);
        let j = Journal::open(&path, max, FsyncPolicy::Never).unwrap();
        assert_eq!(j.next_seq(), 1000);
        assert_eq!(j.unacked(), count);
    }

    #[test]
    fn a_foreign_file_is_moved_aside_not_lost() {
        let path = scratch("foreign");
        std::fs::write(&path, b"precious notes").unwrap();
        let j = Journal::open(&path, 1 << 20, FsyncPolicy::Never).unwrap();
        assert!(j.recovery().replaced);
        assert_eq!(
            std::fs::read(path.with_extension("not-a-journal")).unwrap(),
            b"precious notes"
        );
    }

    #[test]
    fn in_memory_journal_is_bounded_too() {
        let mut j = Journal::in_memory(2048);
        for f in 0..100 {
            j.append(&mut alert(f)).unwrap();
        }
        assert!(j.evicted() > 0);
        assert_eq!(j.evicted() + j.unacked(), 100);
        assert_eq!(j.next_seq(), 100);
    }
}
