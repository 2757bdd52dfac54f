use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

use super::super::message::ModelId;
use super::records::{ACK, ALERT, FILE_MAGIC_V1};
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
        j.close().unwrap();
    }
    let mut j = Journal::open(&path, 1 << 20, FsyncPolicy::Always).unwrap();
    let left: Vec<u64> = j.pending.keys().copied().collect();
    assert_eq!(left, [0, 2, 4]);
    // Closed cleanly: numbering goes on where it stopped.
    assert_eq!(j.next_seq(), 5);
    assert_eq!(j.pending_from(3).unwrap().frame, 4);
    assert_eq!(j.pending(4).unwrap().frame, 4);
    assert!(j.pending(3).is_none(), "acknowledged");
    assert_eq!(j.recovery().unacked, 3);
    assert_eq!(j.recovery().torn_bytes, 0);
    // A crash (no close): numbering jumps past every number that may have been sent.
    j.append(&mut alert(5)).unwrap();
    drop(j);
    let j = Journal::open(&path, 1 << 20, FsyncPolicy::Always).unwrap();
    assert_eq!(j.next_seq(), 5 + SEQ_BLOCK);
    assert_eq!(j.unacked(), 4);
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
    let last = whole.len() - record_len(alert_body(&alert(3)).len()) as usize;
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
    // Writing goes on after the cut (numbered past the reservation), and a reopen sees it.
    let seq = j.append(&mut alert(9)).unwrap();
    assert!(seq >= 4);
    drop(j);
    let j = Journal::open(&path, 1 << 20, FsyncPolicy::Never).unwrap();
    assert_eq!(j.unacked(), 4);
    assert_eq!(j.pending_from(seq).unwrap().frame, 9);
}

#[test]
fn a_damaged_record_is_skipped_and_the_records_after_it_kept() {
    let path = scratch("damaged");
    {
        let mut j = Journal::open(&path, 1 << 20, FsyncPolicy::Never).unwrap();
        for f in 0..10 {
            j.append(&mut alert(f)).unwrap();
        }
        j.close().unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    // Records: magic, a floor, then alerts: damage alert 3 (its length, then its body), as a
    // short write at disk full would leave it.
    let alert_len = record_len(alert_body(&alert(0)).len()) as usize;
    let third = 8 + 12 + 9 + 3 * alert_len;
    bytes[third + 5] ^= 0x40;
    bytes[third + 30] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let mut j = Journal::open(&path, 1 << 20, FsyncPolicy::Never).unwrap();
    let left: Vec<u64> = j.pending.keys().copied().collect();
    assert_eq!(
        left,
        [0, 1, 2, 4, 5, 6, 7, 8, 9],
        "only the damaged one is gone"
    );
    assert_eq!(j.recovery().damaged_bytes, alert_len as u64);
    // The clean close after the damage still counts; the damage is compacted away.
    assert_eq!(j.next_seq(), 10);
    j.close().unwrap();
    drop(j);
    let j = Journal::open(&path, 1 << 20, FsyncPolicy::Never).unwrap();
    assert_eq!(j.recovery().damaged_bytes, 0);
    assert_eq!(j.unacked(), 9);
}

#[test]
fn a_journal_of_the_first_format_is_read_and_rewritten() {
    let path = scratch("v1");
    let mut bytes = FILE_MAGIC_V1.to_vec();
    let v1_record = |body: &[u8]| {
        let mut r = (body.len() as u32).to_le_bytes().to_vec();
        r.extend_from_slice(&inspect_protocol::cobs::crc32(body).to_le_bytes());
        r.extend_from_slice(body);
        r
    };
    for f in 0..3 {
        let mut a = alert(f);
        a.seq = 40 + f;
        bytes.extend(v1_record(&alert_body(&a)));
    }
    bytes.extend(v1_record(&seq_body(ACK, 41)));
    std::fs::write(&path, &bytes).unwrap();
    let j = Journal::open(&path, 1 << 20, FsyncPolicy::Never).unwrap();
    assert!(j.recovery().upgraded);
    assert_eq!(j.pending.keys().copied().collect::<Vec<_>>(), [40, 42]);
    assert_eq!(j.next_seq(), 43);
    assert!(std::fs::read(&path).unwrap().starts_with(FILE_MAGIC));
    assert_eq!(alert_body(&alert(0))[0], ALERT);
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
    j.close().unwrap();
    drop(j);
    let j = Journal::open(&path, max, FsyncPolicy::Never).unwrap();
    assert_eq!(j.next_seq(), 1000);
    assert_eq!(j.unacked(), count);
}

#[test]
fn a_threshold_the_peer_set_survives_restarts_and_compaction_for_its_model_only() {
    let path = scratch("threshold");
    let max = 4096;
    let model = ModelId::try_from("0123456789ab").unwrap();
    {
        let mut j = Journal::open(&path, max, FsyncPolicy::Never).unwrap();
        assert_eq!(j.peer_threshold("0123456789ab", 1.0), None);
        for value in [1.5, 1.25] {
            j.record_threshold(PeerThreshold {
                value,
                configured: 1.0,
                model: model.clone(),
            })
            .unwrap();
        }
        // Enough alerts to compact the file several times over: the threshold stays.
        for f in 0..300 {
            j.append(&mut alert(f)).unwrap();
            j.ack(f).unwrap();
        }
        // Dropped without a clean close.
    }
    let j = Journal::open(&path, max, FsyncPolicy::Never).unwrap();
    assert_eq!(j.peer_threshold("0123456789ab", 1.0), Some(1.25));
    // Another model, or a config that now gives another threshold: the operator's wins.
    assert_eq!(j.peer_threshold("ffffffffffff", 1.0), None);
    assert_eq!(j.peer_threshold("0123456789ab", 1.1), None);
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
    assert!(
        j.sendable_from(0).is_some(),
        "nothing to wait for in memory"
    );
}

#[test]
fn without_a_file_numbering_starts_from_the_clock_and_never_goes_back() {
    let at = |s: u64| std::time::UNIX_EPOCH + Duration::from_secs(s);
    let before = clock_seq_base(at(1_800_000_000));
    let after = clock_seq_base(at(1_800_000_001));
    // A restart a second later starts past a million alerts of the previous run.
    assert_eq!(after - before, 1 << 20);
    assert!(after < 1 << 53, "exact as a JSON number in any receiver");
    let now = clock_seq_base(std::time::SystemTime::now());
    let mut j = JournalSettings::default().open().unwrap();
    let first = j.append(&mut alert(0)).unwrap();
    assert!(first >= now, "{first} < {now}");
}

#[test]
fn with_interval_syncs_an_alert_is_sent_only_once_synced() {
    let path = scratch("group-commit");
    let mut j = Journal::open(
        &path,
        1 << 20,
        FsyncPolicy::Interval(Duration::from_secs(60)),
    )
    .unwrap();
    j.append(&mut alert(0)).unwrap();
    j.append(&mut alert(1)).unwrap();
    assert!(j.sendable_from(0).is_none(), "not on the device yet");
    j.sync_if_due().unwrap();
    assert!(j.sendable_from(0).is_none(), "the interval has not passed");
    j.sync().unwrap();
    assert_eq!(j.sendable_from(0).unwrap().seq, 0);
    assert_eq!(j.sendable_from(1).unwrap().seq, 1);
    let mut always = Journal::open(&scratch("always"), 1 << 20, FsyncPolicy::Always).unwrap();
    always.append(&mut alert(0)).unwrap();
    assert!(always.sendable_from(0).is_some());
}

// A file system that fails on purpose, as SQLite's tests do to its journal: operation number
// `at` fails with the planned fault; a power loss keeps only what was synced (file data by
// file sync, names by folder sync).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Half the bytes land, then ENOSPC.
    NoSpace,
    /// EIO; a failed sync drops the file's unsynced data (as Linux may).
    Eio,
    /// Half the bytes land and the write says so (the caller must go on).
    Short,
    /// The power goes: this and every later operation fails.
    PowerLoss,
}

#[derive(Default)]
struct Inode {
    live: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Default)]
struct Disk {
    inodes: Vec<Inode>,
    names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    ops: u64,
    fault: Option<(u64, Fault)>,
    no_space_next: bool,
    dead: bool,
}

impl Disk {
    /// Counts one operation; returns the fault it meets.
    fn step(&mut self) -> Option<Fault> {
        if self.dead {
            return Some(Fault::PowerLoss);
        }
        let index = self.ops;
        self.ops += 1;
        match self.fault {
            Some((at, fault)) if at == index => {
                self.dead = fault == Fault::PowerLoss;
                Some(fault)
            }
            _ => None,
        }
    }

    fn power_cycle(&mut self) {
        for inode in &mut self.inodes {
            inode.live = inode.synced.clone();
        }
        self.names = self.durable_names.clone();
        self.fault = None;
        self.dead = false;
        self.no_space_next = false;
    }

    fn new_inode(&mut self, path: &Path) -> usize {
        self.inodes.push(Inode::default());
        let inode = self.inodes.len() - 1;
        self.names.insert(path.to_path_buf(), inode);
        inode
    }
}

fn error(fault: Fault) -> io::Error {
    match fault {
        Fault::NoSpace => io::Error::from_raw_os_error(28),
        _ => io::Error::from_raw_os_error(5),
    }
}

#[derive(Clone, Default)]
struct FaultyStorage(Arc<Mutex<Disk>>);

struct FaultyFile {
    disk: Arc<Mutex<Disk>>,
    inode: usize,
}

impl FaultyStorage {
    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.0.lock().unwrap()
    }
}

impl Storage for FaultyStorage {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let disk = self.disk();
        Ok(disk.names.get(path).map(|&i| disk.inodes[i].live.clone()))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut disk = self.disk();
        if let Some(fault) = disk.step() {
            return Err(error(fault));
        }
        let inode = match disk.names.get(path) {
            Some(&i) => i,
            None => disk.new_inode(path),
        };
        Ok(Box::new(FaultyFile {
            disk: self.0.clone(),
            inode,
        }))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut disk = self.disk();
        if let Some(fault) = disk.step() {
            return Err(error(fault));
        }
        let inode = disk.new_inode(path);
        Ok(Box::new(FaultyFile {
            disk: self.0.clone(),
            inode,
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        if let Some(fault) = disk.step() {
            return Err(error(fault));
        }
        let inode = disk.names.remove(from).ok_or(io::ErrorKind::NotFound)?;
        disk.names.insert(to.to_path_buf(), inode);
        Ok(())
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        if let Some(fault) = disk.step() {
            return Err(error(fault));
        }
        disk.durable_names = disk.names.clone();
        Ok(())
    }
}

impl StorageFile for FaultyFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut disk = self.disk.lock().unwrap();
        if std::mem::take(&mut disk.no_space_next) {
            return Err(error(Fault::NoSpace));
        }
        let half = bytes.len().div_ceil(2);
        match disk.step() {
            None => {
                disk.inodes[self.inode].live.extend_from_slice(bytes);
                Ok(bytes.len())
            }
            Some(Fault::NoSpace) => {
                disk.inodes[self.inode]
                    .live
                    .extend_from_slice(&bytes[..half]);
                disk.no_space_next = true;
                Ok(half)
            }
            Some(Fault::Short) => {
                disk.inodes[self.inode]
                    .live
                    .extend_from_slice(&bytes[..half]);
                Ok(half)
            }
            Some(fault) => Err(error(fault)),
        }
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut disk = self.disk.lock().unwrap();
        match disk.step() {
            None | Some(Fault::Short) => {
                disk.inodes[self.inode].live.resize(len as usize, 0);
                Ok(())
            }
            Some(fault) => Err(error(fault)),
        }
    }
    fn sync(&mut self) -> io::Result<()> {
        let mut disk = self.disk.lock().unwrap();
        let inode = &mut self.inode;
        match disk.step() {
            None | Some(Fault::Short) => {
                let file = &mut disk.inodes[*inode];
                file.synced = file.live.clone();
                Ok(())
            }
            Some(Fault::PowerLoss) => Err(error(Fault::PowerLoss)),
            Some(fault) => {
                // The kernel gives up on the dirty pages: they are gone from the cache too.
                let file = &mut disk.inodes[*inode];
                file.live = file.synced.clone();
                Err(error(fault))
            }
        }
    }
}

/// What the peer saw of one run: every alert that was sendable (so may have been sent), and
/// whether the peer acknowledged it.
struct Run {
    sent: BTreeMap<u64, bool>,
    /// Alerts evicted unacknowledged from the full journal (counted losses).
    evicted: u64,
    ops: u64,
}

/// Alerts, ACKs of what was sent (all but every seventh), syncs; then the machine dies.
fn run(storage: &FaultyStorage, policy: FsyncPolicy) -> Run {
    let path = Path::new("/journal/alerts.journal");
    let mut sent = BTreeMap::new();
    let mut evicted = 0;
    if let Ok(mut j) = Journal::open_on(Arc::new(storage.clone()), path, 4096, policy) {
        for i in 0..60u64 {
            let _ = j.append(&mut alert(i));
            if i % 5 == 4 {
                let _ = j.sync();
            }
            let _ = j.sync_if_due();
            let mut from = 0;
            while let Some(a) = j.sendable_from(from) {
                sent.entry(a.seq).or_insert(false);
                from = a.seq + 1;
            }
            let to_ack: Vec<u64> = sent
                .iter()
                .filter(|&(&seq, &acked)| !acked && seq % 7 != 0)
                .map(|(&seq, _)| seq)
                .collect();
            for seq in to_ack {
                if j.ack(seq).is_ok() {
                    sent.insert(seq, true);
                }
            }
        }
        evicted = j.evicted();
    }
    let ops = storage.disk().ops;
    Run { sent, evicted, ops }
}

#[test]
fn faults_at_every_operation_lose_no_synced_alert_and_reuse_no_number() {
    // `never` sends what is written without waiting for the device: a power cut may lose it,
    // but its number must still never come back.
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::ZERO),
        FsyncPolicy::Never,
    ] {
        let clean = run(&FaultyStorage::default(), policy);
        assert!(clean.ops > 100, "{policy:?}: {} operations", clean.ops);
        assert!(clean.sent.len() == 60, "{policy:?}: every alert went out");
        assert_eq!(clean.evicted, 0, "{policy:?}: the bound holds the workload");
        let mut checked = 0;
        for fault in [Fault::NoSpace, Fault::Eio, Fault::Short, Fault::PowerLoss] {
            for at in 0..clean.ops {
                let storage = FaultyStorage::default();
                storage.disk().fault = Some((at, fault));
                let outcome = run(&storage, policy);
                storage.disk().power_cycle();
                let path = Path::new("/journal/alerts.journal");
                let mut j = Journal::open_on(Arc::new(storage.clone()), path, 4096, policy)
                    .unwrap_or_else(|e| panic!("{policy:?} {fault:?} at {at}: reopen: {e}"));
                // When writes fail, nothing is acknowledged and a full journal evicts the oldest
                // (counted) alerts; no other alert may go.
                let lost: Vec<u64> = outcome
                    .sent
                    .iter()
                    .filter(|&(&seq, &acked)| !acked && !j.is_pending(seq))
                    .map(|(&seq, _)| seq)
                    .collect();
                assert!(
                    policy == FsyncPolicy::Never || lost.len() as u64 <= outcome.evicted,
                    "{policy:?} {fault:?} at {at}: alerts {lost:?} were sent, not acknowledged, \
                     and are gone ({} evicted)",
                    outcome.evicted
                );
                if let Some(&last) = outcome.sent.keys().last() {
                    assert!(
                        j.next_seq() > last,
                        "{policy:?} {fault:?} at {at}: next seq {} reuses {last}",
                        j.next_seq()
                    );
                }
                // A failed write was cut back: the file holds no broken record.
                assert_eq!(
                    j.recovery().damaged_bytes,
                    0,
                    "{policy:?} {fault:?} at {at}: a failed write left a broken record"
                );
                // And it goes on working.
                let seq = j.append(&mut alert(99)).unwrap();
                j.sync().unwrap();
                assert_eq!(j.sendable_from(seq).unwrap().frame, 99);
                checked += 1;
            }
        }
        assert_eq!(checked, 4 * clean.ops);
    }
}
