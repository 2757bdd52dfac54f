//! From trained decoders to the daemon's bundle: the head exported as ONNX, the score constants
//! fixed on defect-free training images, and the threshold chosen on held-out defect-free images
//! for a target tile false-alarm rate. Every figure is computed by the daemon's own [`Detector`]
//! on the written bundle, so what the daemon will see is what was calibrated.

use std::path::{Path, PathBuf};

use crate::dataset::crops::frames_of;
use crate::dataset::load_image;
use crate::decisions::{held_out_threshold, Estimator};
use crate::export::{head_onnx, LevelHead};
use crate::flow::BlockWeights;
use crate::score_choice::{out_of_fold_scores, HeldOutFold, PostProcessing};
use inspect_core::bundle::{
    write_bundle, Bundle, BundleError, Combine, ExtractorSpec, HeadSpec, InputSpec, LevelSpec,
    Manifest, ScoreSpec, ThresholdSpec, FORMAT_VERSION,
};
use inspect_core::detector::{Detector, Tiling};
use inspect_core::engine::ExtractorPrecision;
use inspect_core::scorer::relative_to_frames;
use inspect_core::tiler::Normalization;

use super::TrainError;

/// What goes into a bundle besides the flows.
pub struct BundleParts<'a> {
    /// The extractor ONNX bytes.
    pub extractor: &'a [u8],
    /// Its human name.
    pub extractor_name: String,
    /// Input side.
    pub input_size: usize,
    /// Input normalization.
    pub normalization: Normalization,
    /// Level layout, in score order.
    pub levels: Vec<LevelSpec>,
    /// How level likelihoods combine.
    pub combine: Combine,
    /// Level weights, map smoothing and tile statistic of the score.
    pub post_processing: PostProcessing,
    /// Provenance for the manifest.
    pub training: toml::Table,
}

impl std::fmt::Display for Calibration {
    /// One line: the constants, the threshold, how it was estimated and what it lets through.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "offsets {:?}, reference {:.4}; threshold {:.4} ({}; {} of {} held-out tiles above)",
            self.level_offsets,
            self.reference,
            self.threshold,
            self.estimator.name(),
            self.holdout_alarms,
            self.holdout_scores.len()
        )
    }
}

/// Defect-free images the flows never saw, which set the threshold, and how they are cut:
/// each one tile, or into tiles as the daemon cuts frames.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeldOut {
    /// The images.
    pub images: Vec<PathBuf>,
    /// The daemon's tiling (`None`: each image resized whole is one tile).
    pub tiling: Option<Tiling>,
}

/// Calibration results.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// Per-level offsets: the largest `logp / C` seen on the calibration images.
    pub level_offsets: Vec<f32>,
    /// The largest combined likelihood on the calibration images.
    pub reference: f32,
    /// The chosen threshold.
    pub threshold: f32,
    /// Tile scores of the held-out images (or of their tiles), ascending.
    pub holdout_scores: Vec<f32>,
    /// Held-out tiles above the threshold.
    pub holdout_alarms: usize,
    /// How the threshold was estimated.
    pub estimator: Estimator,
}

/// The per-level log-likelihood maps of `images` by the daemon's detector.
fn level_maps(
    detector: &mut Detector,
    images: &[PathBuf],
) -> Result<Vec<Vec<Vec<f32>>>, TrainError> {
    images
        .iter()
        .map(|path| Ok(detector.image_level_maps(&load_image(path)?)?))
        .collect()
}

fn manifest(parts: &BundleParts, score: ScoreSpec, threshold: ThresholdSpec) -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        input: InputSpec {
            width: parts.input_size,
            height: parts.input_size,
            mean: parts.normalization.mean,
            std: parts.normalization.std,
        },
        extractor: ExtractorSpec {
            file: "extractor.onnx".into(),
            name: parts.extractor_name.clone(),
        },
        head: HeadSpec {
            file: "head.onnx".into(),
        },
        levels: parts.levels.clone(),
        score,
        threshold,
        training: Some(parts.training.clone()),
        metrics: None,
        files: Default::default(),
        bundle_version: 0,
    }
}

/// Writes the bundle into `dir` and calibrates it on `calibration` (defect-free training
/// images) and `holdout`.
pub fn write_calibrated_bundle(
    dir: &Path,
    parts: &BundleParts,
    decoders: &[Vec<BlockWeights>],
    calibration: &[PathBuf],
    holdout: &HeldOut,
    false_alarm_rate: f64,
) -> Result<Calibration, TrainError> {
    let heads: Vec<LevelHead> = parts
        .levels
        .iter()
        .zip(decoders)
        .map(|(l, blocks)| LevelHead {
            tap: l.tap.clone(),
            logp: l.logp.clone(),
            height: l.height,
            width: l.width,
            blocks,
        })
        .collect();
    let head = head_onnx(&heads)?;
    let files: [(&str, &[u8]); 2] = [("extractor.onnx", parts.extractor), ("head.onnx", &head)];
    let n = parts.levels.len();
    // Provisional constants; the engine's log p does not depend on them.
    let provisional = ScoreSpec::new(parts.combine, vec![0.0; n], 0.0);
    let manual = ThresholdSpec {
        value: f32::MAX,
        method: "manual".into(),
        false_alarm_rate: None,
        estimator: None,
    };
    write_bundle(dir, &manifest(parts, provisional, manual), &files)?;
    calibrate_bundle(
        dir,
        &parts.post_processing,
        calibration,
        holdout,
        false_alarm_rate,
    )
}

/// Up to 200 images spread evenly over `images`: what calibration fixes the score's constants on.
pub fn calibration_sample(images: &[PathBuf]) -> Vec<PathBuf> {
    let step = images.len().div_ceil(200).max(1);
    images.iter().step_by(step).cloned().collect()
}

/// Where a bundle's threshold is calibrated.
#[derive(Clone, Copy, Debug)]
pub enum ThresholdSample<'a> {
    /// Defect-free images the bundle never saw, scored by the bundle.
    HeldOut(&'a HeldOut),
    /// Out of fold: each fold's held-out images scored by the bundle trained without them
    /// ([`out_of_fold_scores`]), for many more held-out frames than one split can spare.
    OutOfFold {
        /// The folds.
        folds: &'a [HeldOutFold],
        /// How their images are cut (`None`: each image resized whole is one tile).
        tiling: Option<Tiling>,
    },
}

/// Calibrates the bundle in `dir` in place for `post_processing`: the score's constants from
/// `calibration` (defect-free training images), the threshold for `false_alarm_rate` from
/// `holdout`; only the manifest is rewritten.
pub fn calibrate_bundle(
    dir: &Path,
    post_processing: &PostProcessing,
    calibration: &[PathBuf],
    holdout: &HeldOut,
    false_alarm_rate: f64,
) -> Result<Calibration, TrainError> {
    calibrate_bundle_on(
        dir,
        post_processing,
        calibration,
        ThresholdSample::HeldOut(holdout),
        false_alarm_rate,
    )
}

/// [`calibrate_bundle`] with the threshold from either kind of held-out sample.
pub fn calibrate_bundle_on(
    dir: &Path,
    post_processing: &PostProcessing,
    calibration: &[PathBuf],
    sample: ThresholdSample<'_>,
    false_alarm_rate: f64,
) -> Result<Calibration, TrainError> {
    let bundle = Bundle::load(dir)?;
    let mut written = bundle.manifest.clone();
    let levels = written.levels.clone();
    let n = levels.len();
    let combine = written.score.combine;
    let mut detector = Detector::new(bundle, ExtractorPrecision::F32, f32::MAX)?;

    // Offsets: the highest per-channel log-likelihood of each level on normal images.
    let calib = level_maps(&mut detector, calibration)?;
    let mut offsets = vec![f32::NEG_INFINITY; n];
    for image in &calib {
        for (l, map) in image.iter().enumerate() {
            let inv_c = 1.0 / levels[l].channels as f32;
            for &v in map {
                offsets[l] = offsets[l].max(v * inv_c);
            }
        }
    }
    // Reference: the highest combined likelihood (with reference 0 the scorer returns
    // -combined, so the lowest anomaly).
    let mut spec = post_processing.apply(&ScoreSpec::new(combine, offsets.clone(), 0.0));
    detector.set_score(spec.clone());
    let mut reference = f32::NEG_INFINITY;
    for image in &calib {
        detector.score_level_maps(image);
        let lowest = detector
            .anomaly_map()
            .iter()
            .fold(f32::INFINITY, |m, &a| m.min(a));
        reference = reference.max(-lowest);
    }
    spec.reference = reference;

    // Threshold on held-out normal images, scored exactly as the daemon scores a tile: each
    // image resized whole, or cut into the daemon's tiles, relative to its frame (the image
    // when cut; the crops of one image when whole) with a frame weight.
    detector.set_score(spec.clone());
    let mut holdout_scores = match sample {
        ThresholdSample::HeldOut(holdout) => {
            let image_frames = frames_of(&holdout.images, holdout.tiling.is_some());
            let (mut scores, mut frames) = (Vec::new(), Vec::new());
            for (index, path) in holdout.images.iter().enumerate() {
                for (_, maps) in detector.tiles_level_maps(&load_image(path)?, holdout.tiling)? {
                    scores.push(detector.score_level_maps(&maps).score);
                    frames.push(image_frames[index]);
                }
            }
            relative_to_frames(&mut scores, &frames, spec.frame_weight);
            scores
        }
        ThresholdSample::OutOfFold { folds, tiling } => {
            out_of_fold_scores(dir, folds, post_processing, tiling)?
        }
    };
    holdout_scores.sort_by(f32::total_cmp);
    // Few held-out tiles leave the empirical quantile at their maximum, which new tiles
    // exceed more often than the rate: then a fitted tail places it.
    let (threshold, estimator) = held_out_threshold(&holdout_scores, false_alarm_rate);
    let holdout_alarms = holdout_scores.iter().filter(|&&s| s > threshold).count();
    let final_threshold = ThresholdSpec {
        value: threshold,
        method: "false-alarm-rate".into(),
        false_alarm_rate: Some(false_alarm_rate),
        estimator: Some(estimator.name().into()),
    };
    // The model files stay as they are; the manifest takes the new constants.
    let files: Vec<(String, Vec<u8>)> = written
        .files
        .keys()
        .map(|name| {
            let path = dir.join(name);
            std::fs::read(&path)
                .map(|bytes| (name.clone(), bytes))
                .map_err(|source| TrainError::Bundle(BundleError::Io { path, source }))
        })
        .collect::<Result<_, _>>()?;
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    written.score = spec;
    written.threshold = final_threshold;
    write_bundle(dir, &written, &files)?;
    Ok(Calibration {
        level_offsets: offsets,
        reference,
        threshold,
        holdout_scores,
        holdout_alarms,
        estimator,
    })
}
