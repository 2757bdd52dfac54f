//! Evaluation of a bundle on a labelled dataset, exactly as the daemon runs it: each test image
//! resized whole to the model input by the tiler's sampling, the daemon's engine and scorer, the
//! ground-truth mask resized to the same grid (nearest). Writes `metrics.json` and a heatmap
//! sheet (input, ground truth, anomaly map, region above the threshold) for people to look at.

use std::path::{Path, PathBuf};

use image::{imageops, GrayImage, Rgb, RgbImage};

use crate::bundle::{Bundle, BundleError};
use crate::dataset::{load_image, load_mask, Dataset, DatasetError};
use crate::engine::{Engine, EngineError, ExtractorPrecision, LevelMaps};
use crate::metrics::{aupro, image_auroc, pixel_auroc};
use crate::records::progress_bar;
use crate::scorer::Scorer;
use crate::tiler::{model_input, Normalization};

/// Errors of evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The bundle could not be loaded.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The dataset could not be read.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// An output could not be written.
    #[error("{path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The test set has no image.
    #[error("{0}: no test image")]
    Empty(PathBuf),
}

/// The figures of one evaluation.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EvalReport {
    /// Test images.
    pub images: usize,
    /// Of which defect-free.
    pub good: usize,
    /// Pixel AUROC.
    pub pixel_auroc: Option<f64>,
    /// AUPRO up to FPR 0.3.
    pub aupro: Option<f64>,
    /// Image AUROC (maximum pixel).
    pub image_auroc: Option<f64>,
    /// The bundle's threshold.
    pub threshold: f32,
    /// Tile precision at the threshold (a tile = a whole test image).
    pub tile_precision: f64,
    /// Tile recall at the threshold.
    pub tile_recall: f64,
    /// Tile F1 at the threshold.
    pub tile_f1: f64,
    /// Alarms per 1000 defect-free tiles at the threshold.
    pub false_alarms_per_1000: f64,
    /// Seconds per image (engine + scorer).
    pub seconds_per_image: f64,
}

/// One scored test image, kept for the sheet.
struct Scored {
    input: RgbImage,
    mask: Vec<u8>,
    map: Vec<f32>,
    score: f32,
}

/// Evaluates the bundle at `bundle` on the MVTec-layout dataset at `data` (its test split),
/// writing `metrics.json` and `heatmaps.png` into `out`. `limit` caps the images per class.
pub fn evaluate(
    bundle: &Path,
    data: &Path,
    out: &Path,
    limit: Option<usize>,
    progress: bool,
) -> Result<EvalReport, EvalError> {
    let bundle = Bundle::load(bundle)?;
    let manifest = bundle.manifest.clone();
    let side = manifest.input.width;
    let mut engine = Engine::new(bundle, ExtractorPrecision::F32)?;
    let mut scorer = Scorer::new(&manifest, manifest.threshold.value);
    let norm = Normalization {
        mean: manifest.input.mean,
        std: manifest.input.std,
    };
    let mut samples = Dataset::mvtec(data)?.test;
    if let Some(limit) = limit {
        let mut kept = Vec::new();
        let mut per_class = std::collections::BTreeMap::<String, usize>::new();
        for s in samples {
            let n = per_class.entry(s.class.clone()).or_default();
            if *n < limit {
                *n += 1;
                kept.push(s);
            }
        }
        samples = kept;
    }
    if samples.is_empty() {
        return Err(EvalError::Empty(data.to_path_buf()));
    }
    let bar = progress_bar(
        progress,
        samples.len(),
        "eval {bar:40} {pos}/{len} images, {eta} left",
    );
    let start = std::time::Instant::now();
    let mut scored = Vec::with_capacity(samples.len());
    let mut maps = LevelMaps::default();
    let mut input = vec![0.0; 3 * side * side];
    for s in &samples {
        let image = load_image(&s.image)?;
        let resized = model_input(&image, side, &norm, &mut input);
        engine.run(&input, 1, &mut maps)?;
        let levels: Vec<&[f32]> = (0..manifest.levels.len())
            .map(|l| maps.tile(l, 0))
            .collect();
        let score = scorer.score(&levels).score;
        let mask = match &s.mask {
            Some(m) => {
                let full = load_mask(m, &s.image, image.dimensions())?;
                imageops::resize(
                    &full,
                    side as u32,
                    side as u32,
                    imageops::FilterType::Nearest,
                )
                .pixels()
                .map(|p| u8::from(p.0[0] > 127))
                .collect()
            }
            None => vec![0; side * side],
        };
        scored.push(Scored {
            input: resized,
            mask,
            map: scorer.anomaly_map().to_vec(),
            score,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let map_refs: Vec<&[f32]> = scored.iter().map(|s| s.map.as_slice()).collect();
    let mask_refs: Vec<&[u8]> = scored.iter().map(|s| s.mask.as_slice()).collect();
    let threshold = manifest.threshold.value;
    let (mut tp, mut fp, mut fn_, mut good) = (0usize, 0usize, 0usize, 0usize);
    for s in &scored {
        let defect = s.mask.iter().any(|&m| m != 0);
        let alarm = s.score > threshold;
        good += usize::from(!defect);
        match (defect, alarm) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => {}
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (precision, recall) = (ratio(tp, tp + fp), ratio(tp, tp + fn_));
    let report = EvalReport {
        images: scored.len(),
        good,
        pixel_auroc: pixel_auroc(&map_refs, &mask_refs),
        aupro: aupro(&map_refs, &mask_refs, side, side, 0.3),
        image_auroc: image_auroc(&map_refs, &mask_refs),
        threshold,
        tile_precision: precision,
        tile_recall: recall,
        tile_f1: if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        },
        false_alarms_per_1000: 1000.0 * ratio(fp, good),
        seconds_per_image: seconds / scored.len() as f64,
    };
    std::fs::create_dir_all(out).map_err(|e| EvalError::Write {
        path: out.to_path_buf(),
        message: e.to_string(),
    })?;
    let json = out.join("metrics.json");
    let text = serde_json::to_string_pretty(&report).map_err(|e| EvalError::Write {
        path: json.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&json, text).map_err(|e| EvalError::Write {
        path: json.clone(),
        message: e.to_string(),
    })?;
    let sheet = out.join("heatmaps.png");
    heatmap_sheet(&scored, side, threshold)
        .save(&sheet)
        .map_err(|e| EvalError::Write {
            path: sheet.clone(),
            message: e.to_string(),
        })?;
    Ok(report)
}

/// A blue-to-red colour for `t` in 0..1.
fn heat(t: f32) -> Rgb<u8> {
    let t = t.clamp(0.0, 1.0);
    let r = (255.0 * (1.5 * t).min(1.0)) as u8;
    let g = (255.0 * (1.0 - (2.0 * t - 1.0).abs())) as u8;
    let b = (255.0 * (1.0 - 1.5 * t).max(0.0)) as u8;
    Rgb([r, g, b])
}

/// Rows of (input, ground truth, anomaly overlay, region above the threshold) for up to 8
/// defect images and 2 defect-free ones, spread over the set. The colour scale runs from 0 to
/// twice the threshold, the same for every row.
fn heatmap_sheet(scored: &[Scored], side: usize, threshold: f32) -> RgbImage {
    let defects: Vec<&Scored> = scored
        .iter()
        .filter(|s| s.mask.iter().any(|&m| m != 0))
        .collect();
    let good: Vec<&Scored> = scored
        .iter()
        .filter(|s| s.mask.iter().all(|&m| m == 0))
        .collect();
    let pick = |v: &[&'_ Scored], n: usize| -> Vec<usize> {
        let step = v.len().div_ceil(n.max(1)).max(1);
        (0..v.len()).step_by(step).take(n).collect()
    };
    let mut rows: Vec<&Scored> = pick(&defects, 8).into_iter().map(|i| defects[i]).collect();
    rows.extend(pick(&good, 2).into_iter().map(|i| good[i]));
    let cell = 192u32;
    let gap = 6u32;
    let width = 4 * cell + 5 * gap;
    let height = rows.len().max(1) as u32 * (cell + gap) + gap;
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let scale = 2.0 * threshold.max(1e-6);
    for (r, s) in rows.iter().enumerate() {
        let gt = GrayImage::from_fn(side as u32, side as u32, |x, y| {
            image::Luma([255 * s.mask[y as usize * side + x as usize]])
        });
        let overlay = RgbImage::from_fn(side as u32, side as u32, |x, y| {
            let a = s.map[y as usize * side + x as usize] / scale;
            let p = s.input.get_pixel(x, y).0;
            let h = heat(a).0;
            Rgb(std::array::from_fn(|c| {
                (0.5 * p[c] as f32 + 0.5 * h[c] as f32) as u8
            }))
        });
        let region = RgbImage::from_fn(side as u32, side as u32, |x, y| {
            let above = s.map[y as usize * side + x as usize] > threshold;
            let p = s.input.get_pixel(x, y).0;
            if above {
                Rgb([255, (p[1] / 3), (p[2] / 3)])
            } else {
                Rgb(p.map(|v| v / 2))
            }
        });
        let pictures = [
            s.input.clone(),
            image::DynamicImage::ImageLuma8(gt).into_rgb8(),
            overlay,
            region,
        ];
        let y = gap + r as u32 * (cell + gap);
        for (k, p) in pictures.iter().enumerate() {
            let scaled = imageops::resize(p, cell, cell, imageops::FilterType::Triangle);
            imageops::replace(
                &mut sheet,
                &scaled,
                (gap + k as u32 * (cell + gap)) as i64,
                y as i64,
            );
        }
    }
    sheet
}
