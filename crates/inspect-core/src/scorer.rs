//! From per-level log-likelihood maps to a tile's anomaly map, score and region.
//!
//! For each level `l` with `C_l` channels: `p_l = exp(logp_l / C_l - offset_l)`, upsampled
//! bilinearly (corners aligned, as CFlow's `F.interpolate(..., align_corners=True)`) to the model
//! input size; the levels are summed (CFlow) or multiplied (the paper) with their weights
//! (`w_l p_l`, `p_l^w_l`), `anomaly = reference - combined`, then optionally smoothed by a
//! Gaussian ([`GaussianFilter`]). The offsets and the reference are calibration constants from
//! the bundle manifest, never statistics of a test set (as CFlow-AD's evaluation normalizes): the
//! device sees one frame at a time. The tile score is the maximum of the map, or the mean of its highest `top_fraction` of
//! pixels; when it passes the threshold, the region is the bounding box of the pixels above it.
//! The one statistic of the frame itself: its tiles may be scored against a baseline,
//! `frame_weight` times the mean of their plain scores ([`frame_baseline`], [`relative_to_frames`]): the map and the score lose it
//! before the threshold is applied. A surface the flows never saw lifts every tile of its
//! frame; a crack lifts only its own (issue 19: 0.21 -> 0.46 of the cracked DeepCrack crops
//! detected at 1% false alarms, 0.08 -> 0.42 of the cracked frame tiles).

use crate::bundle::{Combine, Manifest};
use crate::smoothing::GaussianFilter;
use crate::tiler::PixelBox;

/// Sample positions and weights of a 1-D bilinear upsampling with aligned corners.
#[derive(Clone, Debug)]
struct Axis {
    lo: Vec<usize>,
    hi: Vec<usize>,
    frac: Vec<f32>,
}

impl Axis {
    fn new(from: usize, to: usize) -> Axis {
        let mut axis = Axis {
            lo: Vec::with_capacity(to),
            hi: Vec::with_capacity(to),
            frac: Vec::with_capacity(to),
        };
        for i in 0..to {
            let s = if to > 1 && from > 1 {
                i as f32 * (from - 1) as f32 / (to - 1) as f32
            } else {
                0.0
            };
            let lo = (s.floor() as usize).min(from - 1);
            axis.lo.push(lo);
            axis.hi.push((lo + 1).min(from - 1));
            axis.frac.push(s - lo as f32);
        }
        axis
    }
}

#[derive(Clone, Debug)]
struct Level {
    width: usize,
    inv_channels: f32,
    offset: f32,
    weight: f32,
    rows: Axis,
    cols: Axis,
}

/// The anomaly region of a tile, in model-input pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    /// Bounding box of the pixels above the threshold.
    pub bbox: PixelBox,
    /// Fraction of the tile's pixels above the threshold.
    pub area_fraction: f32,
}

/// A scored tile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TileScore {
    /// The tile's score: the maximum of its map, or the mean of its top fraction.
    pub score: f32,
    /// Region above the threshold, if the score passes it.
    pub region: Option<Region>,
}

/// Turns log-likelihood maps into anomaly maps; holds its buffers so scoring allocates nothing.
#[derive(Clone, Debug)]
pub struct Scorer {
    width: usize,
    height: usize,
    combine: Combine,
    reference: f32,
    threshold: f32,
    levels: Vec<Level>,
    smoothing: Option<GaussianFilter>,
    /// How many of the highest pixels the score averages (1 = the maximum).
    top_count: usize,
    level_map: Vec<f32>,
    anomaly: Vec<f32>,
    /// Scratch for selecting the highest pixels.
    ranked: Vec<f32>,
}

impl Scorer {
    /// A scorer for the bundle's levels, alerting above `threshold`.
    pub fn new(manifest: &Manifest, threshold: f32) -> Scorer {
        let (width, height) = (manifest.input.width, manifest.input.height);
        let score = &manifest.score;
        let levels = manifest
            .levels
            .iter()
            .zip(&score.level_offsets)
            .enumerate()
            .map(|(i, (l, &offset))| Level {
                width: l.width,
                inv_channels: 1.0 / l.channels as f32,
                offset,
                weight: score.level_weight(i),
                rows: Axis::new(l.height, height),
                cols: Axis::new(l.width, width),
            })
            .collect();
        let pixels = width * height;
        let top_count =
            ((score.top_fraction as f64 * pixels as f64).ceil() as usize).clamp(1, pixels);
        Scorer {
            width,
            height,
            combine: score.combine,
            reference: score.reference,
            threshold,
            levels,
            smoothing: (score.smoothing_sigma > 0.0)
                .then(|| GaussianFilter::new(score.smoothing_sigma, width, height)),
            top_count,
            level_map: Vec::new(),
            anomaly: vec![0.0; pixels],
            ranked: if top_count > 1 {
                vec![0.0; pixels]
            } else {
                Vec::new()
            },
        }
    }

    /// The alert threshold in use.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Changes the alert threshold (a peer's `set_threshold`, bounded by the link).
    pub fn set_threshold(&mut self, threshold: f32) {
        self.threshold = threshold;
    }

    /// The anomaly map of the last scored tile, row-major, model-input size.
    pub fn anomaly_map(&self) -> &[f32] {
        &self.anomaly
    }

    /// Scores one tile from its per-level log-likelihood maps (`height_l x width_l` each).
    pub fn score(&mut self, logp: &[&[f32]]) -> TileScore {
        self.score_against(logp, 0.0)
    }

    /// Scores one tile less `baseline` (its frame's, from [`frame_baseline`]): the map, the
    /// score and the region above the threshold are all relative to it.
    pub fn score_against(&mut self, logp: &[&[f32]], baseline: f32) -> TileScore {
        debug_assert_eq!(logp.len(), self.levels.len());
        let (w, h) = (self.width, self.height);
        let identity = match self.combine {
            Combine::Sum => 0.0,
            Combine::Product => 1.0,
        };
        self.anomaly.fill(identity);
        for (level, map) in self.levels.iter().zip(logp) {
            if level.weight == 0.0 {
                continue;
            }
            // Weighted likelihood at feature resolution (a product's weight is an exponent),
            // then upsample into the combined map.
            let (outer, inner) = match self.combine {
                Combine::Sum => (level.weight, 1.0),
                Combine::Product => (1.0, level.weight),
            };
            self.level_map.clear();
            self.level_map.extend(
                map.iter()
                    .map(|&v| outer * (inner * (v * level.inv_channels - level.offset)).exp()),
            );
            let src = &self.level_map;
            for y in 0..h {
                let (r0, r1, fy) = (level.rows.lo[y], level.rows.hi[y], level.rows.frac[y]);
                let row = &mut self.anomaly[y * w..(y + 1) * w];
                for (x, out) in row.iter_mut().enumerate() {
                    let (c0, c1, fx) = (level.cols.lo[x], level.cols.hi[x], level.cols.frac[x]);
                    let top =
                        src[r0 * level.width + c0] * (1.0 - fx) + src[r0 * level.width + c1] * fx;
                    let bottom =
                        src[r1 * level.width + c0] * (1.0 - fx) + src[r1 * level.width + c1] * fx;
                    let p = top * (1.0 - fy) + bottom * fy;
                    match self.combine {
                        Combine::Sum => *out += p,
                        Combine::Product => *out *= p,
                    }
                }
            }
        }
        for a in self.anomaly.iter_mut() {
            *a = self.reference - *a;
        }
        if let Some(filter) = self.smoothing.as_mut() {
            filter.apply(&mut self.anomaly);
        }
        if baseline != 0.0 {
            for a in self.anomaly.iter_mut() {
                *a -= baseline;
            }
        }
        let score = self.tile_statistic();
        // The region is drawn only for an alert (the score passes, so some pixel does too).
        let region = if score > self.threshold {
            self.region_above_threshold()
        } else {
            None
        };
        TileScore { score, region }
    }

    /// The bounding box and area of the map's pixels above the threshold.
    fn region_above_threshold(&self) -> Option<Region> {
        let (w, h) = (self.width, self.height);
        let (mut x0, mut y0, mut x1, mut y1, mut count) = (usize::MAX, usize::MAX, 0, 0, 0usize);
        for y in 0..h {
            for x in 0..w {
                if self.anomaly[y * w + x] > self.threshold {
                    count += 1;
                    x0 = x0.min(x);
                    y0 = y0.min(y);
                    x1 = x1.max(x + 1);
                    y1 = y1.max(y + 1);
                }
            }
        }
        (count > 0).then(|| Region {
            bbox: PixelBox {
                x: x0 as u32,
                y: y0 as u32,
                width: (x1 - x0) as u32,
                height: (y1 - y0) as u32,
            },
            area_fraction: count as f32 / (w * h) as f32,
        })
    }

    /// The maximum of the map, or the mean of its `top_count` highest pixels.
    fn tile_statistic(&mut self) -> f32 {
        if self.top_count <= 1 {
            return self
                .anomaly
                .iter()
                .fold(f32::NEG_INFINITY, |m, &a| m.max(a));
        }
        self.ranked.copy_from_slice(&self.anomaly);
        let k = self.top_count;
        // Partition so that the last k entries are the k highest.
        let split = self.ranked.len() - k;
        self.ranked.select_nth_unstable_by(split, f32::total_cmp);
        let top = &self.ranked[split..];
        (top.iter().map(|&v| f64::from(v)).sum::<f64>() / k as f64) as f32
    }
}

/// The baseline a frame's tiles are scored against: `weight` times the mean of their plain
/// scores (0 for no tiles).
pub fn frame_baseline(plain_scores: &[f32], weight: f32) -> f32 {
    if plain_scores.is_empty() || weight == 0.0 {
        return 0.0;
    }
    let sum: f64 = plain_scores.iter().map(|&s| f64::from(s)).sum();
    weight * (sum / plain_scores.len() as f64) as f32
}

/// Plain tile scores of several frames made relative to their frame's baseline
/// (`frames[i]` names the frame of `scores[i]`): for evaluation and calibration, which score
/// many frames' tiles at once.
pub fn relative_to_frames(scores: &mut [f32], frames: &[usize], weight: f32) {
    debug_assert_eq!(scores.len(), frames.len());
    if weight == 0.0 {
        return;
    }
    let mut members: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, &f) in frames.iter().enumerate() {
        members.entry(f).or_default().push(i);
    }
    for tiles in members.values() {
        let plain: Vec<f32> = tiles.iter().map(|&i| scores[i]).collect();
        let baseline = frame_baseline(&plain, weight);
        for &i in tiles {
            scores[i] -= baseline;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{ExtractorSpec, HeadSpec, InputSpec, LevelSpec, ScoreSpec, ThresholdSpec};

    fn manifest(combine: Combine, levels: &[(usize, usize)], input: usize) -> Manifest {
        Manifest {
            format_version: 1,
            input: InputSpec {
                width: input,
                height: input,
                mean: [0.0; 3],
                std: [1.0; 3],
            },
            extractor: ExtractorSpec {
                file: "e.onnx".into(),
                name: "test".into(),
            },
            head: HeadSpec {
                file: "h.onnx".into(),
            },
            levels: levels
                .iter()
                .map(|&(stride, channels)| LevelSpec {
                    tap: format!("t{stride}"),
                    logp: format!("l{stride}"),
                    channels,
                    height: input / stride,
                    width: input / stride,
                    stride,
                })
                .collect(),
            score: ScoreSpec::new(
                combine,
                vec![0.0; levels.len()],
                if combine == Combine::Sum {
                    levels.len() as f32
                } else {
                    1.0
                },
            ),
            threshold: ThresholdSpec {
                value: 0.5,
                method: "manual".into(),
                false_alarm_rate: None,
                estimator: None,
            },
            training: None,
            metrics: None,
            files: Default::default(),
            bundle_version: 0,
        }
    }

    #[test]
    fn normal_tile_scores_zero_and_has_no_region() {
        let m = manifest(Combine::Sum, &[(4, 2), (8, 3)], 16);
        let mut s = Scorer::new(&m, 0.5);
        let (a, b) = (vec![0.0; 16], vec![0.0; 4]);
        let t = s.score(&[&a, &b]);
        assert!(t.score.abs() < 1e-6, "{t:?}");
        assert!(t.region.is_none());
    }

    #[test]
    fn upsampling_aligns_corners_and_region_covers_the_drop() {
        // One level 2x2 upsampled to 4x4 with aligned corners: weights 0, 1/3, 2/3, 1.
        let m = manifest(Combine::Sum, &[(2, 1)], 4);
        let mut s = Scorer::new(&m, 0.5);
        // logp = ln(p): top-right cell has likelihood 0.1, the rest 1.
        let logp = [0.0, 0.1f32.ln(), 0.0, 0.0];
        let t = s.score(&[&logp]);
        let map = s.anomaly_map().to_vec();
        assert!((map[3] - 0.9).abs() < 1e-5, "corner {map:?}");
        assert!((map[2] - 0.6).abs() < 1e-5, "2/3 of the way {map:?}");
        assert!((map[1] - 0.3).abs() < 1e-5);
        assert!(map[12].abs() < 1e-6);
        assert!((t.score - 0.9).abs() < 1e-5);
        let r = t.region.unwrap();
        assert_eq!(
            r.bbox,
            PixelBox {
                x: 2,
                y: 0,
                width: 2,
                height: 2
            }
        );
        assert!((r.area_fraction - 3.0 / 16.0).abs() < 1e-6, "{r:?}");
    }

    #[test]
    fn product_combines_levels_and_divides_by_channels() {
        let mut m = manifest(Combine::Product, &[(2, 4), (4, 1)], 4);
        m.score.level_offsets = vec![-1.0, 0.0];
        let mut s = Scorer::new(&m, 0.99);
        // Level 0: logp/C - offset = -4/4 + 1 = 0 -> p = 1; level 1: p = 0.5 everywhere.
        let l0 = [-4.0; 4];
        let l1 = [0.5f32.ln()];
        let t = s.score(&[&l0, &l1]);
        assert!(s.anomaly_map().iter().all(|a| (a - 0.5).abs() < 1e-5));
        assert!(t.region.is_none());
    }

    #[test]
    fn level_weights_scale_a_sum_and_raise_a_product() {
        // Two levels at one cell each, likelihoods 0.5 and 0.25.
        let l0 = [0.5f32.ln()];
        let l1 = [0.25f32.ln()];
        let mut m = manifest(Combine::Sum, &[(4, 1), (4, 1)], 4);
        m.score.reference = 0.0;
        m.score.level_weights = vec![2.0, 0.0];
        let t = Scorer::new(&m, 10.0).score(&[&l0, &l1]);
        assert!((t.score + 1.0).abs() < 1e-6, "-(2 x 0.5 + 0 x 0.25): {t:?}");
        let mut m = manifest(Combine::Product, &[(4, 1), (4, 1)], 4);
        m.score.reference = 0.0;
        m.score.level_weights = vec![1.0, 0.5];
        let t = Scorer::new(&m, 10.0).score(&[&l0, &l1]);
        assert!((t.score + 0.25).abs() < 1e-6, "-(0.5 x 0.25^0.5): {t:?}");
    }

    #[test]
    fn top_fraction_averages_the_highest_pixels_and_decides_the_alert() {
        // 4x4 input from a 4x4 level (stride 1): the anomaly map is 1 - p exactly.
        let mut m = manifest(Combine::Sum, &[(1, 1)], 4);
        m.score.reference = 1.0;
        m.score.top_fraction = 0.25; // the top 4 of 16 pixels
        let mut logp = [0.0f32; 16];
        for (i, a) in [0.9f32, 0.7, 0.5, 0.3, 0.1].iter().enumerate() {
            logp[i] = (1.0 - a).ln();
        }
        let mut s = Scorer::new(&m, 0.55);
        let t = s.score(&[&logp]);
        assert!(
            (t.score - 0.6).abs() < 1e-5,
            "mean of 0.9 0.7 0.5 0.3: {t:?}"
        );
        let r = t.region.expect("0.6 passes 0.55");
        // The region is the pixels above the threshold: 0.9 and 0.7 (x = 0, 1 of row 0).
        assert_eq!((r.bbox.x, r.bbox.width, r.bbox.height), (0, 2, 1));
        // A threshold between the mean and the maximum: no alert, though one pixel is above.
        s.set_threshold(0.8);
        assert!(s.score(&[&logp]).region.is_none());
    }

    #[test]
    fn a_baseline_lowers_map_score_and_region_alike() {
        // 4x4 from a 4x4 level: 1 - p exactly. A surface at 0.4, a crack of two pixels at 0.9.
        let mut m = manifest(Combine::Sum, &[(1, 1)], 4);
        m.score.reference = 1.0;
        let mut logp = [(1.0f32 - 0.4).ln(); 16];
        logp[5] = (1.0f32 - 0.9).ln();
        logp[6] = (1.0f32 - 0.9).ln();
        let mut s = Scorer::new(&m, 0.35);
        let plain = s.score(&[&logp]);
        assert!((plain.score - 0.9).abs() < 1e-5, "{plain:?}");
        let r = plain.region.unwrap();
        assert_eq!(
            (r.bbox.width, r.bbox.height),
            (4, 4),
            "every pixel passes 0.35"
        );
        let t = s.score_against(&[&logp], 0.3);
        assert!((t.score - 0.6).abs() < 1e-5, "0.9 - 0.3: {t:?}");
        assert!(s
            .anomaly_map()
            .iter()
            .all(|&a| (a - 0.1).abs() < 1e-5 || (a - 0.6).abs() < 1e-5));
        // Against the baseline only the crack's two pixels pass the threshold.
        let r = t.region.expect("0.6 passes 0.35");
        assert_eq!(
            (r.bbox.x, r.bbox.y, r.bbox.width, r.bbox.height),
            (1, 1, 2, 1)
        );
        assert!(
            s.score_against(&[&logp], 0.6).region.is_none(),
            "0.3 < 0.35"
        );
    }

    #[test]
    fn frames_lose_a_share_of_their_own_mean_only() {
        assert_eq!(frame_baseline(&[1.0, 2.0, 6.0], 0.75), 2.25);
        assert_eq!(frame_baseline(&[], 0.75), 0.0);
        // Frame 7: a lifted surface (2, 2) and a crack on it (5); frame 3: a plain surface (1)
        // and the same crack (4). Relative to its frame, the crack on the lifted surface no
        // longer outscores the other by the lift.
        let mut scores = [2.0, 1.0, 2.0, 5.0, 4.0];
        let frames = [7, 3, 7, 7, 3];
        relative_to_frames(&mut scores, &frames, 1.0);
        assert_eq!(scores, [-1.0, -1.5, -1.0, 2.0, 1.5]);
        let mut half = [2.0, 1.0, 2.0, 5.0, 4.0];
        relative_to_frames(&mut half, &frames, 0.5);
        assert_eq!(half, [0.5, -0.25, 0.5, 3.5, 2.75]);
        let mut none = [2.0, 1.0];
        relative_to_frames(&mut none, &[0, 1], 0.0);
        assert_eq!(none, [2.0, 1.0]);
    }

    #[test]
    fn smoothing_spreads_a_spike_before_the_score() {
        let mut m = manifest(Combine::Sum, &[(1, 1)], 16);
        m.score.reference = 1.0;
        let mut logp = [0.0f32; 256];
        logp[8 * 16 + 8] = 0.2f32.ln(); // anomaly 0.8 at one pixel
        let raw = Scorer::new(&m, 0.5).score(&[&logp]);
        m.score.smoothing_sigma = 1.0;
        let mut s = Scorer::new(&m, 0.5);
        let smooth = s.score(&[&logp]);
        assert!((raw.score - 0.8).abs() < 1e-6);
        // The centre keeps 0.8 x w0^2 with w0 = 1 / sum(exp(-x^2/2)) = 0.3989.
        assert!(
            (smooth.score - 0.8 * 0.398_942_3f32.powi(2)).abs() < 1e-4,
            "{smooth:?}"
        );
        assert!(
            smooth.region.is_none(),
            "the spike alone no longer passes 0.5"
        );
        assert!(s.anomaly_map()[8 * 16 + 9] > 0.0);
    }
}
