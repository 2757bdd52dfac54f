//! Helpers shared by the trainer's integration tests: scratch folders, the fixture bundle,
//! small defect sources and defect-free frames, gradient comparison, and the repository root
//! (where the reference scripts and the test data live).

#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

use inspect_core::fixtures::{brightness_bundle_in, concrete_frame};
pub use inspect_core::fixtures::{square as patch, Scratch};

/// The repository root: `tests/reference` (the reference scripts) and `tests/data` lie there.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/inspect-train lies two folders below the repository root")
}

/// Writes the brightness bundle into `dir/bundle`.
pub fn bundle(dir: &Path) -> PathBuf {
    brightness_bundle_in(dir).unwrap()
}

/// Writes a generic-layout defect source under `dir`: `images/` with three 120x90 colour
/// pictures of a dark reddish crack (a diagonal band 3 px wide, each at its own angle) and one
/// without, and `masks/` with their masks (the last one empty). Returns (images, masks).
pub fn defect_source(dir: &Path) -> (PathBuf, PathBuf) {
    use image::{GrayImage, Luma, Rgb, RgbImage};
    let (images, masks) = (dir.join("images"), dir.join("masks"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    for (i, slope) in [0.3f32, 0.8, -0.5, f32::NAN].iter().enumerate() {
        let crack = |x: u32, y: u32| {
            !slope.is_nan() && (10..110).contains(&x) && {
                let line = 45.0 + slope * (x as f32 - 60.0);
                (y as f32 - line).abs() < 1.5
            }
        };
        RgbImage::from_fn(120, 90, |x, y| {
            if crack(x, y) {
                Rgb([60, 20, 15])
            } else {
                Rgb([170, 160, 150 + (x % 7) as u8])
            }
        })
        .save(images.join(format!("crack{i}.png")))
        .unwrap();
        GrayImage::from_fn(120, 90, |x, y| Luma([if crack(x, y) { 255 } else { 0 }]))
            .save(masks.join(format!("crack{i}.png")))
            .unwrap();
    }
    (images, masks)
}

/// Writes `count` defect-free 160x120 concrete frames as PNG into `dir`.
pub fn normal_images(dir: &Path, count: u64) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..count)
        .map(|i| {
            let p = dir.join(format!("good{i:02}.png"));
            concrete_frame(160, 120, 100 + i, &[]).save(&p).unwrap();
            p
        })
        .collect()
}

/// Worst error of a flow's parameter gradients, per parameter tensor: max |got - want| over
/// max |want|, in the CPU flow's layout (per block W1, b1, W2, b2, g, offset). An f32 backward
/// cannot give every near-zero entry to 1e-5 of itself, but must give each tensor to 1e-5 of
/// its own scale.
pub fn gradient_error(got: &[f64], want: &[f64], channels: usize, condition: usize) -> f64 {
    assert_eq!(got.len(), want.len());
    let d = channels - channels / 2 + condition;
    let (h, o) = (2 * d, 2 * (channels / 2));
    let sizes = [h * d, h, o * h, o, channels, channels];
    let mut error = 0.0f64;
    let mut start = 0;
    for size in sizes.iter().cycle() {
        if start >= got.len() {
            break;
        }
        let (g, w) = (&got[start..start + size], &want[start..start + size]);
        let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
        let diff = g
            .iter()
            .zip(w)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        error = error.max(diff / scale);
        start += size;
    }
    assert_eq!(start, got.len(), "gradients of whole blocks");
    error
}
