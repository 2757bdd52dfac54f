//! A contact sheet of augmentations, for people to look at what the trainer is fed: per sample
//! the defect-free image, the augmented image, and the augmented image with the outline of its
//! mask `M` in red.

use image::{imageops, GrayImage, Rgb, RgbImage};

use super::anomaly::Augmented;

/// Gap between pictures, in pixels.
const GAP: u32 = 6;
/// Background of the sheet.
const PAPER: Rgb<u8> = Rgb([255, 255, 255]);
/// The mask outline.
const OUTLINE: Rgb<u8> = Rgb([230, 30, 30]);

/// Whether `(x, y)` is a mask pixel with a 4-neighbour outside the mask.
fn on_outline(mask: &GrayImage, x: u32, y: u32) -> bool {
    let inside = |x: i64, y: i64| {
        x >= 0
            && y >= 0
            && (x as u32) < mask.width()
            && (y as u32) < mask.height()
            && mask.get_pixel(x as u32, y as u32).0[0] > 127
    };
    let (x, y) = (x as i64, y as i64);
    inside(x, y)
        && [(-1, 0), (1, 0), (0, -1), (0, 1)]
            .iter()
            .any(|(dx, dy)| !inside(x + dx, y + dy))
}

/// The augmented image with its mask's outline drawn in red.
pub fn outlined(aug: &Augmented) -> RgbImage {
    let mut out = aug.image.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        if on_outline(&aug.mask, x, y) {
            *p = OUTLINE;
        }
    }
    out
}

/// Lays out `samples` (defect-free image, its augmentation) in `columns` groups per row, each
/// picture scaled to `cell x cell`.
pub fn contact_sheet(samples: &[(RgbImage, Augmented)], columns: u32, cell: u32) -> RgbImage {
    let columns = columns.max(1);
    let rows = (samples.len() as u32).div_ceil(columns).max(1);
    let group = 3 * cell + 2 * GAP;
    let width = columns * group + (columns + 1) * 3 * GAP;
    let height = rows * cell + (rows + 1) * GAP;
    let mut sheet = RgbImage::from_pixel(width, height, PAPER);
    for (i, (original, aug)) in samples.iter().enumerate() {
        let (col, row) = (i as u32 % columns, i as u32 / columns);
        let x0 = 3 * GAP + col * (group + 3 * GAP);
        let y0 = GAP + row * (cell + GAP);
        let pictures = [original.clone(), aug.image.clone(), outlined(aug)];
        for (k, picture) in pictures.iter().enumerate() {
            let scaled = imageops::resize(picture, cell, cell, imageops::FilterType::Triangle);
            let x = x0 + k as u32 * (cell + GAP);
            imageops::replace(&mut sheet, &scaled, x as i64, y0 as i64);
        }
    }
    sheet
}
