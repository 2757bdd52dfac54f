//! Poisson image editing (Perez, Gangnet and Blake 2003) with OpenCV's `NORMAL_CLONE` semantics.
//!
//! As `cv::seamlessClone(src, dst, mask, p, out, NORMAL_CLONE)`: the mask loses its 1-pixel
//! border; its bounding box `R` in the source is placed centred on `p` in the target; inside `R`
//! the guidance field is the source's gradient where the mask, eroded three times by a 3x3
//! square (the bounding box's surroundings counting as unset), is set, and the target's gradient elsewhere (forward differences, reflected at the
//! far edge). The Poisson equation `lap(u) = div(guidance)` is solved exactly on the interior of
//! `R` with the target's values on its 1-pixel frame as Dirichlet boundary, by a discrete sine
//! transform per channel (O(n log n), `rustfft`). Results are rounded to u8.

use std::sync::Arc;

use image::{GrayImage, RgbImage};
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use inspect_core::tiler::PixelBox;

/// Errors of blending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlendError {
    /// The mask and the source differ in size.
    #[error("mask is {mask_w}x{mask_h} but the source is {src_w}x{src_h}")]
    MaskSize {
        /// Mask width.
        mask_w: u32,
        /// Mask height.
        mask_h: u32,
        /// Source width.
        src_w: u32,
        /// Source height.
        src_h: u32,
    },
    /// The pasted box does not fit in the target at that centre.
    #[error("a {w}x{h} paste centred at ({cx}, {cy}) leaves the {tw}x{th} target")]
    OutOfBounds {
        /// Box width.
        w: u32,
        /// Box height.
        h: u32,
        /// Centre x.
        cx: i64,
        /// Centre y.
        cy: i64,
        /// Target width.
        tw: u32,
        /// Target height.
        th: u32,
    },
}

/// DST-I of every row of a `rows x n` matrix, in place, through an FFT of length `2(n + 1)`.
struct Dst {
    n: usize,
    fft: Arc<dyn Fft<f64>>,
    buf: Vec<Complex<f64>>,
}

impl Dst {
    fn new(planner: &mut FftPlanner<f64>, n: usize) -> Dst {
        Dst {
            n,
            fft: planner.plan_fft_forward(2 * (n + 1)),
            buf: vec![Complex::default(); 2 * (n + 1)],
        }
    }

    /// `X_k = sum_j x_j sin(pi (j + 1)(k + 1) / (n + 1))`.
    fn apply(&mut self, row: &mut [f64]) {
        let n = self.n;
        self.buf.fill(Complex::default());
        for (j, &v) in row.iter().enumerate() {
            self.buf[j + 1] = Complex::new(v, 0.0);
            self.buf[2 * (n + 1) - (j + 1)] = Complex::new(-v, 0.0);
        }
        self.fft.process(&mut self.buf);
        for (k, out) in row.iter_mut().enumerate() {
            *out = -self.buf[k + 1].im / 2.0;
        }
    }
}

fn transpose(src: &[f64], rows: usize, cols: usize, dst: &mut [f64]) {
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// Solves `lap(u) = f` on a `w x h` grid with `u` fixed on its 1-pixel frame (values of `u` on
/// entry); writes the interior of `u`.
fn solve_dirichlet(u: &mut [f64], f: &[f64], w: usize, h: usize, planner: &mut FftPlanner<f64>) {
    if w < 3 || h < 3 {
        return;
    }
    let (nx, ny) = (w - 2, h - 2);
    // Right-hand side on the interior, boundary neighbours moved over.
    let mut b = vec![0.0; nx * ny];
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let mut v = f[y * w + x];
            if x == 1 {
                v -= u[y * w];
            }
            if x == w - 2 {
                v -= u[y * w + w - 1];
            }
            if y == 1 {
                v -= u[x];
            }
            if y == h - 2 {
                v -= u[(h - 1) * w + x];
            }
            b[(y - 1) * nx + (x - 1)] = v;
        }
    }
    let mut dst_x = Dst::new(planner, nx);
    let mut dst_y = Dst::new(planner, ny);
    let mut t = vec![0.0; nx * ny];
    b.chunks_exact_mut(nx).for_each(|r| dst_x.apply(r));
    transpose(&b, ny, nx, &mut t);
    t.chunks_exact_mut(ny).for_each(|r| dst_y.apply(r));
    // Eigenvalues of the 5-point Laplacian with zero Dirichlet boundary.
    for (i, col) in t.chunks_exact_mut(ny).enumerate() {
        let lx = 2.0 * (std::f64::consts::PI * (i + 1) as f64 / (nx + 1) as f64).cos() - 2.0;
        for (j, v) in col.iter_mut().enumerate() {
            let ly = 2.0 * (std::f64::consts::PI * (j + 1) as f64 / (ny + 1) as f64).cos() - 2.0;
            *v /= lx + ly;
        }
    }
    // DST-I is its own inverse up to 2 / (n + 1).
    t.chunks_exact_mut(ny).for_each(|r| dst_y.apply(r));
    transpose(&t, nx, ny, &mut b);
    b.chunks_exact_mut(nx).for_each(|r| dst_x.apply(r));
    let scale = 4.0 / ((nx + 1) * (ny + 1)) as f64;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            u[y * w + x] = b[(y - 1) * nx + (x - 1)] * scale;
        }
    }
}

/// Erodes a binary mask by a 3x3 square. Outside counts as unset: OpenCV erodes the mask's
/// bounding-box view, whose surroundings in the full mask are zero.
fn erode(mask: &[bool], w: usize, h: usize) -> Vec<bool> {
    let at = |x: i64, y: i64| {
        if x < 0 || y < 0 || x >= w as i64 || y >= h as i64 {
            false
        } else {
            mask[y as usize * w + x as usize]
        }
    };
    let mut out = vec![false; w * h];
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            out[y as usize * w + x as usize] =
                (-1..=1).all(|dy| (-1..=1).all(|dx| at(x + dx, y + dy)));
        }
    }
    out
}

/// Forward difference with the far edge reflected (OpenCV `filter2D([0, -1, 1])`, BORDER_REFLECT_101).
fn forward(v: &[f64], i: usize, n: usize, stride: usize) -> f64 {
    let next = if i + 1 < n {
        i + 1
    } else {
        n.saturating_sub(2)
    };
    v[next * stride] - v[i * stride]
}

/// Backward difference with the near edge reflected (OpenCV `filter2D([-1, 1, 0])`).
fn backward(v: &[f64], i: usize, n: usize, stride: usize) -> f64 {
    let prev = if i > 0 { i - 1 } else { 1.min(n - 1) };
    v[i * stride] - v[prev * stride]
}

/// Where a paste lands: the mask's bounding box in the source and its top-left in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Bounding box of the mask in source pixels (its 1-pixel frame ignored, as OpenCV does).
    pub source: PixelBox,
    /// Left column of the box in the target.
    pub x: u32,
    /// Top row of the box in the target.
    pub y: u32,
}

/// Whether `(x, y)` is pasted: mask > 127 and not on the mask's 1-pixel frame.
fn masked(mask: &GrayImage, x: u32, y: u32) -> bool {
    let (w, h) = mask.dimensions();
    x > 0 && y > 0 && x + 1 < w && y + 1 < h && mask.get_pixel(x, y).0[0] > 127
}

/// Where `mask` pastes into a `target_size` image when centred at `center` (OpenCV: the box's
/// top-left is `center - size / 2`); `None` for an empty mask, an error if it leaves the target.
pub fn placement(
    mask: &GrayImage,
    center: (i64, i64),
    target_size: (u32, u32),
) -> Result<Option<Placement>, BlendError> {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, _) in mask.enumerate_pixels() {
        if masked(mask, x, y) {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
        }
    }
    if x0 == u32::MAX {
        return Ok(None);
    }
    let (w, h) = (x1 - x0, y1 - y0);
    let (dx, dy) = (center.0 - (w / 2) as i64, center.1 - (h / 2) as i64);
    let (tw, th) = target_size;
    if dx < 0 || dy < 0 || dx + w as i64 > tw as i64 || dy + h as i64 > th as i64 {
        return Err(BlendError::OutOfBounds {
            w,
            h,
            cx: center.0,
            cy: center.1,
            tw,
            th,
        });
    }
    Ok(Some(Placement {
        source: PixelBox {
            x: x0,
            y: y0,
            width: w,
            height: h,
        },
        x: dx as u32,
        y: dy as u32,
    }))
}

/// Pastes the masked part of `source` into `target` centred at `center`, blending seamlessly.
pub fn seamless_clone(
    source: &RgbImage,
    target: &RgbImage,
    mask: &GrayImage,
    center: (i64, i64),
) -> Result<RgbImage, BlendError> {
    if mask.dimensions() != source.dimensions() {
        return Err(BlendError::MaskSize {
            mask_w: mask.width(),
            mask_h: mask.height(),
            src_w: source.width(),
            src_h: source.height(),
        });
    }
    let Some(place) = placement(mask, center, target.dimensions())? else {
        return Ok(target.clone());
    };
    let (x0, y0) = (place.source.x, place.source.y);
    let (w, h) = (place.source.width as usize, place.source.height as usize);
    let (dx, dy) = (place.x, place.y);
    let mut m: Vec<bool> = Vec::with_capacity(w * h);
    for y in 0..h as u32 {
        for x in 0..w as u32 {
            m.push(masked(mask, x0 + x, y0 + y));
        }
    }
    let raw = m.clone();
    for _ in 0..3 {
        m = erode(&m, w, h);
    }
    let mut out = target.clone();
    let mut planner = FftPlanner::new();
    for c in 0..3 {
        // The source outside the (uneroded) mask is zero, as OpenCV copies it through the mask.
        let src: Vec<f64> = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as u32, (i / w) as u32);
                if raw[i] {
                    source.get_pixel(x0 + x, y0 + y).0[c] as f64
                } else {
                    0.0
                }
            })
            .collect();
        let dst: Vec<f64> = (0..w * h)
            .map(|i| target.get_pixel(dx + (i % w) as u32, dy + (i / w) as u32).0[c] as f64)
            .collect();
        let mut gx = vec![0.0; w * h];
        let mut gy = vec![0.0; w * h];
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let img = if m[i] { &src } else { &dst };
                gx[i] = forward(&img[y * w..], x, w, 1);
                gy[i] = forward(&img[x..], y, h, w);
            }
        }
        let mut div = vec![0.0; w * h];
        for y in 0..h {
            for x in 0..w {
                div[y * w + x] = backward(&gx[y * w..], x, w, 1) + backward(&gy[x..], y, h, w);
            }
        }
        let mut u = dst.clone();
        solve_dirichlet(&mut u, &div, w, h, &mut planner);
        for y in 0..h {
            for x in 0..w {
                let v = u[y * w + x].clamp(0.0, 255.0) as u8;
                out.get_pixel_mut(dx + x as u32, dy + y as u32).0[c] = v;
            }
        }
    }
    Ok(out)
}
