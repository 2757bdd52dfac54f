//! The alert journal: every alert is written here before it is sent, and stays until the peer
//! acknowledges it, across link cuts, restarts, power loss and failing storage.
//!
//! The format is in [`records`]. Opening replays the records: a damaged record is skipped and
//! replay goes on at the next good one (the damage is then compacted away); a torn tail (a
//! power cut mid-write) is cut. A write that fails or is cut short is rolled back to the last
//! good length. When the file passes its size bound it is rewritten with only the
//! unacknowledged alerts (a new file, synced, renamed over the old one, the folder synced); if
//! those alone pass half the bound, the oldest are evicted and counted. The in-memory copy is
//! bounded the same way.
//!
//! Two rules keep what the peer sees true after a power cut:
//! - **Sequence numbers never repeat.** Before a number is used, a floor record above it is
//!   written and synced (a block of [`SEQ_BLOCK`] at a time, renewed at half), so numbering after
//!   any crash starts above every number that may have left the device. A clean close records
//!   the real next number, so only crashes leave gaps.
//! - **Nothing is sent before it is durable.** An alert becomes sendable once a sync has put it
//!   on the device (with `fsync = "interval"` that is a group commit: one sync for every alert of
//!   the interval). A failed sync is not retried on the same file (the kernel may have dropped
//!   the pages): the journal is rewritten from memory instead.

pub mod records;
pub mod storage;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::message::Alert;
use inspect_core::settings::{Checker, ConfigError};
pub use records::PeerThreshold;
use records::{
    alert_body, encode, record_len, replay, seq_body, threshold_body, Record, CLOSE, FILE_MAGIC,
    FILE_MAGIC_V1, FLOOR,
};
use storage::{write_all, FileSystem, Storage, StorageFile};

/// Sequence numbers reserved by one floor record.
pub const SEQ_BLOCK: u64 = 1024;

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
            let journal =
                Journal::in_memory_from(self.max_bytes, clock_seq_base(SystemTime::now()));
            log::warn!(
                "no journal.path: alerts are kept in memory only (a restart forgets the \
                 undelivered ones); numbering starts at {} from the clock so numbers do not \
                 repeat across restarts",
                journal.next_seq()
            );
            return Ok(journal);
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
    /// Bytes of damaged records between good ones, skipped (and compacted away).
    pub damaged_bytes: u64,
    /// The file was not a journal and was moved aside.
    pub replaced: bool,
    /// The file was in the first format and was rewritten in the current one.
    pub upgraded: bool,
}

struct Disk {
    path: PathBuf,
    file: Box<dyn StorageFile>,
    /// Length of the good records; a failed write is cut back to it.
    len: u64,
    /// A failed write may have left bytes past `len` that could not be cut yet.
    torn: bool,
    /// The handle no longer names the journal file (a compaction renamed over it and the
    /// reopen failed): open it again before writing.
    stale: bool,
    /// The last rename over the journal's name is not known to be durable yet (the folder
    /// sync failed): sync the folder before claiming anything is on the device.
    rename_unsynced: bool,
    /// When the first write not yet synced was made.
    dirty_since: Option<Instant>,
}

/// The alert journal (on disk, or in memory only when no path is configured).
pub struct Journal {
    storage: Arc<dyn Storage>,
    disk: Option<Disk>,
    max_bytes: u64,
    fsync: FsyncPolicy,
    pending: BTreeMap<u64, Alert>,
    pending_bytes: u64,
    /// Pending alerts whose record could not be written yet (retried at every sync).
    unwritten: BTreeSet<u64>,
    next_seq: u64,
    /// Numbers below this are covered by a synced floor record (unbounded in memory).
    reserved: u64,
    /// Alerts below this were synced (or need no sync).
    durable: u64,
    /// When reserving numbers last failed (retried by `sync_if_due`).
    reserve_failed_at: Option<Instant>,
    evicted: u64,
    write_errors: u64,
    recovery: Recovery,
    /// The last threshold the peer set (kept through compaction).
    peer_threshold: Option<PeerThreshold>,
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

impl Journal {
    /// A journal that only lives in memory (no `[journal]` in the config): ACKs and re-sending
    /// work, a restart forgets.
    pub fn in_memory(max_bytes: u64) -> Journal {
        Journal {
            storage: Arc::new(FileSystem),
            disk: None,
            max_bytes,
            fsync: FsyncPolicy::Never,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            unwritten: BTreeSet::new(),
            next_seq: 0,
            reserved: u64::MAX,
            durable: u64::MAX,
            reserve_failed_at: None,
            evicted: 0,
            write_errors: 0,
            recovery: Recovery::default(),
            peer_threshold: None,
        }
    }

    /// [`Journal::in_memory`] numbering from `first_seq`.
    pub fn in_memory_from(max_bytes: u64, first_seq: u64) -> Journal {
        Journal {
            next_seq: first_seq,
            ..Journal::in_memory(max_bytes)
        }
    }

    /// Opens (or creates) the journal at `path` and replays it.
    pub fn open(path: &Path, max_bytes: u64, fsync: FsyncPolicy) -> Result<Journal, JournalError> {
        Journal::open_on(Arc::new(FileSystem), path, max_bytes, fsync)
    }

    /// [`Journal::open`] on another [`Storage`] (tests put faults under the journal with it).
    pub fn open_on(
        storage: Arc<dyn Storage>,
        path: &Path,
        max_bytes: u64,
        fsync: FsyncPolicy,
    ) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut journal = Journal::in_memory(max_bytes);
        journal.storage = storage.clone();
        journal.fsync = fsync;
        let existed = storage.read(path).map_err(io)?;
        let mut bytes = existed.clone().unwrap_or_default();
        let version = if bytes.starts_with(FILE_MAGIC) {
            2
        } else if bytes.starts_with(FILE_MAGIC_V1) {
            1
        } else {
            if !bytes.is_empty() {
                // Not ours (or its header is gone): keep it for a person to look at.
                let aside = path.with_extension("not-a-journal");
                log::error!(
                    "{}: not an alert journal; moved to {} and starting a new one",
                    path.display(),
                    aside.display()
                );
                storage.rename(path, &aside).map_err(io)?;
                journal.recovery.replaced = true;
            }
            bytes.clear();
            2
        };
        let replayed = if bytes.is_empty() {
            records::Replayed::default()
        } else {
            replay(&bytes, version)
        };
        let mut floor = 0;
        for record in replayed.records {
            match record {
                Record::Alert(alert) => {
                    journal.next_seq = journal.next_seq.max(alert.seq + 1);
                    let len = alert_body(&alert).len();
                    journal.insert(alert, len);
                }
                Record::Ack(seq) => {
                    journal.remove(seq);
                }
                Record::Floor(seq) => floor = floor.max(seq),
                // The reservations before a clean close were not used.
                Record::Close(seq) => floor = seq,
                Record::Threshold(t) => journal.peer_threshold = Some(t),
            }
        }
        journal.next_seq = journal.next_seq.max(floor);
        journal.reserved = journal.next_seq;
        journal.durable = journal.next_seq;
        journal.recovery.unacked = journal.pending.len();
        journal.recovery.damaged_bytes = replayed.skipped;
        journal.recovery.upgraded = version == 1;
        if bytes.is_empty() {
            // A new file: its magic, then its name made durable.
            let mut file = storage.create(path).map_err(io)?;
            write_all(file.as_mut(), FILE_MAGIC).map_err(io)?;
            file.sync().map_err(io)?;
            sync_parent(storage.as_ref(), path).map_err(io)?;
            journal.attach(path, file, FILE_MAGIC.len() as u64);
        } else {
            let tail = bytes.len() as u64 - replayed.valid_end;
            journal.recovery.torn_bytes = tail;
            let mut file = storage.open_append(path).map_err(io)?;
            if tail > 0 {
                log::warn!(
                    "{}: cut a torn tail of {tail} bytes (power loss during a write); {} alerts \
                     before it kept",
                    path.display(),
                    journal.pending.len()
                );
                file.set_len(replayed.valid_end).map_err(io)?;
                file.sync().map_err(io)?;
            }
            journal.attach(path, file, replayed.valid_end);
            if replayed.skipped > 0 {
                log::warn!(
                    "{}: skipped {} damaged bytes in {} places; the records around them kept",
                    path.display(),
                    replayed.skipped,
                    replayed.damaged_stretches
                );
            }
            // Damage in the middle, the old format or an oversized file: rewrite it clean.
            if replayed.skipped > 0 || version == 1 || journal.file_len() > max_bytes {
                journal.compact()?;
            }
        }
        Ok(journal)
    }

    fn attach(&mut self, path: &Path, file: Box<dyn StorageFile>, len: u64) {
        self.disk = Some(Disk {
            path: path.to_path_buf(),
            file,
            len,
            torn: false,
            stale: false,
            rename_unsynced: false,
            dirty_since: None,
        });
    }

    fn insert(&mut self, alert: Alert, body_len: usize) {
        self.pending_bytes += record_len(body_len);
        self.pending.insert(alert.seq, alert);
        // Keep the unacknowledged set within half the bound, so compaction always frees room.
        while self.pending_bytes > self.max_bytes / 2 && self.pending.len() > 1 {
            if let Some((_, old)) = self.pending.pop_first() {
                self.pending_bytes -= record_len(alert_body(&old).len());
                self.unwritten.remove(&old.seq);
                self.evicted += 1;
                log::warn!(
                    "alert journal full: alert {} evicted unacknowledged",
                    old.seq
                );
            }
        }
    }

    fn remove(&mut self, seq: u64) -> bool {
        self.unwritten.remove(&seq);
        match self.pending.remove(&seq) {
            Some(old) => {
                self.pending_bytes -= record_len(alert_body(&old).len());
                true
            }
            None => false,
        }
    }

    /// Appends one record; a failed or short write is cut back to the last good length.
    fn write(&mut self, body: &[u8]) -> Result<(), JournalError> {
        let storage = self.storage.clone();
        let Some(disk) = &mut self.disk else {
            return Ok(());
        };
        let path = disk.path.clone();
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        if disk.stale {
            disk.file = storage.open_append(&path).map_err(io)?;
            disk.stale = false;
            disk.torn = true;
        }
        if disk.torn {
            disk.file.set_len(disk.len).map_err(io)?;
            disk.torn = false;
        }
        let record = encode(body);
        if let Err(e) = write_all(disk.file.as_mut(), &record) {
            self.write_errors += 1;
            disk.torn = disk.file.set_len(disk.len).is_err();
            return Err(io(e));
        }
        disk.len += record.len() as u64;
        disk.dirty_since.get_or_insert_with(Instant::now);
        if disk.len > self.max_bytes {
            self.compact()?;
        }
        Ok(())
    }

    /// Makes sure the number `seq` is covered by a synced floor record, reserving the next block
    /// at half of the current one.
    fn reserve(&mut self, seq: u64) -> Result<(), JournalError> {
        if self.disk.is_none() || seq + SEQ_BLOCK / 2 < self.reserved {
            return Ok(());
        }
        let floor = seq + SEQ_BLOCK;
        let done = self
            .write(&seq_body(FLOOR, floor))
            .and_then(|()| self.sync_file());
        match done {
            Ok(()) => {
                self.reserved = self.reserved.max(floor);
                self.reserve_failed_at = None;
                Ok(())
            }
            Err(e) => {
                self.reserve_failed_at = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// Gives `alert` the next sequence number, journals it, and keeps it until acknowledged.
    /// When the write fails the alert is kept in memory and written again at every sync; it is
    /// sent once it is on the device.
    pub fn append(&mut self, alert: &mut Alert) -> Result<u64, JournalError> {
        // Reserved before the number is taken: the reservation's sync must not count this
        // alert as on the device.
        let reserved = self.reserve(self.next_seq);
        alert.seq = self.next_seq;
        self.next_seq += 1;
        let body = alert_body(alert);
        self.insert(alert.clone(), body.len());
        if let Err(e) = self.write(&body) {
            self.unwritten.insert(alert.seq);
            return Err(e);
        }
        reserved?;
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
        self.write(&seq_body(records::ACK, seq))?;
        Ok(true)
    }

    /// Alert `seq`, if it waits for its ACK.
    pub fn pending(&self, seq: u64) -> Option<&Alert> {
        self.pending.get(&seq)
    }

    /// The first unacknowledged alert with a sequence number of at least `from`.
    pub fn pending_from(&self, from: u64) -> Option<&Alert> {
        self.pending.range(from..).next().map(|(_, a)| a)
    }

    /// The first alert from `from` on that may be sent: unacknowledged, on the device (synced)
    /// and numbered within a synced reservation.
    pub fn sendable_from(&self, from: u64) -> Option<&Alert> {
        let below = self.sendable_below();
        self.pending
            .range(from..below.max(from))
            .map(|(_, a)| a)
            .find(|a| !self.unwritten.contains(&a.seq))
    }

    /// Alerts numbered below this may be sent (synced, reserved).
    pub fn sendable_below(&self) -> u64 {
        let durable = match self.fsync {
            // The kernel writes back on its own: nothing to wait for.
            FsyncPolicy::Never => u64::MAX,
            _ => self.durable,
        };
        durable.min(self.reserved)
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

    /// Writes to the journal file that failed (each rolled back).
    pub fn write_errors(&self) -> u64 {
        self.write_errors
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

    /// Writes the records that failed before, reserves the numbers in use, and forces
    /// everything to the storage device: every alert journalled so far becomes sendable. A
    /// failure rewrites the journal from memory (after a failed sync the kernel may have dropped
    /// the pages it could not write, and a second sync would not say so).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        let synced = self
            .write_unwritten()
            .and_then(|()| match self.next_seq > self.reserved {
                true => self.reserve(self.next_seq - 1),
                false => Ok(()),
            })
            .and_then(|()| self.sync_file());
        if let Err(e) = synced {
            log::error!("{e}; rewriting the journal from memory");
            self.compact().map_err(|_| e)?;
        }
        Ok(())
    }

    fn write_unwritten(&mut self) -> Result<(), JournalError> {
        while let Some(&seq) = self.unwritten.first() {
            if let Some(alert) = self.pending.get(&seq) {
                let body = alert_body(alert);
                self.write(&body)?;
            }
            self.unwritten.remove(&seq);
        }
        Ok(())
    }

    fn sync_file(&mut self) -> Result<(), JournalError> {
        let next = self.next_seq;
        let storage = self.storage.clone();
        let Some(disk) = &mut self.disk else {
            return Ok(());
        };
        let io = |source| JournalError::Io {
            path: disk.path.clone(),
            source,
        };
        if disk.rename_unsynced {
            sync_parent(storage.as_ref(), &disk.path).map_err(io)?;
            disk.rename_unsynced = false;
        }
        if disk.dirty_since.is_some() {
            disk.file.sync().map_err(io)?;
            disk.dirty_since = None;
        }
        self.durable = next;
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
        // Alerts numbered while reserving failed wait for a reservation: retry once a second.
        let retry = self
            .reserve_failed_at
            .is_some_and(|t| t.elapsed() >= Duration::from_secs(1));
        if retry && self.next_seq > self.reserved {
            self.reserve(self.next_seq - 1)?;
        }
        Ok(())
    }

    /// Journals a threshold the peer set, synced at once (a rare, deliberate change that must
    /// survive a power cut like an alert).
    pub fn record_threshold(&mut self, threshold: PeerThreshold) -> Result<(), JournalError> {
        let body = threshold_body(&threshold);
        self.peer_threshold = Some(threshold);
        self.write(&body)?;
        self.sync_file()
    }

    /// The threshold the peer last set for `model` while the config gave `configured`: what
    /// the daemon uses again at start (none once the model or the configured threshold changed).
    pub fn peer_threshold(&self, model: &str, configured: f32) -> Option<f32> {
        self.peer_threshold
            .as_ref()
            .filter(|t| t.model.as_str() == model && t.configured == configured)
            .map(|t| t.value)
    }

    /// Records a clean close (the numbers reserved past the next one were not used) and syncs.
    pub fn close(&mut self) -> Result<(), JournalError> {
        if self.disk.is_some() {
            self.write(&seq_body(CLOSE, self.next_seq))?;
        }
        self.sync()
    }

    /// Rewrites the file with only the unacknowledged alerts: a new file, synced, renamed over
    /// the old one, the folder synced. On failure before the rename the old file stays in use.
    fn compact(&mut self) -> Result<(), JournalError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let path = disk.path.clone();
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let storage = self.storage.clone();
        let tmp = path.with_extension("compacting");
        let mut out = Vec::with_capacity(self.pending_bytes as usize + 64);
        out.extend_from_slice(FILE_MAGIC);
        out.extend_from_slice(&encode(&seq_body(FLOOR, self.reserved.max(self.next_seq))));
        if let Some(t) = &self.peer_threshold {
            out.extend_from_slice(&encode(&threshold_body(t)));
        }
        for alert in self.pending.values() {
            out.extend_from_slice(&encode(&alert_body(alert)));
        }
        let written = storage.create(&tmp).and_then(|mut file| {
            write_all(file.as_mut(), &out)?;
            file.sync()
        });
        if let Err(e) = written {
            self.write_errors += 1;
            return Err(io(e));
        }
        storage.rename(&tmp, &path).map_err(io)?;
        self.unwritten.clear();
        // From here the old handle names a file that is gone, and the new name is durable only
        // once the folder is synced.
        if let Some(disk) = &mut self.disk {
            disk.stale = true;
            disk.len = out.len() as u64;
            disk.torn = false;
            disk.rename_unsynced = true;
            disk.dirty_since = None;
        }
        let file = storage.open_append(&path).map_err(io)?;
        if let Some(disk) = &mut self.disk {
            disk.file = file;
            disk.stale = false;
        }
        // The folder sync puts everything in memory on the device.
        self.sync_file()?;
        log::debug!(
            "{}: compacted to {} bytes ({} unacknowledged alerts)",
            path.display(),
            out.len(),
            self.pending.len()
        );
        Ok(())
    }
}

/// The first sequence number of a journal without a file: the clock's seconds since 1970 times
/// 2^20 (room for a million alerts a second), so that numbers, and the evidence files named after
/// them, do not repeat across restarts while the clock does not go back (with a journal file the
/// floor records guarantee it whatever the clock does). Below 2^53: exact in JavaScript.
pub fn clock_seq_base(now: SystemTime) -> u64 {
    let seconds = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (seconds << 20).min((1 << 53) - 1)
}

/// Syncs the folder holding `path`, so a creation or rename in it survives a power cut.
fn sync_parent(storage: &dyn Storage, path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => storage.sync_dir(dir),
        None => storage.sync_dir(Path::new(".")),
    }
}
