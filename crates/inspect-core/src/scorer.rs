//! From per-level log-likelihood maps to a tile's anomaly map, score and region.
//!
//! For each level `l` with `C_l` channels: `p_l = exp(logp_l / C_l - offset_l)`, upsampled
//! bilinearly (corners aligned, as CFlow's `F.interpolate(..., align_corners=True)`) to the model
//! input size; the levels are summed (CFlow) or multiplied (the paper), and
//! `anomaly = reference - combined`. The offsets and the reference are calibration constants from
//! the bundle manifest, never statistics of the frame being scored: the device sees one frame at a
//! time. The tile score is the maximum of the anomaly map; the region is the bounding box of the
//! pixels above the threshold.

use crate::bundle::{Combine, Manifest};
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
    /// Maximum anomaly over the tile.
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
    level_map: Vec<f32>,
    anomaly: Vec<f32>,
}

impl Scorer {
    /// A scorer for the bundle's levels, alerting above `threshold`.
    pub fn new(manifest: &Manifest, threshold: f32) -> Scorer {
        let (width, height) = (manifest.input.width, manifest.input.height);
        let levels = manifest
            .levels
            .iter()
            .zip(&manifest.score.level_offsets)
            .map(|(l, &offset)| Level {
                width: l.width,
                inv_channels: 1.0 / l.channels as f32,
                offset,
                rows: Axis::new(l.height, height),
                cols: Axis::new(l.width, width),
            })
            .collect();
        Scorer {
            width,
            height,
            combine: manifest.score.combine,
            reference: manifest.score.reference,
            threshold,
            levels,
            level_map: Vec::new(),
            anomaly: vec![0.0; width * height],
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
        debug_assert_eq!(logp.len(), self.levels.len());
        let (w, h) = (self.width, self.height);
        let identity = match self.combine {
            Combine::Sum => 0.0,
            Combine::Product => 1.0,
        };
        self.anomaly.fill(identity);
        for (level, map) in self.levels.iter().zip(logp) {
            // Likelihood at feature resolution, then upsample into the combined map.
            self.level_map.clear();
            self.level_map.extend(
                map.iter()
                    .map(|&v| (v * level.inv_channels - level.offset).exp()),
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
        let mut max = f32::NEG_INFINITY;
        let (mut x0, mut y0, mut x1, mut y1, mut count) = (usize::MAX, usize::MAX, 0, 0, 0usize);
        for y in 0..h {
            for x in 0..w {
                let a = self.reference - self.anomaly[y * w + x];
                self.anomaly[y * w + x] = a;
                max = max.max(a);
                if a > self.threshold {
                    count += 1;
                    x0 = x0.min(x);
                    y0 = y0.min(y);
                    x1 = x1.max(x + 1);
                    y1 = y1.max(y + 1);
                }
            }
        }
        let region = (count > 0).then(|| Region {
            bbox: PixelBox {
                x: x0 as u32,
                y: y0 as u32,
                width: (x1 - x0) as u32,
                height: (y1 - y0) as u32,
            },
            area_fraction: count as f32 / (w * h) as f32,
        });
        TileScore { score: max, region }
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
            score: ScoreSpec {
                combine,
                level_offsets: vec![0.0; levels.len()],
                reference: if combine == Combine::Sum {
                    levels.len() as f32
                } else {
                    1.0
                },
            },
            threshold: ThresholdSpec {
                value: 0.5,
                method: "manual".into(),
                false_alarm_rate: None,
            },
            training: None,
            metrics: None,
            files: Default::default(),
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
}
