//! The trainer (feature `train`): [`settings`] of the `[training]` table, the CFlow-AD loop on
//! cached features ([`fit`]), and the calibrated bundle ([`calibrate`]). [`run_fit`] chains
//! them: features into the cache, held-out split, epochs, export, calibration.

pub mod calibrate;
pub mod checkpoint;
pub mod fit;
pub mod settings;

use std::path::{Path, PathBuf};

use crate::dataset::DatasetError;
use crate::features::build::{BuildError, CacheBuild, CachedImage};
use crate::features::cache::{CacheError, FeatureCache};
use crate::features::{ExtractError, FeatureExtractor};
use crate::synth::bank::Synthesizer;
pub use calibrate::HeldOut;
use calibrate::{write_calibrated_bundle, BundleParts, Calibration};
pub use fit::Backend;
use fit::{EpochLog, LevelShape, Trainer};
use inspect_core::bundle::logp_name;
use inspect_core::bundle::{BundleError, LevelSpec};
use inspect_core::engine::EngineError;
use inspect_core::onnx::OnnxWriteError;
use inspect_core::tiler::Normalization;
use settings::TrainSettings;

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The feature cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Filling the cache failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The extractor failed.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// A record the cache pass listed is gone.
    #[error("{image}: its cached features disappeared during training")]
    MissingRecord {
        /// The image.
        image: PathBuf,
    },
    /// An image could not be read.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// The bundle could not be written or read back.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The daemon's engine failed on the bundle.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The head could not be exported.
    #[error(transparent)]
    Onnx(#[from] OnnxWriteError),
    /// Held-out images of another bundle could not be scored (out-of-fold calibration).
    #[error(transparent)]
    HeldOut(#[from] crate::eval::EvalError),
    /// Too few images to train and hold some out.
    #[error("{images} usable images: at least 2 are needed (training and held-out)")]
    TooFewImages {
        /// Images available.
        images: usize,
    },
    /// A checkpoint could not be used.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// burn could not encode or decode an optimizer state.
    #[error("optimizer state: {0}")]
    Record(String),
    /// `training.level_weights` does not have one weight per level.
    #[error("training.level_weights has {given} values but the extractor has {levels} levels")]
    LevelWeights {
        /// Weights given.
        given: usize,
        /// Levels of the extractor.
        levels: usize,
    },
    /// The extractor's taps cannot make a bundle.
    #[error("tap {tap}: {message}")]
    Level {
        /// The tap.
        tap: String,
        /// What is wrong.
        message: String,
    },
}

/// A training run.
pub struct FitJob<'a> {
    /// The extractor ONNX bytes (copied into the bundle).
    pub extractor: &'a [u8],
    /// Its human name.
    pub extractor_name: String,
    /// Input normalization of the extractor.
    pub normalization: Normalization,
    /// Defect-free images.
    pub images: Vec<PathBuf>,
    /// Synthetic anomalies (`None`: L_NF only, the objective must be `none`).
    pub synthesizer: Option<&'a Synthesizer>,
    /// Feature cache root.
    pub cache_root: &'a Path,
    /// `[training]` settings.
    pub settings: TrainSettings,
    /// Where the flows train.
    pub backend: Backend,
    /// Extraction workers.
    pub workers: usize,
    /// Draw progress bars.
    pub progress: bool,
    /// Output bundle folder.
    pub out: &'a Path,
    /// Provenance written into the manifest's `[training]`.
    pub provenance: toml::Table,
    /// Checkpoint file, written after every epoch.
    pub checkpoint: Option<&'a Path>,
    /// Go on from the checkpoint when it exists.
    pub resume: bool,
    /// Defect-free images kept apart to set the threshold (e.g. frames of other passes, cut
    /// as the daemon cuts them); `None`: a `holdout_fraction` of `images`, by hash.
    pub holdout: Option<HeldOut>,
}

/// What a run did.
pub struct FitReport {
    /// One line per epoch.
    pub epochs: Vec<EpochLog>,
    /// Images trained on.
    pub train_images: Vec<CachedImage>,
    /// Images held out for the threshold.
    pub holdout_images: Vec<PathBuf>,
    /// Score constants and threshold.
    pub calibration: Calibration,
    /// The trained decoders.
    pub trainer: Trainer,
    /// The cache the features are in.
    pub cache: FeatureCache,
}

/// Whether an image is held out: the first 8 bytes of its hash, as a fraction of 2^64, fall
/// below `fraction` (stable whatever the file order).
fn held_out(image: &CachedImage, fraction: f64) -> bool {
    let crate::features::cache::RecordKey::Image { image: hash } = image.keys[0] else {
        return false;
    };
    let mut head = [0u8; 8];
    head.copy_from_slice(&hash[..8]);
    (u64::from_be_bytes(head) as f64 / u64::MAX as f64) < fraction
}

/// Runs the whole chain, calling `on_epoch` after each epoch.
pub fn run_fit(job: FitJob, on_epoch: &mut dyn FnMut(&EpochLog)) -> Result<FitReport, TrainError> {
    let fx = FeatureExtractor::new(job.extractor, job.normalization)?;
    let cache = FeatureCache::open(job.cache_root, fx.hash())?;
    let summary = CacheBuild {
        extractor: &fx,
        synthesizer: job.synthesizer,
        cache: &cache,
        workers: job.workers,
        progress: job.progress,
    }
    .run(&job.images)?;
    log::info!(
        "features: {} cached, {} computed, {} repaired, {} unreadable images",
        summary.hits,
        summary.computed,
        summary.repaired,
        summary.unreadable
    );
    let s = &job.settings;
    // With a held-out folder every image trains; else a fraction is kept apart by hash.
    let fraction = if job.holdout.is_some() {
        0.0
    } else {
        s.holdout_fraction
    };
    let (mut holdout, mut train): (Vec<CachedImage>, Vec<CachedImage>) = summary
        .images
        .into_iter()
        .partition(|i| held_out(i, fraction));
    if job.holdout.is_none() && holdout.is_empty() && train.len() > 1 {
        holdout.extend(train.pop());
    }
    let holdout_count = job
        .holdout
        .as_ref()
        .map_or(holdout.len(), |h| h.images.len());
    if train.is_empty() || holdout_count == 0 {
        return Err(TrainError::TooFewImages {
            images: train.len() + holdout_count,
        });
    }
    let first = cache
        .load(&train[0].keys[0])?
        .ok_or_else(|| TrainError::MissingRecord {
            image: train[0].image.clone(),
        })?;
    let size = fx.input_size() as usize;
    let mut shapes = Vec::new();
    let mut specs = Vec::new();
    for level in &first.levels {
        let (h, w) = (level.height as usize, level.width as usize);
        if h == 0 || !size.is_multiple_of(h) || h != w || level.channels < 2 {
            return Err(TrainError::Level {
                tap: level.name.clone(),
                message: format!(
                    "{}x{}x{} cannot carry a flow: square maps dividing the {size} px input \
                     and at least 2 channels are needed",
                    level.channels, h, w
                ),
            });
        }
        let stride = size / h;
        shapes.push(LevelShape {
            name: level.name.clone(),
            channels: level.channels as usize,
            height: h,
            width: w,
        });
        specs.push(LevelSpec {
            tap: level.name.clone(),
            logp: logp_name(stride),
            channels: level.channels as usize,
            height: h,
            width: w,
            stride,
        });
    }
    if !s.level_weights.is_empty() && s.level_weights.len() != specs.len() {
        return Err(TrainError::LevelWeights {
            given: s.level_weights.len(),
            levels: specs.len(),
        });
    }
    log::info!(
        "{} training images, {} held out; levels {}",
        train.len(),
        holdout_count,
        shapes
            .iter()
            .map(|l| format!("{} ({}x{}x{})", l.name, l.channels, l.height, l.width))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Folders for the checkpoint and the bundle now, not after the first epoch's work.
    for path in job.checkpoint.iter().chain([&job.out]) {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| checkpoint::CheckpointError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
    }
    let (mut trainer, start) = match job.checkpoint.filter(|p| job.resume && p.exists()) {
        Some(path) => {
            let saved = checkpoint::Checkpoint::load(path)?;
            let next = saved.next_epoch;
            log::info!("resuming from {} at epoch {}", path.display(), next + 1);
            (
                Trainer::resume(saved, path, shapes, s.clone(), job.backend.clone())?,
                next,
            )
        }
        None => (Trainer::new(shapes, s.clone(), job.backend.clone()), 0),
    };
    let mut epochs = Vec::new();
    for epoch in start..s.epochs {
        let log = trainer.epoch(epoch, &cache, &train, job.progress)?;
        on_epoch(&log);
        epochs.push(log);
        if let Some(path) = job.checkpoint {
            trainer.checkpoint(epoch + 1)?.save(path)?;
        }
    }
    let decoders = trainer.weights();
    let parts = BundleParts {
        extractor: job.extractor,
        extractor_name: job.extractor_name.clone(),
        input_size: size,
        normalization: job.normalization,
        levels: specs,
        combine: s.combine,
        post_processing: s.post_processing(),
        training: job.provenance.clone(),
    };
    let train_paths: Vec<PathBuf> = train.iter().map(|i| i.image.clone()).collect();
    let calibration_images = calibrate::calibration_sample(&train_paths);
    let (holdout_images, holdout_tiling) = match &job.holdout {
        Some(h) => (h.images.clone(), h.tiling),
        None => (holdout.iter().map(|i| i.image.clone()).collect(), None),
    };
    let calibration = write_calibrated_bundle(
        job.out,
        &parts,
        &decoders,
        &calibration_images,
        &HeldOut {
            images: holdout_images.clone(),
            tiling: holdout_tiling,
        },
        s.false_alarm_rate,
    )?;
    Ok(FitReport {
        epochs,
        train_images: train,
        holdout_images,
        calibration,
        trainer,
        cache,
    })
}
