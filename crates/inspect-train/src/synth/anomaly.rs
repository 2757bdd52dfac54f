//! Synthetic anomalies (paper section 2.2): a defect cut from another dataset by its mask,
//! randomly scaled, rotated and flipped, pasted into a defect-free image with Poisson image
//! editing. The pasted mask `M` is returned with the image, and [`downsample_mask`] brings it
//! to each feature map (nearest sampling: the top-left pixel of each cell). Seeded: the same seed
//! gives the same image.

use image::{GrayImage, Luma, Rgb, RgbImage};

use super::poisson::{placement, seamless_clone, BlendError};
use inspect_core::random::SplitMix;

/// Pixels of context pasted around the defect. The Poisson blend takes the source's gradients
/// only inside its mask eroded three times (OpenCV's NORMAL_CLONE), so the paste mask is the
/// defect mask dilated by this much: a 3-pixel-wide crack survives the erosion whole.
pub const PASTE_MARGIN: u32 = 4;

/// Dilates a binary mask by a 3x3 square, `times` times.
fn dilate(mask: &GrayImage, times: u32) -> GrayImage {
    let mut m = mask.clone();
    for _ in 0..times {
        let prev = m.clone();
        let (w, h) = prev.dimensions();
        m = GrayImage::from_fn(w, h, |x, y| {
            let hit = (x.saturating_sub(1)..=(x + 1).min(w - 1)).any(|xx| {
                (y.saturating_sub(1)..=(y + 1).min(h - 1))
                    .any(|yy| prev.get_pixel(xx, yy).0[0] > 127)
            });
            Luma([if hit { 255 } else { 0 }])
        });
    }
    m
}

/// A defect to paste: its pixels and mask, cut to the mask's bounding box plus a margin.
#[derive(Clone, Debug, PartialEq)]
pub struct Defect {
    /// Pixels.
    pub image: RgbImage,
    /// Mask, 255 on the defect.
    pub mask: GrayImage,
}

/// Bounds of the random transform.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SynthConfig {
    /// Scale factor range applied to the defect.
    pub scale: (f32, f32),
    /// Rotation is uniform in `-max_rotation_deg ..= max_rotation_deg`.
    pub max_rotation_deg: f32,
    /// Flip horizontally with probability 1/2.
    pub flip: bool,
    /// Largest side of the transformed defect as a fraction of the target's shorter side;
    /// larger draws are scaled down to fit.
    pub max_extent: f32,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            scale: (0.5, 1.0),
            max_rotation_deg: 180.0,
            flip: true,
            max_extent: 0.5,
        }
    }
}

/// An augmented image and the mask of what was pasted (255 inside).
#[derive(Clone, Debug, PartialEq)]
pub struct Augmented {
    /// The blended image.
    pub image: RgbImage,
    /// The pasted mask `M`, full size.
    pub mask: GrayImage,
}

/// Errors of synthesis.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SynthError {
    /// The defect mask is empty.
    #[error("the defect mask has no pixel above 127")]
    EmptyMask,
    /// The transformed defect does not fit in the target.
    #[error("a {w}x{h} defect does not fit in a {tw}x{th} image")]
    TooLarge {
        /// Defect width.
        w: u32,
        /// Defect height.
        h: u32,
        /// Target width.
        tw: u32,
        /// Target height.
        th: u32,
    },
    /// Blending failed.
    #[error(transparent)]
    Blend(#[from] BlendError),
}

impl Defect {
    /// Cuts the defect of `image` under `mask` (> 127), with `margin` pixels of context (at
    /// least [`PASTE_MARGIN`] + 1, which the paste needs around the defect).
    pub fn cut(image: &RgbImage, mask: &GrayImage, margin: u32) -> Result<Defect, SynthError> {
        let margin = margin.max(PASTE_MARGIN + 1);
        let (w, h) = mask.dimensions();
        let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
        for (x, y, p) in mask.enumerate_pixels() {
            if p.0[0] > 127 {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
        if x0 == u32::MAX {
            return Err(SynthError::EmptyMask);
        }
        let (x0, y0) = (x0.saturating_sub(margin), y0.saturating_sub(margin));
        let (x1, y1) = ((x1 + margin).min(w), (y1 + margin).min(h));
        let crop = |x: u32, y: u32| (x0 + x, y0 + y);
        Ok(Defect {
            image: RgbImage::from_fn(x1 - x0, y1 - y0, |x, y| {
                let (sx, sy) = crop(x, y);
                *image.get_pixel(sx, sy)
            }),
            mask: GrayImage::from_fn(x1 - x0, y1 - y0, |x, y| {
                let (sx, sy) = crop(x, y);
                Luma([if mask.get_pixel(sx, sy).0[0] > 127 {
                    255
                } else {
                    0
                }])
            }),
        })
    }

    /// The part of the defect within a `side x side` window centred on its `index`-th defect
    /// pixel (row-major, taken modulo their count), cut again with `margin` pixels of context.
    pub fn window(&self, index: usize, side: u32, margin: u32) -> Result<Defect, SynthError> {
        let count = self.mask.pixels().filter(|p| p.0[0] > 127).count();
        let (cx, cy) = self
            .mask
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0[0] > 127)
            .nth(index % count.max(1))
            .map(|(x, y, _)| (x, y))
            .ok_or(SynthError::EmptyMask)?;
        let (x0, y0) = (cx.saturating_sub(side / 2), cy.saturating_sub(side / 2));
        let (x1, y1) = (x0 + side, y0 + side);
        let inner = GrayImage::from_fn(self.mask.width(), self.mask.height(), |x, y| {
            let keep = x >= x0 && x < x1 && y >= y0 && y < y1;
            Luma([if keep {
                self.mask.get_pixel(x, y).0[0]
            } else {
                0
            }])
        });
        Defect::cut(&self.image, &inner, margin)
    }

    /// The defect in grey (ITU-R BT.601 luma in all three channels), for grey targets: pasting
    /// colour gradients would tint them.
    pub fn grey(&self) -> Defect {
        let image = RgbImage::from_fn(self.image.width(), self.image.height(), |x, y| {
            let [r, g, b] = self.image.get_pixel(x, y).0;
            let l = (0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32).round() as u8;
            Rgb([l, l, l])
        });
        Defect {
            image,
            mask: self.mask.clone(),
        }
    }

    /// The defect scaled by `scale`, rotated by `degrees` about its centre and optionally flipped,
    /// on a canvas that holds it all (bilinear pixels, nearest mask).
    pub fn transformed(&self, scale: f32, degrees: f32, flip: bool) -> Defect {
        let (w, h) = (self.image.width() as f32, self.image.height() as f32);
        let (s, c) = degrees.to_radians().sin_cos();
        let (sw, sh) = (w * scale, h * scale);
        // The small slack keeps exact right angles from gaining a pixel to rounding.
        let out_w = (sw * c.abs() + sh * s.abs() - 1e-3).ceil().max(1.0) as u32;
        let out_h = (sw * s.abs() + sh * c.abs() - 1e-3).ceil().max(1.0) as u32;
        let (ocx, ocy) = (out_w as f32 / 2.0, out_h as f32 / 2.0);
        // Inverse map: output pixel centre -> source coordinates.
        let source_of = |x: u32, y: u32| {
            let (dx, dy) = (x as f32 + 0.5 - ocx, y as f32 + 0.5 - ocy);
            let (rx, ry) = ((c * dx + s * dy) / scale, (-s * dx + c * dy) / scale);
            let rx = if flip { -rx } else { rx };
            (rx + w / 2.0 - 0.5, ry + h / 2.0 - 0.5)
        };
        let inside = |x: f32, y: f32| x >= -0.5 && y >= -0.5 && x <= w - 0.5 && y <= h - 0.5;
        let mask = GrayImage::from_fn(out_w, out_h, |x, y| {
            let (sx, sy) = source_of(x, y);
            if !inside(sx, sy) {
                return Luma([0]);
            }
            let (nx, ny) = (
                sx.round().clamp(0.0, w - 1.0),
                sy.round().clamp(0.0, h - 1.0),
            );
            *self.mask.get_pixel(nx as u32, ny as u32)
        });
        let image = RgbImage::from_fn(out_w, out_h, |x, y| {
            let (sx, sy) = source_of(x, y);
            let (sx, sy) = (sx.clamp(0.0, w - 1.0), sy.clamp(0.0, h - 1.0));
            let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
            let (x1, y1) = ((x0 + 1).min(w as u32 - 1), (y0 + 1).min(h as u32 - 1));
            let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
            let p = |x, y| self.image.get_pixel(x, y).0;
            Rgb(std::array::from_fn(|k| {
                let top = p(x0, y0)[k] as f32 * (1.0 - fx) + p(x1, y0)[k] as f32 * fx;
                let bottom = p(x0, y1)[k] as f32 * (1.0 - fx) + p(x1, y1)[k] as f32 * fx;
                (top * (1.0 - fy) + bottom * fy).round() as u8
            }))
        });
        Defect { image, mask }
    }
}

/// Whether every pixel of `image` has equal channels.
fn is_grey(image: &RgbImage) -> bool {
    image.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2])
}

/// Pastes `defect`, randomly transformed within `config`, at a random place of `target`. A grey
/// target gets a grey defect.
pub fn synthesize(
    target: &RgbImage,
    defect: &Defect,
    config: &SynthConfig,
    seed: u64,
) -> Result<Augmented, SynthError> {
    let mut rng = SplitMix::new(seed);
    let scale = config.scale.0 + rng.unit() * (config.scale.1 - config.scale.0);
    let degrees = (rng.unit() * 2.0 - 1.0) * config.max_rotation_deg;
    let flip = config.flip && rng.unit() < 0.5;
    let grey;
    let defect = if is_grey(target) {
        grey = defect.grey();
        &grey
    } else {
        defect
    };
    let mut t = defect.transformed(scale, degrees, flip);
    let limit = config.max_extent * target.width().min(target.height()) as f32;
    let side = t.mask.width().max(t.mask.height()) as f32;
    if side > limit {
        t = defect.transformed(scale * limit / side, degrees, flip);
    }
    let (w, h) = t.mask.dimensions();
    let (tw, th) = target.dimensions();
    // The blend needs the box plus a 1-pixel frame inside the target.
    if w + 2 > tw || h + 2 > th {
        return Err(SynthError::TooLarge { w, h, tw, th });
    }
    let x = 1 + w / 2 + (rng.unit() * (tw - w - 2 + 1) as f32) as u32;
    let y = 1 + h / 2 + (rng.unit() * (th - h - 2 + 1) as f32) as u32;
    let (x, y) = (x.min(tw - 1 - (w - w / 2)), y.min(th - 1 - (h - h / 2)));
    let paste = dilate(&t.mask, PASTE_MARGIN);
    let center = (x as i64, y as i64);
    let place = placement(&paste, center, target.dimensions())?.ok_or(SynthError::EmptyMask)?;
    let image = seamless_clone(&t.image, target, &paste, center)?;
    // M is the defect itself, at the offset where the paste landed.
    let mut mask = GrayImage::new(tw, th);
    let b = place.source;
    for (px, py, p) in t.mask.enumerate_pixels() {
        let inside = px >= b.x && py >= b.y && px < b.x + b.width && py < b.y + b.height;
        if p.0[0] > 127 && inside {
            mask.put_pixel(place.x + px - b.x, place.y + py - b.y, Luma([255]));
        }
    }
    Ok(Augmented { image, mask })
}

/// The mask at a feature map of `stride`: the top-left pixel of each `stride x stride` cell,
/// row-major, 1 for defect.
pub fn downsample_mask(mask: &GrayImage, stride: u32) -> Vec<u8> {
    let (w, h) = (
        mask.width().div_ceil(stride),
        mask.height().div_ceil(stride),
    );
    let mut out = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            out.push(u8::from(mask.get_pixel(x * stride, y * stride).0[0] > 127));
        }
    }
    out
}
