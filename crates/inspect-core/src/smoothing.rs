//! Gaussian smoothing of an anomaly map, as CFlow-AD's and anomalib's evaluations smooth theirs
//! (`scipy.ndimage.gaussian_filter(map, sigma)`): a separable kernel of radius
//! `round(4 sigma)`, edges mirrored with the edge pixel repeated (scipy's `reflect`), rows first
//! then columns. Buffers are sized once per map size, so smoothing allocates nothing.

/// A Gaussian filter for maps of one size.
#[derive(Clone, Debug)]
pub struct GaussianFilter {
    kernel: Vec<f32>,
    width: usize,
    height: usize,
    /// One padded row or column.
    line: Vec<f32>,
    /// The map after the first pass.
    pass: Vec<f32>,
}

impl GaussianFilter {
    /// A filter of standard deviation `sigma` (pixels, > 0) for `width x height` maps.
    pub fn new(sigma: f32, width: usize, height: usize) -> GaussianFilter {
        // scipy: radius = int(truncate * sigma + 0.5) with truncate 4, weights exp(-x^2 / 2s^2)
        // normalised to sum 1 (in f64, as scipy computes them).
        let radius = (4.0 * f64::from(sigma) + 0.5) as usize;
        let s2 = f64::from(sigma) * f64::from(sigma);
        let raw: Vec<f64> = (0..=2 * radius)
            .map(|i| {
                let x = i as f64 - radius as f64;
                (-0.5 * x * x / s2).exp()
            })
            .collect();
        let sum: f64 = raw.iter().sum();
        GaussianFilter {
            kernel: raw.iter().map(|w| (w / sum) as f32).collect(),
            width,
            height,
            line: vec![0.0; width.max(height) + 2 * radius],
            pass: vec![0.0; width * height],
        }
    }

    /// Kernel radius in pixels.
    pub fn radius(&self) -> usize {
        self.kernel.len() / 2
    }

    /// Smooths `map` (row-major, the filter's size) in place.
    pub fn apply(&mut self, map: &mut [f32]) {
        let (w, h) = (self.width, self.height);
        debug_assert_eq!(map.len(), w * h);
        // Along each column (scipy's axis 0), into `pass`.
        for x in 0..w {
            fill_line(&mut self.line, self.kernel.len() / 2, h, |i| map[i * w + x]);
            for y in 0..h {
                self.pass[y * w + x] = convolve(&self.kernel, &self.line[y..]);
            }
        }
        // Along each row (axis 1), back into `map`.
        for y in 0..h {
            let row = &self.pass[y * w..(y + 1) * w];
            fill_line(&mut self.line, self.kernel.len() / 2, w, |i| row[i]);
            for x in 0..w {
                map[y * w + x] = convolve(&self.kernel, &self.line[x..]);
            }
        }
    }
}

/// Copies a line of `n` values into `line`, padded by `radius` on each side with mirrored
/// values.
fn fill_line(line: &mut [f32], radius: usize, n: usize, value: impl Fn(usize) -> f32) {
    for (k, out) in line[..n + 2 * radius].iter_mut().enumerate() {
        *out = value(reflect(k as isize - radius as isize, n));
    }
}

/// The dot product of the kernel with the window starting at `window[0]`.
fn convolve(kernel: &[f32], window: &[f32]) -> f32 {
    kernel.iter().zip(window).map(|(k, v)| k * v).sum()
}

/// scipy's `reflect` boundary (`d c b a | a b c d | d c b a`), repeated for any offset.
fn reflect(i: isize, n: usize) -> usize {
    let period = 2 * n as isize;
    let m = i.rem_euclid(period);
    if m < n as isize {
        m as usize
    } else {
        (period - 1 - m) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflection_repeats_the_edge_pixel() {
        let n = 4;
        let got: Vec<usize> = (-5..9).map(|i| reflect(i, n)).collect();
        // d c b a | a b c d | d c b a ...
        assert_eq!(got, vec![3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0]);
    }

    #[test]
    fn a_constant_map_stays_constant_and_mass_is_kept() {
        let mut f = GaussianFilter::new(2.0, 9, 7);
        assert_eq!(f.radius(), 8);
        let mut flat = vec![0.75f32; 63];
        f.apply(&mut flat);
        assert!(flat.iter().all(|v| (v - 0.75).abs() < 1e-6), "{flat:?}");
        // A point in the middle spreads symmetrically and keeps its mass (far from the edges).
        let mut f = GaussianFilter::new(1.0, 21, 21);
        let mut point = vec![0.0f32; 441];
        point[10 * 21 + 10] = 1.0;
        f.apply(&mut point);
        let total: f32 = point.iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        assert!((point[10 * 21 + 9] - point[10 * 21 + 11]).abs() < 1e-7);
        assert!((point[9 * 21 + 10] - point[10 * 21 + 9]).abs() < 1e-7);
        assert!(point[10 * 21 + 10] > point[10 * 21 + 11]);
    }
}
