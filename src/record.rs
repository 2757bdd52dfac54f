//! `[record]`: the enrollment run. Every `every`-th frame the daemon takes (or, with a trigger,
//! inspects) is saved losslessly (PNG) with its position into a bounded folder, for
//! `inspect-train enroll` to train the site's model from. A thread of its own encodes and
//! writes; the inspection loop only hands frames over, and when the writer falls behind, frames
//! are dropped and counted rather than waited for.
//!
//! The folder is what the folder source reads: `frame-NNNNNNNN.png` in order, and
//! `positions.csv` (see [`crate::position::replay`]), so a recorded run replays with its
//! positions. A second run into the same folder goes on after the frames already there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Deserialize;

use crate::frames::Frame;
use crate::position::replay::{row, HEADER, POSITIONS_FILE};
use inspect_core::settings::{Checker, ConfigError};

/// `[record]`: where and how often to save frames.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSettings {
    /// The folder (created if missing).
    pub dir: PathBuf,
    /// Save one frame in this many, 1-10000.
    #[serde(default = "one")]
    pub every: u32,
    /// Stop saving when the folder holds this many bytes, 1048576 (1 MiB) to 1099511627776
    /// (1 TiB); default 4 GiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn one() -> u32 {
    1
}
fn default_max_bytes() -> u64 {
    4 << 30
}

impl RecordSettings {
    /// Checks the rate and the bound.
    pub fn validate(&self, c: &Checker<'_>) -> Result<(), ConfigError> {
        c.range("record.every", self.every, 1, 10_000)?;
        c.range("record.max_bytes", self.max_bytes, 1 << 20, 1 << 40)
    }
}

/// The recording could not start.
#[derive(Debug, thiserror::Error)]
#[error("record.dir {path}: {source}")]
pub struct RecordError {
    /// The folder or file.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

/// What the recorder did, readable while it runs.
#[derive(Debug, Default)]
pub struct RecordCounters {
    /// Frames saved.
    pub saved: AtomicU64,
    /// Frames not saved because the writer was still busy with earlier ones.
    pub dropped: AtomicU64,
    /// Frames not saved because the folder reached `max_bytes`.
    pub over_bound: AtomicU64,
    /// Frames not saved because a write failed.
    pub failed: AtomicU64,
}

impl RecordCounters {
    /// Frames not saved, for whatever reason.
    pub fn missed(&self) -> u64 {
        [&self.dropped, &self.over_bound, &self.failed]
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }
}

/// Hands frames to the writer thread.
#[derive(Debug)]
pub struct Recorder {
    tx: Option<SyncSender<Frame>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<RecordCounters>,
    every: u64,
    offered: u64,
}

/// The writer's state.
struct Writer {
    dir: PathBuf,
    positions: std::fs::File,
    next_index: u64,
    bytes: u64,
    max_bytes: u64,
    counters: Arc<RecordCounters>,
    warned_full: bool,
}

impl Recorder {
    /// Creates the folder, finds what an earlier run left there, and starts the writer.
    pub fn start(settings: &RecordSettings) -> Result<Recorder, RecordError> {
        let fail = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RecordError { path, source }
        };
        let dir = &settings.dir;
        std::fs::create_dir_all(dir).map_err(fail(dir))?;
        let (mut frames, mut bytes) = (0u64, 0u64);
        for entry in std::fs::read_dir(dir).map_err(fail(dir))? {
            let entry = entry.map_err(fail(dir))?;
            bytes += entry.metadata().map_or(0, |m| m.len());
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("frame-") && name.ends_with(".png") {
                frames += 1;
            }
        }
        let csv = dir.join(POSITIONS_FILE);
        let mut positions = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&csv)
            .map_err(fail(&csv))?;
        if positions.metadata().map_err(fail(&csv))?.len() == 0 {
            writeln!(positions, "{HEADER}").map_err(fail(&csv))?;
        }
        let counters = Arc::new(RecordCounters::default());
        let mut writer = Writer {
            dir: dir.clone(),
            positions,
            next_index: frames,
            bytes,
            max_bytes: settings.max_bytes,
            counters: counters.clone(),
            warned_full: false,
        };
        log::info!(
            "recording one frame in {} into {} ({} frames, {} bytes there already; bound {} bytes)",
            settings.every,
            dir.display(),
            frames,
            bytes,
            settings.max_bytes
        );
        // Two frames in hand: enough to ride out one slow write, never a growing backlog.
        let (tx, rx) = sync_channel::<Frame>(2);
        let thread = std::thread::Builder::new()
            .name("record".into())
            .spawn(move || {
                for frame in rx {
                    writer.save(&frame);
                }
            })
            .map_err(fail(dir))?;
        Ok(Recorder {
            tx: Some(tx),
            thread: Some(thread),
            counters,
            every: u64::from(settings.every),
            offered: 0,
        })
    }

    /// Offers a frame: every `every`-th is queued for saving. From a live camera it is dropped
    /// (and counted) when the writer is behind: inspection never waits for the disk. From a
    /// recording (`wait`) nothing is lost: the next frame can wait.
    pub fn offer(&mut self, frame: &Frame, wait: bool) {
        self.offered += 1;
        if !(self.offered - 1).is_multiple_of(self.every) {
            return;
        }
        let Some(tx) = &self.tx else { return };
        let sent = if wait {
            tx.send(frame.clone()).is_ok()
        } else {
            match tx.try_send(frame.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
            }
        };
        if !sent {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters.
    pub fn counters(&self) -> &RecordCounters {
        &self.counters
    }

    /// Saves what is queued and stops the writer.
    pub fn close(mut self) -> Arc<RecordCounters> {
        self.finish();
        self.counters.clone()
    }

    fn finish(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the record thread panicked");
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Writer {
    fn save(&mut self, frame: &Frame) {
        let mut png = Vec::new();
        let encoded = image::codecs::png::PngEncoder::new_with_quality(
            std::io::Cursor::new(&mut png),
            image::codecs::png::CompressionType::Fast,
            image::codecs::png::FilterType::Adaptive,
        );
        if let Err(e) = frame.image.write_with_encoder(encoded) {
            log::error!("record: frame {}: {e}", frame.number);
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.bytes + png.len() as u64 > self.max_bytes {
            if !self.warned_full {
                log::warn!(
                    "record: {} reached its bound of {} bytes; no more frames are saved",
                    self.dir.display(),
                    self.max_bytes
                );
                self.warned_full = true;
            }
            self.counters.over_bound.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let name = format!("frame-{:08}.png", self.next_index);
        let path = self.dir.join(&name);
        let line = row(
            &name,
            frame.number,
            frame.timestamp,
            frame.position.as_ref(),
        );
        let written = std::fs::write(&path, &png)
            .and_then(|()| writeln!(self.positions, "{line}"))
            .and_then(|()| self.positions.flush());
        match written {
            Ok(()) => {
                self.next_index += 1;
                self.bytes += png.len() as u64 + line.len() as u64 + 1;
                self.counters.saved.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                log::error!("record: {}: {e}", path.display());
                let _ = std::fs::remove_file(&path);
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{FolderSource, FrameSource};
    use crate::position::{Fix, Position};
    use std::time::{Duration, SystemTime};

    fn frame(number: u64) -> Frame {
        Frame {
            number,
            image: image::RgbImage::from_fn(64, 48, |x, y| {
                image::Rgb([(x * 4) as u8, (y * 5) as u8, number as u8])
            }),
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + number),
            origin: "test".into(),
            position: Some(Position {
                fix: Fix::Chainage {
                    metres: number as f64 * 0.5,
                },
                age_ms: 0,
                stale: false,
            }),
        }
    }

    #[test]
    fn every_nth_frame_is_saved_losslessly_and_replays_with_its_position() {
        let dir = std::env::temp_dir().join(format!("ei-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = RecordSettings {
            dir: dir.clone(),
            every: 3,
            max_bytes: 1 << 20,
        };
        let mut recorder = Recorder::start(&settings).unwrap();
        for n in 0..9 {
            recorder.offer(&frame(n), true);
        }
        let counters = recorder.close();
        assert_eq!(counters.saved.load(Ordering::Relaxed), 3);
        // A second run appends after the first: frames 0 and 3 of it.
        let mut again = Recorder::start(&settings).unwrap();
        for n in 100..104 {
            again.offer(&frame(n), true);
        }
        again.close();
        // The folder replays: the same pixels, in order, with their positions.
        let mut source = FolderSource::open(&dir, false).unwrap();
        let mut got = Vec::new();
        while let Some(f) = source.next_frame().unwrap() {
            got.push(f);
        }
        let numbers = [0u64, 3, 6, 100, 103];
        assert_eq!(got.len(), numbers.len());
        for (f, &n) in got.iter().zip(&numbers) {
            assert_eq!(f.image, frame(n).image, "frame {n}: lossless");
            assert_eq!(f.position, frame(n).position, "frame {n}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn from_a_live_camera_frames_are_dropped_and_counted_never_waited_for() {
        let dir = std::env::temp_dir().join(format!("ei-record-live-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = RecordSettings {
            dir: dir.clone(),
            every: 1,
            max_bytes: 1 << 30,
        };
        let mut recorder = Recorder::start(&settings).unwrap();
        let big = Frame {
            image: image::RgbImage::from_fn(1280, 720, |x, y| {
                image::Rgb([(x ^ y) as u8, (x * y) as u8, x as u8])
            }),
            ..frame(0)
        };
        for _ in 0..20 {
            recorder.offer(&big, false);
        }
        // Had it waited for the writer, nothing would have been dropped.
        let counters = recorder.close();
        let (saved, dropped) = (
            counters.saved.load(Ordering::Relaxed),
            counters.dropped.load(Ordering::Relaxed),
        );
        assert_eq!(saved + dropped, 20);
        assert!(
            dropped > 0 && saved >= 2,
            "{saved} saved, {dropped} dropped"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_folder_bound_stops_saving_and_counts() {
        let dir = std::env::temp_dir().join(format!("ei-record-bound-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // An earlier run left the folder almost full.
        std::fs::write(dir.join("earlier.bin"), vec![0u8; (1 << 20) - 100]).unwrap();
        let settings = RecordSettings {
            dir: dir.clone(),
            every: 1,
            max_bytes: 1 << 20,
        };
        let mut recorder = Recorder::start(&settings).unwrap();
        recorder.offer(&frame(0), true);
        let counters = recorder.close();
        assert_eq!(counters.saved.load(Ordering::Relaxed), 0);
        assert_eq!(counters.over_bound.load(Ordering::Relaxed), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
