//! The evidence store: for each alert, the flagged tile (JPEG) and its anomaly heatmap (PNG), in a
//! size-bounded folder where the oldest alerts' files go first. The peer fetches them by alert
//! `seq` (`get_evidence`). Files are written by a thread of their own behind a short queue, so
//! encoding never delays inference; when the queue is full the evidence is skipped and counted.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use image::{ImageBuffer, Rgb, RgbImage};
use serde::Deserialize;

use inspect_core::settings::{Checker, ConfigError};
use inspect_protocol::command::Part;

/// Jobs waiting for the writer before new ones are skipped.
const QUEUE: usize = 8;
/// JPEG quality of the tile: enough to see a crack, small enough for a radio link.
const JPEG_QUALITY: u8 = 85;

/// `[evidence]`: flagged tiles and heatmaps kept on disk for the peer to fetch.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceSettings {
    /// Folder (created if missing).
    pub dir: PathBuf,
    /// Size bound of the folder, 65536 to 68719476736 bytes; the oldest go first.
    #[serde(default = "default_evidence_bytes")]
    pub max_bytes: u64,
}

fn default_evidence_bytes() -> u64 {
    64 << 20
}

impl EvidenceSettings {
    /// Checks the size bound.
    pub fn validate(&self, c: &Checker<'_>) -> Result<(), ConfigError> {
        c.range("evidence.max_bytes", self.max_bytes, 1 << 16, 1 << 36)
    }

    /// Opens the store and starts its writer thread.
    pub fn start(&self) -> Result<EvidenceWriter, EvidenceError> {
        EvidenceWriter::start(EvidenceStore::open(&self.dir, self.max_bytes)?)
    }
}

/// Errors of the evidence folder.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The folder or a file in it could not be read or written.
    #[error("evidence store {path}: {source}")]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An image could not be encoded.
    #[error("evidence for alert {seq}: {source}")]
    Encode {
        /// The alert.
        seq: u64,
        /// The cause.
        source: image::ImageError,
    },
    /// The writer thread could not start.
    #[error("cannot start the evidence writer thread: {0}")]
    Spawn(std::io::Error),
}

/// Where the store keeps `part` of alert `seq` (names shared with the monitor: the protocol's).
pub fn evidence_path(dir: &Path, seq: u64, part: Part) -> PathBuf {
    dir.join(inspect_protocol::evidence::file_name(seq, part))
}

/// The folder and its size accounting.
#[derive(Debug)]
pub struct EvidenceStore {
    dir: PathBuf,
    max_bytes: u64,
    // (seq, bytes of its files), oldest first.
    kept: VecDeque<(u64, u64)>,
    total: u64,
}

impl EvidenceStore {
    /// Opens (creating) `dir` and accounts for what it already holds.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<EvidenceStore, EvidenceError> {
        let io = |source| EvidenceError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut sizes = std::collections::BTreeMap::<u64, u64>::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let name = name.to_str().unwrap_or_default();
            if name.ends_with("-tile.tmp") || name.ends_with("-heatmap.tmp") {
                // Half-written by a run that died mid-save: never referenced, remove it.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(seq) = inspect_protocol::evidence::seq_of(name) else {
                continue;
            };
            let len = entry.metadata().map_err(io)?.len();
            *sizes.entry(seq).or_default() += len;
        }
        let mut store = EvidenceStore {
            dir: dir.to_path_buf(),
            max_bytes,
            total: sizes.values().sum(),
            kept: sizes.into_iter().collect(),
        };
        store.evict(0)?;
        Ok(store)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of evidence kept.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Alerts whose evidence is kept, oldest first.
    pub fn kept(&self) -> impl Iterator<Item = u64> + '_ {
        self.kept.iter().map(|(s, _)| *s)
    }

    /// Removes the oldest alerts' files until `incoming` more bytes fit the bound.
    fn evict(&mut self, incoming: u64) -> Result<(), EvidenceError> {
        while self.total + incoming > self.max_bytes {
            let Some((seq, bytes)) = self.kept.pop_front() else {
                break;
            };
            for part in [Part::Tile, Part::Heatmap] {
                let path = evidence_path(&self.dir, seq, part);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(EvidenceError::Io { path, source }),
                }
            }
            self.total -= bytes;
        }
        Ok(())
    }

    /// Writes alert `seq`'s tile and heatmap (each written aside, then renamed, so a reader never
    /// sees half a file), evicting the oldest to stay within the bound.
    pub fn save(
        &mut self,
        seq: u64,
        tile: &RgbImage,
        heatmap: &RgbImage,
    ) -> Result<(), EvidenceError> {
        let mut jpeg = Vec::new();
        let encode = |source| EvidenceError::Encode { seq, source };
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY)
            .encode_image(tile)
            .map_err(encode)?;
        let mut png = Vec::new();
        heatmap
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(encode)?;
        let bytes = (jpeg.len() + png.len()) as u64;
        self.evict(bytes)?;
        for (part, data) in [(Part::Tile, &jpeg), (Part::Heatmap, &png)] {
            let path = evidence_path(&self.dir, seq, part);
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, data)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|source| EvidenceError::Io {
                    path: path.clone(),
                    source,
                })?;
        }
        // A restarted daemon may reuse a seq whose alert was never sent: replace its entry.
        if let Some(i) = self.kept.iter().position(|(s, _)| *s == seq) {
            if let Some((_, old)) = self.kept.remove(i) {
                self.total -= old;
            }
        }
        self.kept.push_back((seq, bytes));
        self.total += bytes;
        Ok(())
    }
}

/// An anomaly map drawn as a picture: blue (normal) through green and yellow to red at twice
/// the threshold; pixels above the threshold are the warm half.
pub fn heatmap(map: &[f32], width: u32, height: u32, threshold: f32) -> RgbImage {
    ImageBuffer::from_fn(width, height, |x, y| {
        let v = map
            .get((y * width + x) as usize)
            .copied()
            .unwrap_or_default();
        let t = if threshold.abs() > f32::EPSILON {
            (v / threshold / 2.0).clamp(0.0, 1.0)
        } else {
            0.0
        };
        // Piecewise-linear ramp through blue, cyan, green, yellow, red.
        let stops = [
            [0.0, 0.0, 0.5],
            [0.0, 0.6, 1.0],
            [0.1, 0.8, 0.2],
            [1.0, 0.9, 0.0],
            [0.9, 0.0, 0.0],
        ];
        let pos = t * (stops.len() - 1) as f32;
        let i = (pos as usize).min(stops.len() - 2);
        let f = pos - i as f32;
        let c = |k: usize| ((stops[i][k] * (1.0 - f) + stops[i + 1][k] * f) * 255.0) as u8;
        Rgb([c(0), c(1), c(2)])
    })
}

/// One alert's evidence, handed to the writer thread.
#[derive(Debug)]
pub struct EvidenceJob {
    /// The alert.
    pub seq: u64,
    /// The flagged tile, cut from the frame.
    pub tile: RgbImage,
    /// Its anomaly map, model-input size, row-major.
    pub map: Vec<f32>,
    /// Map width.
    pub width: u32,
    /// Map height.
    pub height: u32,
    /// Threshold the tile passed.
    pub threshold: f32,
}

/// The writer thread in front of an [`EvidenceStore`].
#[derive(Debug)]
pub struct EvidenceWriter {
    tx: Option<SyncSender<EvidenceJob>>,
    skipped: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl EvidenceWriter {
    /// Starts the writer over `store`.
    pub fn start(mut store: EvidenceStore) -> Result<EvidenceWriter, EvidenceError> {
        let (tx, rx) = sync_channel::<EvidenceJob>(QUEUE);
        let skipped = Arc::new(AtomicU64::new(0));
        let failed = skipped.clone();
        let thread = std::thread::Builder::new()
            .name("evidence".into())
            .spawn(move || {
                for job in rx {
                    let picture = heatmap(&job.map, job.width, job.height, job.threshold);
                    if let Err(e) = store.save(job.seq, &job.tile, &picture) {
                        log::warn!("{e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .map_err(EvidenceError::Spawn)?;
        Ok(EvidenceWriter {
            tx: Some(tx),
            skipped,
            thread: Some(thread),
        })
    }

    /// Queues a job; skips it (and counts it) when the writer is behind.
    pub fn submit(&self, job: EvidenceJob) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) = tx.try_send(job) {
            log::debug!("evidence for alert {} skipped: writer busy", job.seq);
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Evidence skipped or failed so far.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

impl Drop for EvidenceWriter {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ei-evidence-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn tile(seed: u8) -> RgbImage {
        ImageBuffer::from_fn(96, 96, |x, y| {
            Rgb([
                (x as u8).wrapping_mul(seed),
                (y as u8) ^ seed,
                ((x + y) as u8).wrapping_add(seed),
            ])
        })
    }

    #[test]
    fn files_decode_and_the_oldest_go_first() {
        let dir = scratch("ring");
        let map: Vec<f32> = (0..64 * 64).map(|i| (i % 64) as f32 / 16.0).collect();
        let heat = heatmap(&map, 64, 64, 2.0);
        // Left edge cold (blue), right edge past twice the threshold (red).
        assert!(heat.get_pixel(0, 0)[2] > 100 && heat.get_pixel(0, 0)[0] < 50);
        assert!(heat.get_pixel(63, 0)[0] > 200 && heat.get_pixel(63, 0)[2] < 50);

        let mut store = EvidenceStore::open(&dir, 1 << 16).unwrap();
        store.save(0, &tile(1), &heat).unwrap();
        let one = store.total_bytes();
        let back = image::open(evidence_path(&dir, 0, Part::Tile)).unwrap();
        assert_eq!((back.width(), back.height()), (96, 96));
        let back = image::open(evidence_path(&dir, 0, Part::Heatmap)).unwrap();
        assert_eq!(back.to_rgb8(), heat);

        for seq in 1..40 {
            store.save(seq, &tile(seq as u8), &heat).unwrap();
            assert!(store.total_bytes() <= 1 << 16);
        }
        let kept: Vec<u64> = store.kept().collect();
        // Evicted down to the bound, not far below it.
        assert!(
            kept.len() < 40 && store.total_bytes() > (1 << 15),
            "{kept:?}"
        );
        assert_eq!(*kept.last().unwrap(), 39, "the newest stay");
        assert!(
            !evidence_path(&dir, 0, Part::Tile).exists(),
            "the oldest went"
        );

        // Reopening accounts for what is there (a half-written file from a crash is removed),
        // and a smaller bound evicts at once.
        std::fs::write(dir.join("000000000040-tile.tmp"), b"half a jpeg").unwrap();
        let store = EvidenceStore::open(&dir, 1 << 16).unwrap();
        assert!(!dir.join("000000000040-tile.tmp").exists());
        assert_eq!(store.kept().collect::<Vec<_>>(), kept);
        let small = EvidenceStore::open(&dir, 3 * one).unwrap();
        assert!(small.kept().count() <= 3);
        assert_eq!(small.kept().last(), Some(39));
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(files, 2 * small.kept().count());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
