//! From trained decoders to the daemon's bundle: the head exported as ONNX, the score constants
//! fixed on defect-free training images, and the threshold chosen on held-out defect-free images
//! for a target tile false-alarm rate. Every figure is computed by the daemon's own engine and
//! scorer on the written bundle, so what the daemon will see is what was calibrated.

use std::path::{Path, PathBuf};

use crate::bundle::{
    write_bundle, Bundle, Combine, ExtractorSpec, HeadSpec, InputSpec, LevelSpec, Manifest,
    ScoreSpec, ThresholdSpec, FORMAT_VERSION,
};
use crate::dataset::load_image;
use crate::engine::{Engine, ExtractorPrecision, LevelMaps};
use crate::export::{head_onnx, LevelHead};
use crate::flow::BlockWeights;
use crate::scorer::Scorer;
use crate::tiler::{self, Normalization};

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
    /// Provenance for the manifest.
    pub training: toml::Table,
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
    /// Tile scores of the held-out images, ascending.
    pub holdout_scores: Vec<f32>,
    /// Held-out tiles above the threshold.
    pub holdout_alarms: usize,
}

/// The model input of an image as the daemon's tiler makes it: resized whole to the input
/// side, normalized, planar.
pub fn model_input(path: &Path, size: usize, norm: &Normalization) -> Result<Vec<f32>, TrainError> {
    let mut out = vec![0.0; 3 * size * size];
    tiler::model_input(&load_image(path)?, size, norm, &mut out);
    Ok(out)
}

/// The per-level log-likelihood maps of `images` by the daemon's engine.
fn engine_maps(
    engine: &mut Engine,
    images: &[PathBuf],
    size: usize,
) -> Result<Vec<Vec<Vec<f32>>>, TrainError> {
    let m = &engine.bundle().manifest;
    let norm = Normalization {
        mean: m.input.mean,
        std: m.input.std,
    };
    let levels = m.levels.len();
    let mut maps = LevelMaps::default();
    let mut out = Vec::with_capacity(images.len());
    for path in images {
        let input = model_input(path, size, &norm)?;
        engine.run(&input, 1, &mut maps)?;
        out.push((0..levels).map(|l| maps.tile(l, 0).to_vec()).collect());
    }
    Ok(out)
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
    }
}

/// The threshold that at most `rate` of `scores` exceed (alerts fire above it): the
/// `floor(rate n) + 1`-th largest score.
pub fn threshold_for_rate(scores: &[f32], rate: f64) -> f32 {
    let mut sorted: Vec<f32> = scores.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f32::INFINITY;
    }
    sorted.sort_by(f32::total_cmp);
    let allowed = (rate * sorted.len() as f64).floor() as usize;
    sorted[sorted.len() - 1 - allowed.min(sorted.len() - 1)]
}

/// Writes the bundle into `dir` and calibrates it on `calibration` (defect-free training
/// images) and `holdout` (defect-free images the flows never saw).
pub fn write_calibrated_bundle(
    dir: &Path,
    parts: &BundleParts,
    decoders: &[Vec<BlockWeights>],
    calibration: &[PathBuf],
    holdout: &[PathBuf],
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
    let provisional = ScoreSpec {
        combine: parts.combine,
        level_offsets: vec![0.0; n],
        reference: 0.0,
    };
    let manual = ThresholdSpec {
        value: f32::MAX,
        method: "manual".into(),
        false_alarm_rate: None,
    };
    write_bundle(
        dir,
        &manifest(parts, provisional.clone(), manual.clone()),
        &files,
    )?;
    let mut engine = Engine::new(Bundle::load(dir)?, ExtractorPrecision::F32)?;
    let size = parts.input_size;

    // Offsets: the highest per-channel log-likelihood of each level on normal images.
    let calib = engine_maps(&mut engine, calibration, size)?;
    let mut offsets = vec![f32::NEG_INFINITY; n];
    for image in &calib {
        for (l, map) in image.iter().enumerate() {
            let inv_c = 1.0 / parts.levels[l].channels as f32;
            for &v in map {
                offsets[l] = offsets[l].max(v * inv_c);
            }
        }
    }
    // Reference: the highest combined likelihood (with reference 0 the scorer returns
    // -combined, so the lowest anomaly).
    let mut spec = ScoreSpec {
        combine: parts.combine,
        level_offsets: offsets.clone(),
        reference: 0.0,
    };
    let mut scorer = Scorer::new(&manifest(parts, spec.clone(), manual.clone()), f32::MAX);
    let mut reference = f32::NEG_INFINITY;
    for image in &calib {
        let maps: Vec<&[f32]> = image.iter().map(Vec::as_slice).collect();
        scorer.score(&maps);
        let lowest = scorer
            .anomaly_map()
            .iter()
            .fold(f32::INFINITY, |m, &a| m.min(a));
        reference = reference.max(-lowest);
    }
    spec.reference = reference;

    // Threshold on held-out normal images, scored exactly as the daemon scores a tile.
    let mut scorer = Scorer::new(&manifest(parts, spec.clone(), manual), f32::MAX);
    let mut holdout_scores: Vec<f32> = engine_maps(&mut engine, holdout, size)?
        .iter()
        .map(|image| {
            let maps: Vec<&[f32]> = image.iter().map(Vec::as_slice).collect();
            scorer.score(&maps).score
        })
        .collect();
    holdout_scores.sort_by(f32::total_cmp);
    let threshold = threshold_for_rate(&holdout_scores, false_alarm_rate);
    let holdout_alarms = holdout_scores.iter().filter(|&&s| s > threshold).count();
    let final_threshold = ThresholdSpec {
        value: threshold,
        method: "false-alarm-rate".into(),
        false_alarm_rate: Some(false_alarm_rate),
    };
    write_bundle(dir, &manifest(parts, spec, final_threshold), &files)?;
    Ok(Calibration {
        level_offsets: offsets,
        reference,
        threshold,
        holdout_scores,
        holdout_alarms,
    })
}

#[cfg(test)]
mod tests {
    use super::threshold_for_rate;

    #[test]
    fn the_threshold_lets_at_most_the_rate_through() {
        let scores: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        assert_eq!(threshold_for_rate(&scores, 0.01), 99.0, "one of 100 above");
        assert_eq!(threshold_for_rate(&scores, 0.1), 90.0);
        assert_eq!(
            threshold_for_rate(&scores[..50], 0.01),
            50.0,
            "none of 50 above"
        );
        assert_eq!(threshold_for_rate(&[], 0.01), f32::INFINITY);
    }
}
