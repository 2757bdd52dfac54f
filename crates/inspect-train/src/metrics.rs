//! Anomaly-detection metrics (DESIGN.md, "Metrics"): pixel AUROC over all test pixels, AUPRO by
//! the MVTec AD definition, image AUROC with the maximum pixel as the image score. Exact with
//! ties: pixels of equal score move the ROC and PRO curves together, as one step.

/// Visits the cumulative `(true positives, false positives)` after each group of tied scores,
/// highest score first, starting at `(0, 0)`: the corners of the ROC curve, unnormalized.
/// Streams them: a pixel ROC has as many corners as distinct scores (tens of millions).
fn roc_corners(scores: &[f32], labels: &[bool], mut visit: impl FnMut(usize, usize)) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    visit(0, 0);
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        visit(tp, fp);
    }
}

/// A ROC curve and the area under it.
#[derive(Clone, Debug, PartialEq)]
pub struct Roc {
    /// Area under the exact curve (ties count one half, as scikit-learn's `roc_auc_score`).
    pub auroc: f64,
    /// `(false-positive rate, true-positive rate)` from (0, 0) to (1, 1), thinned: a corner is
    /// kept when it moved at least `min_step` in x or y from the last one kept (see
    /// [`thinned`]); 0 keeps every tie group.
    pub curve: Vec<(f64, f64)>,
}

/// The ROC of `scores` for `labels` (true = defect), in one sort; `None` when one class is
/// missing.
pub fn roc(scores: &[f32], labels: &[bool], min_step: f64) -> Option<Roc> {
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 || scores.len() != labels.len() {
        return None;
    }
    let (mut area, mut previous) = (0.0f64, (0usize, 0usize));
    let mut curve: Vec<(f64, f64)> = Vec::new();
    let mut last = (0.0, 0.0);
    roc_corners(scores, labels, |tp, fp| {
        // Trapezoid from the previous corner.
        let (tp0, fp0) = previous;
        area += (fp - fp0) as f64 * (tp + tp0) as f64 / 2.0;
        previous = (tp, fp);
        last = (fp as f64 / negatives as f64, tp as f64 / positives as f64);
        let moved = curve.last().is_none_or(|&(x, y): &(f64, f64)| {
            (last.0 - x).abs() >= min_step || (last.1 - y).abs() >= min_step
        });
        if moved {
            curve.push(last);
        }
    });
    if curve.last() != Some(&last) {
        curve.push(last);
    }
    Some(Roc {
        auroc: area / (positives as f64 * negatives as f64),
        curve,
    })
}

/// Area under the ROC curve of `scores` for `labels` (true = defect), `None` when one class
/// is missing. Ties count one half (the trapezoid over a tied group), as scikit-learn's
/// `roc_auc_score`.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    roc(scores, labels, f64::INFINITY).map(|r| r.auroc)
}

/// The ROC curve of [`roc`] alone.
pub fn roc_curve(scores: &[f32], labels: &[bool], min_step: f64) -> Option<Vec<(f64, f64)>> {
    roc(scores, labels, min_step).map(|r| r.curve)
}

/// The points of `curve` that moved at least `min_step` in x or y from the last point kept,
/// and its two ends: enough to draw it (millions of pixels make millions of corners).
pub fn thinned(curve: &[(f64, f64)], min_step: f64) -> Vec<(f64, f64)> {
    let mut kept: Vec<(f64, f64)> = Vec::new();
    for (i, &p) in curve.iter().enumerate() {
        let keep = match kept.last() {
            None => true,
            Some(&(x, y)) => {
                i + 1 == curve.len() || (p.0 - x).abs() >= min_step || (p.1 - y).abs() >= min_step
            }
        };
        if keep {
            kept.push(p);
        }
    }
    kept
}

/// Pixel ROC over every pixel of every image, its curve thinned by `min_step`.
pub fn pixel_roc(maps: &[&[f32]], masks: &[&[u8]], min_step: f64) -> Option<Roc> {
    let (scores, labels) = pixels(maps, masks);
    roc(&scores, &labels, min_step)
}

fn pixels(maps: &[&[f32]], masks: &[&[u8]]) -> (Vec<f32>, Vec<bool>) {
    let scores = maps.iter().flat_map(|m| m.iter().copied()).collect();
    let labels = masks
        .iter()
        .flat_map(|m| m.iter().map(|&v| v != 0))
        .collect();
    (scores, labels)
}

/// Labels the 8-connected regions of `mask` (`width x height`, nonzero = defect): returns the
/// label of each pixel (0 = background, 1..=n) and `n`.
pub fn regions(mask: &[u8], width: usize, height: usize) -> (Vec<u32>, u32) {
    let mut labels = vec![0u32; mask.len()];
    let mut count = 0;
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if mask[start] == 0 || labels[start] != 0 {
            continue;
        }
        count += 1;
        labels[start] = count;
        stack.push(start);
        while let Some(p) = stack.pop() {
            let (x, y) = ((p % width) as i64, (p / width) as i64);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= width as i64 || ny >= height as i64 {
                        continue;
                    }
                    let q = ny as usize * width + nx as usize;
                    if mask[q] != 0 && labels[q] == 0 {
                        labels[q] = count;
                        stack.push(q);
                    }
                }
            }
        }
    }
    (labels, count)
}

/// The PRO curve: `(fpr, pro)` points from (0, 0) to (1, 1), one per distinct score (highest
/// first). `maps` and `masks` hold one `width x height` image each.
pub fn pro_curve(maps: &[&[f32]], masks: &[&[u8]], width: usize, height: usize) -> Vec<(f64, f64)> {
    let mut scores = Vec::new();
    let mut fp_step = Vec::new();
    let mut pro_step = Vec::new();
    let (mut normal_pixels, mut total_regions) = (0usize, 0u32);
    for (map, mask) in maps.iter().zip(masks) {
        let (labels, n) = regions(mask, width, height);
        let mut sizes = vec![0usize; n as usize + 1];
        for &l in &labels {
            sizes[l as usize] += 1;
        }
        total_regions += n;
        for (&score, &l) in map.iter().zip(&labels) {
            scores.push(score);
            if l == 0 {
                normal_pixels += 1;
                fp_step.push(1.0);
                pro_step.push(0.0);
            } else {
                fp_step.push(0.0);
                pro_step.push(1.0 / sizes[l as usize] as f64);
            }
        }
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut curve = vec![(0.0, 0.0)];
    let (mut fp, mut pro) = (0.0f64, 0.0f64);
    for (k, &i) in order.iter().enumerate() {
        fp += fp_step[i];
        pro += pro_step[i];
        let last_of_tie = order
            .get(k + 1)
            .is_none_or(|&next| scores[next] != scores[i]);
        if last_of_tie {
            curve.push((
                (fp / normal_pixels.max(1) as f64).min(1.0),
                (pro / total_regions.max(1) as f64).min(1.0),
            ));
        }
    }
    curve.push((1.0, 1.0));
    curve
}

/// Area under `curve` (sorted by x) from 0 to `x_max`, interpolating linearly at `x_max`.
pub fn area_up_to(curve: &[(f64, f64)], x_max: f64) -> f64 {
    let mut area = 0.0;
    for w in curve.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x0 >= x_max {
            break;
        }
        if x1 <= x_max {
            area += 0.5 * (y0 + y1) * (x1 - x0);
        } else {
            let y = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0);
            area += 0.5 * (y0 + y) * (x_max - x0);
        }
    }
    area
}

/// AUPRO up to `fpr_limit` (MVTec AD: 0.3), normalized by the limit; `None` when there is no
/// defect pixel or no normal pixel.
pub fn aupro(
    maps: &[&[f32]],
    masks: &[&[u8]],
    width: usize,
    height: usize,
    fpr_limit: f64,
) -> Option<f64> {
    aupro_of_curve(&pro_curve(maps, masks, width, height), masks, fpr_limit)
}

/// [`aupro`] from the PRO curve of `masks`, already computed (for drawing it too).
pub fn aupro_of_curve(curve: &[(f64, f64)], masks: &[&[u8]], fpr_limit: f64) -> Option<f64> {
    let defect = masks
        .iter()
        .flat_map(|m| m.iter())
        .filter(|&&v| v != 0)
        .count();
    let total: usize = masks.iter().map(|m| m.len()).sum();
    if defect == 0 || defect == total {
        return None;
    }
    Some(area_up_to(curve, fpr_limit) / fpr_limit)
}

/// Pixel AUROC over every pixel of every image.
pub fn pixel_auroc(maps: &[&[f32]], masks: &[&[u8]]) -> Option<f64> {
    pixel_roc(maps, masks, f64::INFINITY).map(|r| r.auroc)
}

/// Image AUROC: each image scored by its highest pixel, labelled by whether its mask has a
/// defect pixel.
pub fn image_auroc(maps: &[&[f32]], masks: &[&[u8]]) -> Option<f64> {
    let scores: Vec<f32> = maps
        .iter()
        .map(|m| m.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        .collect();
    let labels: Vec<bool> = masks.iter().map(|m| m.iter().any(|&v| v != 0)).collect();
    auroc(&scores, &labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_by_hand() {
        // Perfect, reversed, and all tied.
        assert_eq!(auroc(&[0.9, 0.8, 0.1], &[true, true, false]), Some(1.0));
        assert_eq!(auroc(&[0.1, 0.2, 0.9], &[true, true, false]), Some(0.0));
        assert_eq!(auroc(&[0.5; 4], &[true, false, true, false]), Some(0.5));
        // One of two positives ties with the negative: (1 + 0.5) / 2.
        assert_eq!(auroc(&[0.9, 0.5, 0.5], &[true, true, false]), Some(0.75));
        assert_eq!(auroc(&[0.9], &[true]), None);
    }

    #[test]
    fn roc_curve_has_the_auroc_as_area_and_thins_to_its_ends() {
        let scores = [0.9, 0.8, 0.8, 0.7, 0.5, 0.4, 0.3, 0.3, 0.2, 0.1];
        let labels = [
            true, true, false, true, false, true, false, false, true, false,
        ];
        let curve = roc_curve(&scores, &labels, 0.0).unwrap();
        assert_eq!(curve.first(), Some(&(0.0, 0.0)));
        assert_eq!(curve.last(), Some(&(1.0, 1.0)));
        assert_eq!(curve.len(), 1 + 8, "one corner per tie group");
        let area = area_up_to(&curve, 1.0);
        assert!((area - auroc(&scores, &labels).unwrap()).abs() < 1e-12);
        let thin = roc_curve(&scores, &labels, 0.5).unwrap();
        assert!(thin.len() < curve.len() && thin.len() >= 2);
        assert_eq!((thin[0], *thin.last().unwrap()), ((0.0, 0.0), (1.0, 1.0)));
        assert!(thin.iter().all(|p| curve.contains(p)));
        assert!(roc_curve(&scores, &[true; 10], 0.0).is_none());
    }

    #[test]
    fn regions_are_8_connected() {
        #[rustfmt::skip]
        let mask = [
            1, 0, 0, 1,
            0, 1, 0, 0,
            0, 0, 0, 1,
        ];
        let (labels, n) = regions(&mask, 4, 3);
        assert_eq!(n, 3, "the diagonal pair is one region");
        assert_eq!(labels[0], labels[5]);
        assert_ne!(labels[3], labels[11]);
    }
}
