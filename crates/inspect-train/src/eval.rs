//! Evaluation of a bundle on a labelled dataset, exactly as the daemon runs it: each test image
//! resized whole to the model input by the tiler's sampling, the daemon's engine and scorer, the
//! ground-truth mask resized to the same grid (nearest). Writes `metrics.json` and a heatmap
//! sheet (input, ground truth, anomaly map, region above the threshold) and the ROC and PRO
//! curves (`roc.png`, `pro.png`) for people to look at.

use std::path::{Path, PathBuf};

use image::{imageops, GrayImage, Rgb, RgbImage};

use crate::dataset::crops::frames_of;
use crate::dataset::{load_image, load_mask, Dataset, DatasetError, Sample};
use crate::decisions::{clopper_pearson, threshold_for_rate, OperatingPoint};
use crate::metrics::{
    aupro_of_curve, auroc, image_auroc, pixel_roc, pro_curve, roc_curve, thinned,
};
use crate::plots::{LineChart, Series};
use crate::records::progress_bar;
use inspect_core::bundle::{Bundle, BundleError};
use inspect_core::detector::Detector;
use inspect_core::engine::{EngineError, ExtractorPrecision};
use inspect_core::scorer::relative_to_frames;

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
    /// A chart could not be drawn.
    #[error(transparent)]
    Plot(#[from] crate::plots::PlotError),
    /// A bundle scores its maps differently from the one it is compared with.
    #[error("{path}: {message}")]
    Mismatch {
        /// The bundle folder.
        path: PathBuf,
        /// What differs.
        message: String,
    },
}

/// The curves behind the figures, thinned for drawing.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Curves {
    /// Pixel ROC `(fpr, tpr)` (empty without defect pixels).
    pub pixel_roc: Vec<(f64, f64)>,
    /// Image ROC `(fpr, tpr)`, image score = maximum pixel.
    pub image_roc: Vec<(f64, f64)>,
    /// PRO `(fpr, pro)`, the whole curve (AUPRO reads it up to 0.3).
    pub pro: Vec<(f64, f64)>,
}

/// One test image as the model input, its mask and anomaly map (`side x side`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Example {
    /// The image as the model saw it.
    #[serde(with = "rgb_image_serde")]
    pub input: RgbImage,
    /// Ground truth, 0 or 1 per pixel.
    pub mask: Vec<u8>,
    /// Anomaly map.
    pub map: Vec<f32>,
}

/// Everything an evaluation produced.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// The figures (also in `metrics.json`).
    pub report: EvalReport,
    /// The curves (also drawn in `roc.png` and `pro.png`).
    pub curves: Curves,
    /// The rows of the heatmap sheet, same images for every bundle on the same data.
    pub examples: Vec<Example>,
    /// Side of the model input.
    pub side: usize,
}

/// The figures of one evaluation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Tile AUROC of the bundle's tile score (absent without both kinds of test image).
    pub tile_auroc: Option<f64>,
    /// The tile ROC read at the target false-alarm rate: the threshold that lets that share of
    /// the defect-free test tiles through and what it detects (what the best threshold for
    /// the target could do; the bundle's own threshold is the one above).
    pub tile_at_target: OperatingPoint,
    /// Alarms per 1000 defect-free tiles at the threshold.
    pub false_alarms_per_1000: f64,
    /// Its 95% Clopper-Pearson interval, per 1000.
    pub false_alarms_interval_per_1000: (f64, f64),
    /// The false-alarm rate the threshold was calibrated for, per 1000 (absent for a manual
    /// threshold).
    pub target_false_alarms_per_1000: Option<f64>,
    /// Seconds per image of the daemon's work: sampling to the model input, extractor, head and
    /// scorer (file decoding excluded).
    pub seconds_per_image: f64,
}

/// The file beside `metrics.json` that keeps a whole evaluation, so a resumed sweep draws its
/// figures without evaluating finished bundles again.
const EVALUATION_FILE: &str = "evaluation.json";

impl Evaluation {
    /// The evaluation an earlier run wrote into `out`, if it was written after `trained` (the
    /// training checkpoint: a bundle trained further is evaluated again; the bundle's own
    /// files are rewritten whenever a finished checkpoint is resumed, so they cannot tell).
    pub fn load_fresh(trained: &Path, out: &Path) -> Option<Evaluation> {
        let file = out.join(EVALUATION_FILE);
        let written = std::fs::metadata(&file).and_then(|m| m.modified()).ok()?;
        let trained = std::fs::metadata(trained).and_then(|m| m.modified()).ok()?;
        if written < trained {
            return None;
        }
        let text = std::fs::read_to_string(&file).ok()?;
        match serde_json::from_str(&text) {
            Ok(evaluation) => Some(evaluation),
            Err(e) => {
                log::warn!("{}: {e}; evaluating again", file.display());
                None
            }
        }
    }

    fn save(&self, out: &Path) -> Result<(), EvalError> {
        let file = out.join(EVALUATION_FILE);
        let write_error = |e: &dyn std::fmt::Display| EvalError::Write {
            path: file.clone(),
            message: e.to_string(),
        };
        let text = serde_json::to_string(self).map_err(|e| write_error(&e))?;
        std::fs::write(&file, text).map_err(|e| write_error(&e))
    }
}

/// An RGB image as its width, height and bytes.
mod rgb_image_serde {
    use image::RgbImage;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Stored {
        width: u32,
        height: u32,
        rgb: Vec<u8>,
    }

    pub fn serialize<S: Serializer>(image: &RgbImage, s: S) -> Result<S::Ok, S::Error> {
        Stored {
            width: image.width(),
            height: image.height(),
            rgb: image.as_raw().clone(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RgbImage, D::Error> {
        let stored = Stored::deserialize(d)?;
        RgbImage::from_raw(stored.width, stored.height, stored.rgb)
            .ok_or_else(|| serde::de::Error::custom("image bytes do not match its size"))
    }
}

/// One scored test image, kept for the sheet.
struct Scored {
    input: RgbImage,
    mask: Vec<u8>,
    map: Vec<f32>,
    score: f32,
}

/// The test split of the MVTec-layout dataset at `data`, at most `limit` images per class (the
/// first ones), never empty.
pub(crate) fn test_samples(data: &Path, limit: Option<usize>) -> Result<Vec<Sample>, EvalError> {
    let mut samples = Dataset::mvtec(data)?.test;
    if let Some(limit) = limit {
        let mut per_class = std::collections::BTreeMap::<String, usize>::new();
        samples.retain(|s| {
            let n = per_class.entry(s.class.clone()).or_default();
            *n += 1;
            *n <= limit
        });
    }
    if samples.is_empty() {
        return Err(EvalError::Empty(data.to_path_buf()));
    }
    Ok(samples)
}

/// Evaluates the bundle at `bundle` on the MVTec-layout dataset at `data` (its test split),
/// writing `metrics.json`, `heatmaps.png`, `roc.png` and `pro.png` into `out`. `limit` caps
/// the images per class.
pub fn evaluate(
    bundle: &Path,
    data: &Path,
    out: &Path,
    limit: Option<usize>,
    progress: bool,
) -> Result<Evaluation, EvalError> {
    let bundle = Bundle::load(bundle)?;
    let manifest = bundle.manifest.clone();
    let side = manifest.input.width;
    let mut detector = Detector::new(bundle, ExtractorPrecision::F32, manifest.threshold.value)?;
    let samples = test_samples(data, limit)?;
    let bar = progress_bar(
        progress,
        samples.len(),
        "eval {bar:40} {pos}/{len} images, {eta} left",
    );
    // Only the daemon's work per tile is timed (sampling, engine, scorer), not file decoding.
    let mut busy = std::time::Duration::ZERO;
    let mut scored = Vec::with_capacity(samples.len());
    for s in &samples {
        let image = load_image(&s.image)?;
        let start = std::time::Instant::now();
        let (resized, decided) = detector.detect_image(&image)?;
        busy += start.elapsed();
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
            map: detector.anomaly_map().to_vec(),
            score: decided.score,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = busy.as_secs_f64();
    let map_refs: Vec<&[f32]> = scored.iter().map(|s| s.map.as_slice()).collect();
    let mask_refs: Vec<&[u8]> = scored.iter().map(|s| s.mask.as_slice()).collect();
    let threshold = manifest.threshold.value;
    // With a frame weight, tiles are decided relative to their frame (the crops of one
    // image, as the daemon decides a frame's tiles); the pixel figures stay on the plain maps.
    let mut tile_scores: Vec<f32> = scored.iter().map(|s| s.score).collect();
    let images: Vec<&Path> = samples.iter().map(|s| s.image.as_path()).collect();
    relative_to_frames(
        &mut tile_scores,
        &frames_of(&images, false),
        manifest.score.frame_weight,
    );
    let (mut tp, mut fp, mut fn_, mut good) = (0usize, 0usize, 0usize, 0usize);
    for (s, &score) in scored.iter().zip(&tile_scores) {
        let defect = s.mask.iter().any(|&m| m != 0);
        let alarm = score > threshold;
        good += usize::from(!defect);
        match (defect, alarm) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => {}
        }
    }
    // One sort of all pixels each for the metric and its chart. A thousandth of the axis is
    // finer than a pixel of the charts.
    let pro = pro_curve(&map_refs, &mask_refs, side, side);
    let pixel = pixel_roc(&map_refs, &mask_refs, 1e-3);
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (precision, recall) = (ratio(tp, tp + fp), ratio(tp, tp + fn_));
    let tile_labels: Vec<bool> = scored
        .iter()
        .map(|s| s.mask.iter().any(|&m| m != 0))
        .collect();
    let (mut good_scores, mut defect_scores) = (Vec::new(), Vec::new());
    for (&score, &defect) in tile_scores.iter().zip(&tile_labels) {
        if defect {
            defect_scores.push(score);
        } else {
            good_scores.push(score);
        }
    }
    // A manual threshold has no target: read the ROC at the usual 1%.
    let target_rate = manifest.threshold.false_alarm_rate.unwrap_or(0.01);
    let tile_at_target = OperatingPoint::at(
        threshold_for_rate(&good_scores, target_rate),
        &good_scores,
        &defect_scores,
    );
    let report = EvalReport {
        images: scored.len(),
        good,
        pixel_auroc: pixel.as_ref().map(|r| r.auroc),
        aupro: aupro_of_curve(&pro, &mask_refs, 0.3),
        image_auroc: image_auroc(&map_refs, &mask_refs),
        threshold,
        tile_precision: precision,
        tile_recall: recall,
        tile_f1: if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        },
        tile_auroc: auroc(&tile_scores, &tile_labels),
        tile_at_target,
        false_alarms_per_1000: 1000.0 * ratio(fp, good),
        false_alarms_interval_per_1000: {
            let (lo, hi) = clopper_pearson(fp, good, 0.95);
            (1000.0 * lo, 1000.0 * hi)
        },
        target_false_alarms_per_1000: manifest.threshold.false_alarm_rate.map(|r| 1000.0 * r),
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
    let rows = sheet_rows(&scored);
    let sheet = out.join("heatmaps.png");
    heatmap_sheet(&rows, side, threshold)
        .save(&sheet)
        .map_err(|e| EvalError::Write {
            path: sheet.clone(),
            message: e.to_string(),
        })?;
    let curves = Curves {
        pixel_roc: pixel.map(|r| r.curve).unwrap_or_default(),
        image_roc: roc_curve(&tile_scores, &tile_labels, 0.0).unwrap_or_default(),
        pro: thinned(&pro, 1e-3),
    };
    let label = |name: &str, value: Option<f64>| match value {
        Some(v) => format!("{name} {v:.4}"),
        None => format!("{name} n/a"),
    };
    draw_roc(
        &out.join("roc.png"),
        "ROC",
        &[
            Series {
                label: label("pixels, AUROC", report.pixel_auroc),
                points: curves.pixel_roc.clone(),
            },
            Series {
                label: label("images, AUROC", report.image_auroc),
                points: curves.image_roc.clone(),
            },
        ],
    )?;
    draw_pro(
        &out.join("pro.png"),
        "PRO up to FPR 0.3",
        &[Series {
            label: label("AUPRO", report.aupro),
            points: curves.pro.clone(),
        }],
    )?;
    let examples = rows
        .iter()
        .map(|s| Example {
            input: s.input.clone(),
            mask: s.mask.clone(),
            map: s.map.clone(),
        })
        .collect();
    let evaluation = Evaluation {
        report,
        curves,
        examples,
        side,
    };
    evaluation.save(out)?;
    Ok(evaluation)
}

/// Draws ROC curves (`x`: false-positive rate) into `path`.
pub fn draw_roc(path: &Path, title: &str, series: &[Series]) -> Result<(), EvalError> {
    draw_roc_up_to(path, title, series, 1.0)
}

/// Draws the ROC curves up to the false-positive rate `x_max` (the low-rate end where alert
/// thresholds live) into `path`.
pub fn draw_roc_up_to(
    path: &Path,
    title: &str,
    series: &[Series],
    x_max: f64,
) -> Result<(), EvalError> {
    let clipped: Vec<Series> = series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            points: if x_max < 1.0 {
                clipped_at(&s.points, x_max)
            } else {
                s.points.clone()
            },
        })
        .collect();
    LineChart {
        title,
        x_label: "false-positive rate",
        y_label: "true-positive rate",
        x_max,
        diagonal: x_max >= 1.0,
        series: &clipped,
    }
    .save(path, 640, 520)?;
    Ok(())
}

/// Draws PRO curves up to FPR 0.3 (the AUPRO range) into `path`.
pub fn draw_pro(path: &Path, title: &str, series: &[Series]) -> Result<(), EvalError> {
    let clipped: Vec<Series> = series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            points: clipped_at(&s.points, 0.3),
        })
        .collect();
    LineChart {
        title,
        x_label: "false-positive rate (pixels)",
        y_label: "per-region overlap",
        x_max: 0.3,
        diagonal: false,
        series: &clipped,
    }
    .save(path, 640, 520)?;
    Ok(())
}

/// `curve` (sorted by x) up to `x_max`, ending exactly at `x_max` by linear interpolation.
fn clipped_at(curve: &[(f64, f64)], x_max: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for w in curve.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if out.is_empty() {
            out.push((x0, y0));
        }
        if x1 >= x_max {
            let y = if x1 > x0 {
                y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
            } else {
                y1
            };
            out.push((x_max, y));
            return out;
        }
        out.push((x1, y1));
    }
    out
}

/// A blue-to-red colour for `t` in 0..1.
fn heat(t: f32) -> Rgb<u8> {
    let t = t.clamp(0.0, 1.0);
    let r = (255.0 * (1.5 * t).min(1.0)) as u8;
    let g = (255.0 * (1.0 - (2.0 * t - 1.0).abs())) as u8;
    let b = (255.0 * (1.0 - 1.5 * t).max(0.0)) as u8;
    Rgb([r, g, b])
}

/// `map` (same size as `input`) as heat over `input`, 0 to `scale` from blue to red.
pub fn heat_overlay(input: &RgbImage, map: &[f32], scale: f32) -> RgbImage {
    let width = input.width() as usize;
    RgbImage::from_fn(input.width(), input.height(), |x, y| {
        let a = map[y as usize * width + x as usize] / scale;
        let p = input.get_pixel(x, y).0;
        let h = heat(a).0;
        Rgb(std::array::from_fn(|c| {
            (0.5 * p[c] as f32 + 0.5 * h[c] as f32) as u8
        }))
    })
}

/// A 0/1 mask of `side x side` as a white-on-black picture.
pub fn mask_picture(mask: &[u8], side: usize) -> RgbImage {
    let gt = GrayImage::from_fn(side as u32, side as u32, |x, y| {
        image::Luma([255 * mask[y as usize * side + x as usize]])
    });
    image::DynamicImage::ImageLuma8(gt).into_rgb8()
}

/// Up to 8 defect images and 2 defect-free ones, spread evenly over the set: the rows of the
/// heatmap sheet (and the examples of a sweep, the same images for every bundle).
fn sheet_rows(scored: &[Scored]) -> Vec<&Scored> {
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
    rows
}

/// Rows of (input, ground truth, anomaly overlay, region above the threshold). The colour scale
/// runs from 0 to twice the threshold, the same for every row.
fn heatmap_sheet(rows: &[&Scored], side: usize, threshold: f32) -> RgbImage {
    let cell = 192u32;
    let gap = 6u32;
    let width = 4 * cell + 5 * gap;
    let height = rows.len().max(1) as u32 * (cell + gap) + gap;
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let scale = 2.0 * threshold.max(1e-6);
    for (r, s) in rows.iter().enumerate() {
        let overlay = heat_overlay(&s.input, &s.map, scale);
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
            mask_picture(&s.mask, side),
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
