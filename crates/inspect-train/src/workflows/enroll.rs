//! `inspect-train enroll`: from a recorded enrollment run (a defect-free pass through a new site,
//! saved by `inspectd`'s `[record]`) to a calibrated, optionally signed bundle for that site.
//!
//! The recorded frames are split by position in the run: every `holdout_every`-th frame is kept
//! apart for the threshold, the others are cut into tiles exactly as the daemon cuts frames
//! (at most `max_tiles` of them, spread evenly over the run) and the flows train on those tiles
//! with the config's synthetic anomalies. The threshold is then set on the held-out frames' tiles,
//! also cut as the daemon cuts them. A summary of what was done and how long each stage took is
//! written beside the bundle (`OUT/enrollment.json`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::fit::{fit_bundle, TrainDevice, TrainJob};
use super::sign::sign_bundle;
use super::{write_file, WorkflowError};
use crate::dataset::{list_images, load_image};
use crate::records::progress_bar;
use inspect_core::detector::Tiling;
use inspect_core::tiler::TileGrid;

/// An enrollment.
#[derive(Clone, Debug)]
pub struct EnrollJob {
    /// The recorded folder (`frame-*.png` and `positions.csv`, or any folder of frames).
    pub recording: PathBuf,
    /// Trainer config: `[training]` and `[synthesis]` (the defect bank).
    pub config: PathBuf,
    /// Extractor ONNX.
    pub extractor: PathBuf,
    /// Human name of the extractor for the manifest.
    pub extractor_name: String,
    /// The daemon's tiling (`[tiling]` of its config).
    pub tiling: Tiling,
    /// One frame in this many is held out for the threshold.
    pub holdout_every: u32,
    /// Train on at most this many tiles.
    pub max_tiles: usize,
    /// Overrides `training.epochs`.
    pub epochs: Option<u32>,
    /// Where the flows train.
    pub device: TrainDevice,
    /// Threads of the CPU trainer.
    pub threads: Option<u32>,
    /// Work folder: tiles, held-out frames, feature cache, checkpoint (kept: a second run
    /// resumes).
    pub work: PathBuf,
    /// Sign the bundle with this secret key as this release.
    pub sign: Option<(PathBuf, u64)>,
    /// The bundle folder to write.
    pub out: PathBuf,
}

/// What an enrollment did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EnrollSummary {
    /// Frames in the recording.
    pub frames: usize,
    /// Of which held out for the threshold.
    pub holdout_frames: usize,
    /// Tiles the flows trained on.
    pub training_tiles: usize,
    /// Tiles per frame as the daemon cuts them.
    pub tiles_per_frame: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// The threshold chosen on the held-out tiles.
    pub threshold: f32,
    /// Held-out tiles above it.
    pub holdout_alarms: usize,
    /// Held-out tiles.
    pub holdout_tiles: usize,
    /// Whether the bundle was signed.
    pub signed: bool,
    /// Seconds per stage: cutting tiles, training (features, flows, calibration), signing.
    pub seconds: Vec<(String, f64)>,
}

impl std::fmt::Display for EnrollSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: f64 = self.seconds.iter().map(|(_, s)| s).sum();
        write!(
            f,
            "{} frames ({} held out, {} tiles each): trained {} epochs on {} tiles; threshold {:.4} \
             ({} of {} held-out tiles above it){}; {:.0} s (",
            self.frames,
            self.holdout_frames,
            self.tiles_per_frame,
            self.epochs,
            self.training_tiles,
            self.threshold,
            self.holdout_alarms,
            self.holdout_tiles,
            if self.signed { "; signed" } else { "" },
            total
        )?;
        for (i, (stage, s)) in self.seconds.iter().enumerate() {
            write!(f, "{}{stage} {s:.0} s", if i > 0 { ", " } else { "" })?;
        }
        write!(f, ")")
    }
}

/// Runs an enrollment; see the module documentation.
pub fn run_enroll(job: &EnrollJob) -> Result<EnrollSummary, WorkflowError> {
    let frames = list_images(&job.recording)?;
    if frames.len() < 2 {
        return Err(WorkflowError::Usage(format!(
            "{}: {} frames; an enrollment needs a recorded run (inspectd's [record])",
            job.recording.display(),
            frames.len()
        )));
    }
    let every = job.holdout_every.max(2) as usize;
    let (mut training, mut holdout) = (Vec::new(), Vec::new());
    for (i, frame) in frames.iter().enumerate() {
        if i % every == every - 1 {
            holdout.push(frame.clone());
        } else {
            training.push(frame.clone());
        }
    }
    let started = Instant::now();
    let tiles_dir = job.work.join("tiles");
    let holdout_dir = job.work.join("holdout");
    for dir in [&tiles_dir, &holdout_dir] {
        std::fs::create_dir_all(dir).map_err(|source| WorkflowError::Io {
            path: dir.clone(),
            source,
        })?;
    }
    let (tiles_per_frame, training_tiles) = cut_tiles(job, &training, &tiles_dir)?;
    for frame in &holdout {
        let name = frame.file_name().unwrap_or_default();
        link_or_copy(frame, &holdout_dir.join(name))?;
    }
    let cut = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let train = TrainJob {
        config: job.config.clone(),
        extractor: job.extractor.clone(),
        extractor_name: job.extractor_name.clone(),
        images: tiles_dir,
        cache: job.work.join("cache"),
        epochs: job.epochs,
        device: job.device,
        threads: job.threads,
        workers: None,
        holdout: Some((holdout_dir, Some(job.tiling))),
    };
    let checkpoint = job.work.join("bundle.ckpt");
    let report = fit_bundle(&train, None, Some(checkpoint), true, &job.out)?;
    let trained = started.elapsed().as_secs_f64();
    let mut seconds = vec![("cutting".to_string(), cut), ("training".into(), trained)];
    if let Some((key, version)) = &job.sign {
        let started = Instant::now();
        sign_bundle(&job.out, key, *version)?;
        seconds.push(("signing".into(), started.elapsed().as_secs_f64()));
    }
    let calibration = &report.calibration;
    let summary = EnrollSummary {
        frames: frames.len(),
        holdout_frames: holdout.len(),
        training_tiles,
        tiles_per_frame,
        epochs: report.epochs.len(),
        threshold: calibration.threshold,
        holdout_alarms: calibration.holdout_alarms,
        holdout_tiles: calibration.holdout_scores.len(),
        signed: job.sign.is_some(),
        seconds,
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| WorkflowError::Io {
        path: job.out.join("enrollment.json"),
        source: std::io::Error::other(e),
    })?;
    write_file(&job.out.join("enrollment.json"), json)?;
    Ok(summary)
}

/// Cuts the training frames into tiles as the daemon does, at most `max_tiles` spread evenly
/// over the run (tiles already cut by an earlier run are kept); returns tiles per frame and
/// tiles written.
fn cut_tiles(
    job: &EnrollJob,
    frames: &[PathBuf],
    out: &Path,
) -> Result<(usize, usize), WorkflowError> {
    let first = load_image(&frames[0])?;
    let grid = TileGrid::new(
        first.width(),
        first.height(),
        job.tiling.tile_size,
        job.tiling.overlap,
    );
    let per_frame = grid.tiles.len();
    let total = frames.len() * per_frame;
    // Every k-th tile of the run in frame order: all positions and all tile places.
    let step = total.div_ceil(job.max_tiles.max(1)).max(1);
    let bar = progress_bar(
        true,
        frames.len(),
        "cutting tiles {bar:40} {pos}/{len} frames, {eta} left",
    );
    let mut written = 0;
    for (f, path) in frames.iter().enumerate() {
        let wanted: Vec<usize> = (0..per_frame)
            .filter(|t| (f * per_frame + t).is_multiple_of(step))
            .collect();
        bar.inc(1);
        if wanted.is_empty() {
            continue;
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = |t: usize| out.join(format!("{stem}-t{t:03}.png"));
        if wanted.iter().all(|&t| name(t).exists()) {
            written += wanted.len();
            continue;
        }
        let image = load_image(path)?;
        if image.dimensions() != (grid.frame_width, grid.frame_height) {
            log::warn!(
                "{}: {}x{}, the run's frames are {}x{}: skipped",
                path.display(),
                image.width(),
                image.height(),
                grid.frame_width,
                grid.frame_height
            );
            continue;
        }
        for t in wanted {
            let r = grid.tiles[t].rect;
            let tile = image::imageops::crop_imm(&image, r.x, r.y, r.width, r.height).to_image();
            let file = name(t);
            tile.save(&file).map_err(|source| WorkflowError::Image {
                path: file.clone(),
                source,
            })?;
            written += 1;
        }
    }
    bar.finish_and_clear();
    Ok((per_frame, written))
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), WorkflowError> {
    if to.exists() {
        return Ok(());
    }
    std::fs::hard_link(from, to)
        .or_else(|_| std::fs::copy(from, to).map(|_| ()))
        .map_err(|source| WorkflowError::Io {
            path: to.to_path_buf(),
            source,
        })
}
