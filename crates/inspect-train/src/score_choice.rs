//! Choosing how tiles are decided, by measurement. Each candidate post-processing of the
//! anomaly map (level weights, Gaussian smoothing, tile statistic: the bundle's `[score]` keys)
//! scores the per-level maps of a labelled test split, computed once by the daemon's detector,
//! and is judged by its tile ROC: AUROC, the detection rate at a target false-alarm rate, and,
//! given held-out defect-free images, the threshold calibrated on those and what it does on the
//! test split (false-alarm rate with its 95% interval beside the target).
//!
//! The held-out tiles may also come out of fold ([`Calibration::OutOfFold`]): each block of the
//! training images held out whole and scored by flows trained on the other blocks, the blocks'
//! defect-free tiles pooled. That gives a threshold hundreds of held-out frames where one split
//! can spare only a few dozen.
//!
//! Candidates may also score a tile relative to its frame (`frame_weight`): less a share of the
//! mean score of the frame's tiles (a tiled image's tiles, or the crops `prepare-crops` cut from
//! one image, as [`frames_of`] groups them).

use std::path::{Path, PathBuf};

use crate::dataset::crops::frames_of;
use crate::dataset::{list_images, load_image, load_mask};
use crate::decisions::{held_out_threshold, threshold_for_rate, Estimator, OperatingPoint};
use crate::eval::{draw_roc, draw_roc_up_to, test_samples, EvalError};
use crate::metrics::{auroc, roc_curve};
use crate::plots::Series;
use crate::records::progress_bar;
use inspect_core::bundle::{Bundle, Manifest, ScoreSpec};
use inspect_core::detector::{Detector, TileLevelMaps, Tiling};
use inspect_core::engine::ExtractorPrecision;
use inspect_core::scorer::{relative_to_frames, Scorer};
use inspect_core::tiler::PixelBox;

/// One way of turning a tile's level maps into its score: the `[score]` keys a bundle chooses
/// (and the `[training]` keys that set them at calibration).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PostProcessing {
    /// Per-level weights (empty: all 1).
    pub level_weights: Vec<f32>,
    /// Gaussian smoothing sigma in model pixels (0: none).
    pub smoothing_sigma: f32,
    /// Mean of this top fraction of pixels (0: the maximum).
    pub top_fraction: f32,
    /// Share of the mean score of the tile's frame subtracted from its score (0: none).
    pub frame_weight: f32,
}

impl PostProcessing {
    /// A short name, e.g. `levels 1,0 / sigma 4 / top 1%`.
    pub fn label(&self) -> String {
        let levels = if self.level_weights.is_empty() {
            "all levels".to_string()
        } else {
            let w: Vec<String> = self.level_weights.iter().map(|w| format!("{w}")).collect();
            format!("levels {}", w.join(","))
        };
        let statistic = if self.top_fraction == 0.0 {
            "max".to_string()
        } else {
            format!("top {}%", 100.0 * self.top_fraction)
        };
        let frame = if self.frame_weight == 0.0 {
            String::new()
        } else {
            format!(" / less {} x frame mean", self.frame_weight)
        };
        format!(
            "{levels} / sigma {} / {statistic}{frame}",
            self.smoothing_sigma
        )
    }

    /// `score` with this post-processing.
    pub fn apply(&self, score: &ScoreSpec) -> ScoreSpec {
        let mut spec = score.clone();
        spec.level_weights = self.level_weights.clone();
        spec.smoothing_sigma = self.smoothing_sigma;
        spec.top_fraction = self.top_fraction;
        spec.frame_weight = self.frame_weight;
        spec
    }

    /// The post-processing `score` already has.
    pub fn of(score: &ScoreSpec) -> PostProcessing {
        PostProcessing {
            level_weights: score.level_weights.clone(),
            smoothing_sigma: score.smoothing_sigma,
            top_fraction: score.top_fraction,
            frame_weight: score.frame_weight,
        }
    }
}

/// The grid compared by default for `levels` levels: all levels or each alone; no smoothing or
/// sigma 4 (CFlow-AD's and anomalib's evaluation) or 8; the maximum, or the mean of the top 1%,
/// 5%, 10% or 20% (a crack covers a few percent of a tile: wider means average out single hot
/// pixels); and with all levels and a top mean, a half, three quarters or all of the frame's
/// mean subtracted.
pub fn default_candidates(levels: usize) -> Vec<PostProcessing> {
    let mut weightings = vec![Vec::new()];
    if levels > 1 {
        weightings.extend((0..levels).map(|only| {
            (0..levels)
                .map(|l| if l == only { 1.0 } else { 0.0 })
                .collect()
        }));
    }
    let mut out = Vec::new();
    for w in &weightings {
        for sigma in [0.0, 4.0, 8.0] {
            for top in [0.0, 0.01, 0.05, 0.1, 0.2] {
                out.push(PostProcessing {
                    level_weights: w.clone(),
                    smoothing_sigma: sigma,
                    top_fraction: top,
                    frame_weight: 0.0,
                });
            }
        }
    }
    for sigma in [0.0, 4.0, 8.0] {
        for top in [0.01, 0.05, 0.1, 0.2] {
            for frame_weight in [0.5, 0.75, 1.0] {
                out.push(PostProcessing {
                    level_weights: Vec::new(),
                    smoothing_sigma: sigma,
                    top_fraction: top,
                    frame_weight,
                });
            }
        }
    }
    out
}

/// How one candidate decides the test tiles.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CandidateResult {
    /// The candidate.
    pub candidate: PostProcessing,
    /// Its label.
    pub label: String,
    /// Tile AUROC on the test split.
    pub tile_auroc: Option<f64>,
    /// The threshold that lets the target rate of the test split's defect-free tiles through,
    /// and what it detects (the ROC read at the target rate).
    pub at_target: OperatingPoint,
    /// The threshold calibrated on the held-out tiles at the target rate as `fit` calibrates
    /// (empirical quantile, or a fitted tail when they are few), applied to the test split
    /// (absent without held-out images).
    pub calibrated: Option<(OperatingPoint, Estimator)>,
    /// The calibrated threshold on the held-out tiles themselves: what it lets through there,
    /// and of held-out frames with masks what it detects. A candidate can be chosen by this
    /// without reading the test split.
    pub held_out: Option<OperatingPoint>,
    /// Out of fold, whether the calibration holds where held-out and new frames are alike:
    /// each fold's tiles decided by the threshold calibrated on the other folds, summed.
    pub leave_one_fold_out: Option<OperatingPoint>,
    /// Tile ROC `(fpr, tpr)`.
    #[serde(skip)]
    pub roc: Vec<(f64, f64)>,
    /// Every test tile's score, in the order the tiles were cut.
    #[serde(skip)]
    pub scores: Vec<f32>,
}

/// A comparison of candidates on one bundle and test split.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Comparison {
    /// Target false-alarm rate per defect-free tile.
    pub rate: f64,
    /// Defect-free test tiles.
    pub good: usize,
    /// Defect test tiles.
    pub defects: usize,
    /// Held-out defect-free tiles the calibrated thresholds come from.
    pub holdout: usize,
    /// Fold bundles that scored them (0: the compared bundle itself).
    pub folds: usize,
    /// The daemon's tiling the images were cut with (none: each image is one tile).
    pub tiling: Option<(u32, u32)>,
    /// The bundle's own post-processing, by label.
    pub bundle_label: String,
    /// One result per candidate, in the order given.
    pub results: Vec<CandidateResult>,
}

/// What to compare.
pub struct ComparisonJob<'a> {
    /// The bundle folder.
    pub bundle: &'a Path,
    /// MVTec-layout dataset whose test split is scored.
    pub data: &'a Path,
    /// Where the calibrated thresholds come from.
    pub calibration: Calibration<'a>,
    /// Target false-alarm rate per tile.
    pub rate: f64,
    /// At most this many test images per class.
    pub limit: Option<usize>,
    /// Cut every image into tiles as the daemon cuts frames (each tile labelled by its part of
    /// the mask) instead of resizing it whole into one tile.
    pub tiling: Option<Tiling>,
    /// The candidates (the bundle's own is added first).
    pub candidates: Vec<PostProcessing>,
    /// Output folder: candidates.json, candidates.md, tile_roc.png, tile_roc_low.png.
    pub out: &'a Path,
}

/// Where a comparison's calibrated thresholds come from.
#[derive(Clone, Copy, Debug)]
pub enum Calibration<'a> {
    /// Nowhere: only the ROC read at the target rate.
    None,
    /// Images the bundle never saw: a folder of defect-free images, or an MVTec-layout dataset
    /// whose test split holds whole held-out frames with their masks (every tile counts in its
    /// frame's mean, only defect-free tiles in the false-alarm sample: how a frame weight is
    /// calibrated when no frame is free of defects).
    HeldOut(&'a Path),
    /// Out of fold: each fold's bundle scores the held-out images it never saw (either form
    /// above), and the defect-free tiles of all folds, each scored by its own fold, are pooled.
    OutOfFold(&'a [HeldOutFold]),
}

/// One fold of an out-of-fold calibration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldOutFold {
    /// The bundle trained without the fold's images.
    pub bundle: PathBuf,
    /// The fold's images (`prepare-crops --fold` writes them as an MVTec test split).
    pub images: PathBuf,
}

/// An image to score: its file and, for labelled test images, its defect mask.
struct Source {
    image: PathBuf,
    mask: Option<PathBuf>,
}

/// The test split of the MVTec-layout dataset at `dir`, images with their masks.
fn labelled_sources(dir: &Path, limit: Option<usize>) -> Result<Vec<Source>, EvalError> {
    Ok(test_samples(dir, limit)?
        .into_iter()
        .map(|s| Source {
            image: s.image,
            mask: s.mask,
        })
        .collect())
}

/// One test or held-out tile: where it was cut, its per-level maps and its label.
struct ScoredTile {
    /// Index of its image in the sources.
    source: usize,
    /// Where in the image it was cut.
    rect: PixelBox,
    /// Per-level log-likelihood maps.
    maps: TileLevelMaps,
    /// Share of its pixels the mask marks as defect (0 without a mask).
    defect_share: f32,
    /// The frame it belongs to (numbered per call of [`tile_maps`]).
    frame: usize,
}

impl ScoredTile {
    fn is_defect(&self) -> bool {
        self.defect_share > 0.0
    }
}

/// Per-level log-likelihood maps of every tile of `sources` by the daemon's detector, the
/// share of each tile's pixels the mask marks, and its frame: whole images resized into one
/// tile (the crops of one image, by their names, are a frame), or cut by `tiling` as the daemon
/// cuts frames (a tile is a defect tile when its part of the mask is; an image is a frame).
fn tile_maps(
    detector: &mut Detector,
    sources: &[Source],
    tiling: Option<Tiling>,
    what: &str,
) -> Result<Vec<ScoredTile>, EvalError> {
    let bar = progress_bar(
        true,
        sources.len(),
        &format!("{what} {{bar:40}} {{pos}}/{{len}} images, {{eta}} left"),
    );
    let mut out = Vec::with_capacity(sources.len());
    let images: Vec<&Path> = sources.iter().map(|s| s.image.as_path()).collect();
    let frames = frames_of(&images, tiling.is_some());
    for (index, source) in sources.iter().enumerate() {
        let image = load_image(&source.image)?;
        let mask = match &source.mask {
            Some(m) => Some(load_mask(m, &source.image, image.dimensions())?),
            None => None,
        };
        let defect_share = |rect: &PixelBox| {
            mask.as_ref().map_or(0.0, |m| {
                let marked = (rect.y..rect.y + rect.height)
                    .flat_map(|y| (rect.x..rect.x + rect.width).map(move |x| (x, y)))
                    .filter(|&(x, y)| m.get_pixel(x, y).0[0] > 127)
                    .count();
                marked as f32 / (rect.width * rect.height).max(1) as f32
            })
        };
        for (rect, maps) in detector.tiles_level_maps(&image, tiling)? {
            out.push(ScoredTile {
                source: index,
                defect_share: defect_share(&rect),
                frame: frames[index],
                rect,
                maps,
            });
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// The held-out tiles of every fold, each with the manifest of the fold's bundle that scored
/// them; a fold bundle must have the `levels` of the `compared` bundle.
fn fold_tiles(
    folds: &[HeldOutFold],
    compared: &Path,
    levels: usize,
    tiling: Option<Tiling>,
) -> Result<Vec<(Manifest, Vec<ScoredTile>)>, EvalError> {
    folds
        .iter()
        .enumerate()
        .map(|(i, fold)| {
            let bundle = Bundle::load(&fold.bundle)?;
            if bundle.manifest.levels.len() != levels {
                return Err(EvalError::Mismatch {
                    path: fold.bundle.clone(),
                    message: format!(
                        "{} levels, but {} has {levels}: a fold must be trained as that bundle \
                         was, without the fold's images",
                        bundle.manifest.levels.len(),
                        compared.display(),
                    ),
                });
            }
            let fold_manifest = bundle.manifest.clone();
            let mut detector = Detector::new(bundle, ExtractorPrecision::F32, f32::MAX)?;
            let what = format!("fold {}/{}", i + 1, folds.len());
            let tiles = held_out_tiles(&mut detector, &fold.images, tiling, &what)?;
            Ok((fold_manifest, tiles))
        })
        .collect()
}

/// Per group, the defect-free and the defect tiles' scores under `candidate`, each group's
/// tiles scored by the manifest that goes with them and against their own frames (every tile
/// in its frame's mean).
fn group_scores(
    groups: &[(Manifest, Vec<ScoredTile>)],
    candidate: &PostProcessing,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    groups
        .iter()
        .map(|(manifest, tiles)| {
            let (mut good, mut defect) = (Vec::new(), Vec::new());
            for (score, tile) in scores(manifest, candidate, tiles).into_iter().zip(tiles) {
                if tile.is_defect() {
                    defect.push(score);
                } else {
                    good.push(score);
                }
            }
            (good, defect)
        })
        .collect()
}

/// The defect-free and the defect scores of all groups together.
fn pooled(per_group: &[(Vec<f32>, Vec<f32>)]) -> (Vec<f32>, Vec<f32>) {
    let good = per_group
        .iter()
        .flat_map(|(g, _)| g.iter().copied())
        .collect();
    let defect = per_group
        .iter()
        .flat_map(|(_, d)| d.iter().copied())
        .collect();
    (good, defect)
}

/// Each fold's tiles decided by the threshold calibrated on the other folds' defect-free tiles,
/// the counts summed over the folds.
fn leave_one_fold_out(per_fold: &[(Vec<f32>, Vec<f32>)], rate: f64) -> OperatingPoint {
    let points: Vec<OperatingPoint> = (0..per_fold.len())
        .map(|k| {
            let others: Vec<f32> = per_fold
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != k)
                .flat_map(|(_, (good, _))| good.iter().copied())
                .collect();
            let (threshold, _) = held_out_threshold(&others, rate);
            OperatingPoint::at(threshold, &per_fold[k].0, &per_fold[k].1)
        })
        .collect();
    OperatingPoint::summed(&points)
}

/// The out-of-fold sample a threshold for `bundle` with `post` is calibrated on: every fold's
/// defect-free held-out tiles, scored by the fold's own bundle (its score constants, `post`'s
/// post-processing) against their own frames, pooled.
pub fn out_of_fold_scores(
    bundle: &Path,
    folds: &[HeldOutFold],
    post: &PostProcessing,
    tiling: Option<Tiling>,
) -> Result<Vec<f32>, EvalError> {
    let levels = Bundle::load(bundle)?.manifest.levels.len();
    let groups = fold_tiles(folds, bundle, levels, tiling)?;
    // A bundle's score constants are fixed for its smoothing and level weights: a fold
    // calibrated for others would score on another scale.
    let weights = |w: &[f32]| {
        if w.is_empty() {
            vec![1.0; levels]
        } else {
            w.to_vec()
        }
    };
    for ((fold_manifest, _), fold) in groups.iter().zip(folds) {
        let own = &fold_manifest.score;
        if own.smoothing_sigma != post.smoothing_sigma
            || weights(&own.level_weights) != weights(&post.level_weights)
        {
            return Err(EvalError::Mismatch {
                path: fold.bundle.clone(),
                message: format!(
                    "its score constants are for sigma {} and level weights {:?}, the threshold \
                     is asked for sigma {} and {:?}: calibrate the fold with those first",
                    own.smoothing_sigma,
                    weights(&own.level_weights),
                    post.smoothing_sigma,
                    weights(&post.level_weights)
                ),
            });
        }
    }
    Ok(pooled(&group_scores(&groups, post)).0)
}

/// The tiles of held-out images in `dir`: a folder of defect-free images, or an MVTec layout
/// whose test split holds whole frames with masks.
fn held_out_tiles(
    detector: &mut Detector,
    dir: &Path,
    tiling: Option<Tiling>,
    what: &str,
) -> Result<Vec<ScoredTile>, EvalError> {
    let sources: Vec<Source> = if dir.join("test").is_dir() {
        labelled_sources(dir, None)?
    } else {
        list_images(dir)?
            .into_iter()
            .map(|image| Source { image, mask: None })
            .collect()
    };
    if sources.is_empty() {
        return Err(EvalError::Empty(dir.to_path_buf()));
    }
    tile_maps(detector, &sources, tiling, what)
}

/// Tile scores of `tiles` under `candidate`.
fn scores(manifest: &Manifest, candidate: &PostProcessing, tiles: &[ScoredTile]) -> Vec<f32> {
    let mut m = manifest.clone();
    m.score = candidate.apply(&manifest.score);
    let mut scorer = Scorer::new(&m, f32::MAX);
    let mut out: Vec<f32> = tiles
        .iter()
        .map(|tile| {
            let refs: Vec<&[f32]> = tile.maps.iter().map(Vec::as_slice).collect();
            scorer.score(&refs).score
        })
        .collect();
    if candidate.frame_weight > 0.0 {
        let frames: Vec<usize> = tiles.iter().map(|t| t.frame).collect();
        relative_to_frames(&mut out, &frames, candidate.frame_weight);
    }
    out
}

/// Scores the test split (and held-out images) under every candidate; writes the table, the
/// JSON and the ROC chart of the best candidates into `job.out`.
pub fn compare_candidates(job: ComparisonJob<'_>) -> Result<Comparison, EvalError> {
    let bundle = Bundle::load(job.bundle)?;
    let manifest = bundle.manifest.clone();
    let mut detector = Detector::new(bundle, ExtractorPrecision::F32, f32::MAX)?;
    let sources = labelled_sources(job.data, job.limit)?;
    let test_tiles = tile_maps(&mut detector, &sources, job.tiling, "test")?;
    let labels: Vec<bool> = test_tiles.iter().map(ScoredTile::is_defect).collect();
    // Held-out tiles with the manifest of the bundle that scored them.
    let held_out: Vec<(Manifest, Vec<ScoredTile>)> = match job.calibration {
        Calibration::None => Vec::new(),
        Calibration::HeldOut(dir) => vec![(
            manifest.clone(),
            held_out_tiles(&mut detector, dir, job.tiling, "held-out")?,
        )],
        Calibration::OutOfFold(folds) => {
            fold_tiles(folds, job.bundle, manifest.levels.len(), job.tiling)?
        }
    };
    let own = PostProcessing::of(&manifest.score);
    let mut candidates = vec![own.clone()];
    candidates.extend(job.candidates.into_iter().filter(|c| *c != own));
    let evaluate = |candidate: &PostProcessing| -> CandidateResult {
        let all = scores(&manifest, candidate, &test_tiles);
        let (mut good, mut defect) = (Vec::new(), Vec::new());
        for (&s, &is_defect) in all.iter().zip(&labels) {
            if is_defect {
                defect.push(s);
            } else {
                good.push(s);
            }
        }
        let at_target = OperatingPoint::at(threshold_for_rate(&good, job.rate), &good, &defect);
        let per_group = group_scores(&held_out, candidate);
        let leave_one_fold_out = match job.calibration {
            Calibration::OutOfFold(folds) if folds.len() > 1 => {
                Some(leave_one_fold_out(&per_group, job.rate))
            }
            _ => None,
        };
        let (calibrated, held_out_point) = if held_out.is_empty() {
            (None, None)
        } else {
            let (held_good, held_defect) = pooled(&per_group);
            let (threshold, estimator) = held_out_threshold(&held_good, job.rate);
            (
                Some((OperatingPoint::at(threshold, &good, &defect), estimator)),
                Some(OperatingPoint::at(threshold, &held_good, &held_defect)),
            )
        };
        CandidateResult {
            label: candidate.label(),
            candidate: candidate.clone(),
            tile_auroc: auroc(&all, &labels),
            at_target,
            calibrated,
            held_out: held_out_point,
            leave_one_fold_out,
            roc: roc_curve(&all, &labels, 1e-3).unwrap_or_default(),
            scores: all,
        }
    };
    // Candidates are independent: spread them over the cores.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = candidates.len().div_ceil(threads);
    let results: Vec<CandidateResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = candidates
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(evaluate).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a scoring thread panicked"))
            .collect()
    });
    let comparison = Comparison {
        rate: job.rate,
        good: labels.iter().filter(|&&d| !d).count(),
        defects: labels.iter().filter(|&&d| d).count(),
        holdout: held_out
            .iter()
            .flat_map(|(_, tiles)| tiles)
            .filter(|t| !t.is_defect())
            .count(),
        folds: match job.calibration {
            Calibration::OutOfFold(folds) => folds.len(),
            _ => 0,
        },
        tiling: job.tiling.map(|t| (t.tile_size, t.overlap)),
        bundle_label: own.label(),
        results,
    };
    write_outputs(&comparison, job.out)?;
    write_tile_scores(
        &job.out.join("tile_scores.csv"),
        &sources,
        &test_tiles,
        &comparison.results,
    )?;
    Ok(comparison)
}

fn write_error(path: &Path, message: String) -> EvalError {
    EvalError::Write {
        path: path.to_path_buf(),
        message,
    }
}

fn write_outputs(comparison: &Comparison, out: &Path) -> Result<(), EvalError> {
    std::fs::create_dir_all(out).map_err(|e| write_error(out, e.to_string()))?;
    let json = out.join("candidates.json");
    let text =
        serde_json::to_string_pretty(comparison).map_err(|e| write_error(&json, e.to_string()))?;
    std::fs::write(&json, text).map_err(|e| write_error(&json, e.to_string()))?;
    let table = out.join("candidates.md");
    std::fs::write(&table, markdown_table(comparison))
        .map_err(|e| write_error(&table, e.to_string()))?;
    // The ROC of the bundle's own candidate and the four best by detection at the target.
    let mut ranked: Vec<&CandidateResult> = comparison.results.iter().skip(1).collect();
    ranked.sort_by(|a, b| {
        b.at_target
            .true_positive_rate()
            .total_cmp(&a.at_target.true_positive_rate())
    });
    let series: Vec<Series> = comparison
        .results
        .iter()
        .take(1)
        .chain(ranked.into_iter().take(4))
        .map(|r| Series {
            label: format!("{}: AUROC {:.3}", r.label, r.tile_auroc.unwrap_or(f64::NAN)),
            points: r.roc.clone(),
        })
        .collect();
    draw_roc(&out.join("tile_roc.png"), "Tile ROC", &series)?;
    draw_roc_up_to(
        &out.join("tile_roc_low.png"),
        "Tile ROC up to 10% false alarms",
        &series,
        0.1,
    )
}

/// Every test tile's image, box, defect share and score under each candidate (a column per
/// candidate, the bundle's own first), highest first by the bundle's own: where to look for
/// what fools the model (the defect-free tiles at the top) and what it misses (the defect
/// tiles at the bottom).
fn write_tile_scores(
    path: &Path,
    sources: &[Source],
    tiles: &[ScoredTile],
    results: &[CandidateResult],
) -> Result<(), EvalError> {
    let Some(own) = results.first() else {
        return Ok(());
    };
    let mut order: Vec<usize> = (0..tiles.len()).collect();
    order.sort_by(|&a, &b| own.scores[b].total_cmp(&own.scores[a]));
    let mut text = String::from("image,x,y,width,height,defect_share");
    for r in results {
        text.push(',');
        text.push_str(&csv_field(&r.label));
    }
    text.push('\n');
    for i in order {
        let t = &tiles[i];
        text.push_str(&format!(
            "{},{},{},{},{},{:.5}",
            csv_field(&sources[t.source].image.display().to_string()),
            t.rect.x,
            t.rect.y,
            t.rect.width,
            t.rect.height,
            t.defect_share,
        ));
        for r in results {
            text.push_str(&format!(",{}", r.scores[i]));
        }
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| write_error(path, e.to_string()))
}

/// `field` quoted for CSV when it holds a comma, a quote or a line break.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// The comparison as a Markdown table, one row per candidate (the bundle's own first).
pub fn markdown_table(c: &Comparison) -> String {
    let pct = |v: f64| format!("{:.1}%", 100.0 * v);
    let tiles = match c.tiling {
        Some((size, overlap)) => {
            format!("tiles of {size} px, overlap {overlap}, as the daemon cuts frames")
        }
        None => "each image resized whole into one tile".to_string(),
    };
    let folds = match c.folds {
        0 => String::new(),
        n => format!(" (out of fold: each of {n} folds scored by flows trained without it)"),
    };
    let mut s = format!(
        "{} defect-free and {} defect test tiles ({tiles}); target false-alarm rate {}; {} \
         held-out defect-free tiles for the calibrated threshold{folds}.\n\n\
         | post-processing | tile AUROC | TPR at {} FPR (test) | calibrated threshold: TPR | \
         its FPR on test [95% interval] | on the held-out tiles: FPR / TPR | each fold by \
         the others: FPR [95%] / TPR |\n|---|---|---|---|---|---|---|\n",
        c.good,
        c.defects,
        pct(c.rate),
        c.holdout,
        pct(c.rate)
    );
    for (i, r) in c.results.iter().enumerate() {
        let own = if i == 0 { " (bundle)" } else { "" };
        let calibrated = match &r.calibrated {
            Some((p, estimator)) => {
                let (lo, hi) = p.false_alarm_interval;
                (
                    format!("{:.3} ({})", p.true_positive_rate(), estimator.name()),
                    format!("{} [{}, {}]", pct(p.false_alarm_rate()), pct(lo), pct(hi)),
                )
            }
            None => ("n/a".into(), "n/a".into()),
        };
        let held_out = match &r.held_out {
            Some(p) if p.defects > 0 => format!(
                "{} / {:.3}",
                pct(p.false_alarm_rate()),
                p.true_positive_rate()
            ),
            Some(p) => format!("{} / n/a", pct(p.false_alarm_rate())),
            None => "n/a".into(),
        };
        let crossed = match &r.leave_one_fold_out {
            Some(p) => {
                let (lo, hi) = p.false_alarm_interval;
                format!(
                    "{} [{}, {}] / {:.3}",
                    pct(p.false_alarm_rate()),
                    pct(lo),
                    pct(hi),
                    p.true_positive_rate()
                )
            }
            None => "n/a".into(),
        };
        s.push_str(&format!(
            "| {}{own} | {} | {:.3} | {} | {} | {held_out} | {crossed} |\n",
            r.label,
            r.tile_auroc.map_or("n/a".into(), |v| format!("{v:.4}")),
            r.at_target.true_positive_rate(),
            calibrated.0,
            calibrated.1
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_measures_the_frame_weight_beside_the_plain_candidates() {
        let grid = default_candidates(2);
        assert_eq!(grid.len(), 3 * 3 * 5 + 3 * 4 * 3);
        let framed: Vec<_> = grid.iter().filter(|c| c.frame_weight > 0.0).collect();
        assert_eq!(framed.len(), 36);
        let labels: Vec<String> = grid.iter().map(PostProcessing::label).collect();
        assert!(labels.contains(&"all levels / sigma 4 / top 20%".to_string()));
        assert!(framed
            .iter()
            .all(|c| c.top_fraction > 0.0 && c.level_weights.is_empty()));
        assert_eq!(
            framed[0].label(),
            "all levels / sigma 0 / top 1% / less 0.5 x frame mean"
        );
        // The frame weight is a score key like the others.
        let plain = ScoreSpec::new(inspect_core::bundle::Combine::Sum, vec![0.0, 0.0], 1.0);
        assert_eq!(PostProcessing::of(&framed[0].apply(&plain)), *framed[0]);
    }
}
