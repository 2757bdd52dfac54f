//! Poisson image editing against OpenCV's `seamlessClone(..., NORMAL_CLONE)` (PyPI
//! `opencv-python-headless`, tests/reference/opencv_blend.py), on images the test makes.

mod common;

use std::process::Command;

use common::Scratch;
use image::{GrayImage, Luma, Rgb, RgbImage};
use inspect_core::random::SplitMix;
use inspect_train::synth::poisson::seamless_clone;

/// A shaded, grainy surface.
fn surface(w: u32, h: u32, seed: u64, base: f32) -> RgbImage {
    let mut rng = SplitMix::new(seed);
    RgbImage::from_fn(w, h, |x, y| {
        let shade = 30.0 * ((x as f32 / 41.0).sin() + (y as f32 / 57.0).cos());
        let mut v = |k: f32| (base + k + shade + (rng.unit() - 0.5) * 30.0).clamp(0.0, 255.0) as u8;
        Rgb([v(0.0), v(10.0), v(-10.0)])
    })
}

/// A crack-like source: a dark wandering line on a bright surface, and its dilated mask.
fn crack(w: u32, h: u32) -> (RgbImage, GrayImage) {
    let mut src = surface(w, h, 9, 170.0);
    let mut mask = GrayImage::new(w, h);
    for x in 10..w - 10 {
        let y = (h as f32 / 2.0 + 12.0 * (x as f32 / 9.0).sin()) as i64;
        for dy in -5..=5i64 {
            let yy = (y + dy) as u32;
            mask.put_pixel(x, yy, Luma([255]));
            if dy.abs() <= 1 {
                src.put_pixel(x, yy, Rgb([35, 30, 28]));
            }
        }
    }
    (src, mask)
}

fn psnr_and_max(a: &RgbImage, b: &RgbImage, region: &[(u32, u32)]) -> (f64, u8) {
    let mut se = 0.0;
    let mut max = 0u8;
    for &(x, y) in region {
        for c in 0..3 {
            let d = a.get_pixel(x, y).0[c].abs_diff(b.get_pixel(x, y).0[c]);
            max = max.max(d);
            se += (d as f64).powi(2);
        }
    }
    let mse = se / (3 * region.len()) as f64;
    let psnr = if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64.powi(2) / mse).log10()
    };
    (psnr, max)
}

#[test]
fn matches_opencv_normal_clone() {
    let dir = Scratch::new("poisson");
    for (side, at) in [(256u32, (128i64, 120i64)), (512, (300, 200))] {
        let target = surface(side, side, 1, 110.0);
        let (src, mask) = crack(side / 2, side / 4);
        let paths: Vec<_> = ["t.png", "s.png", "m.png", "cv.png"]
            .iter()
            .map(|n| dir.path(&format!("{side}-{n}")))
            .collect();
        target.save(&paths[0]).unwrap();
        src.save(&paths[1]).unwrap();
        mask.save(&paths[2]).unwrap();
        let script = common::repo_root().join("tests/reference/opencv_blend.py");
        let status = Command::new("python3")
            .arg(script)
            .args(&paths[..3])
            .arg(at.0.to_string())
            .arg(at.1.to_string())
            .arg(&paths[3])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "OpenCV reference failed (run tests/setup.sh)"
        );
        let reference = image::open(&paths[3]).unwrap().into_rgb8();
        let ours = seamless_clone(&src, &target, &mask, at).unwrap();
        let changed: Vec<(u32, u32)> = (0..side)
            .flat_map(|y| (0..side).map(move |x| (x, y)))
            .filter(|&(x, y)| reference.get_pixel(x, y) != target.get_pixel(x, y))
            .collect();
        assert!(changed.len() > 1000, "the paste must change the target");
        let (psnr, max) = psnr_and_max(&ours, &reference, &changed);
        let (_, max_all) = psnr_and_max(&ours, &reference, &[(0, 0), (side - 1, side - 1)]);
        println!(
            "{side}x{side}: {} pixels pasted, PSNR {psnr:.1} dB vs OpenCV, max |diff| {max}",
            changed.len()
        );
        assert!(max <= 1 && psnr > 50.0, "{side}: PSNR {psnr}, max {max}");
        assert_eq!(max_all, 0, "outside the paste the target is untouched");
    }
}

#[test]
fn a_source_that_only_differs_by_an_offset_leaves_the_target_unchanged() {
    // Same gradients as the target: the guidance field is the target's own, so the Poisson
    // solution is the target itself, whatever the constant offset of the source.
    let target = surface(120, 100, 3, 100.0);
    // Clip first so the shifted copy cannot saturate (saturation would change gradients).
    let bright = RgbImage::from_fn(120, 100, |x, y| {
        Rgb(target.get_pixel(x, y).0.map(|v| v.min(210)))
    });
    let shifted = RgbImage::from_fn(120, 100, |x, y| {
        Rgb(bright.get_pixel(x, y).0.map(|v| v + 40))
    });
    let mask = GrayImage::from_fn(120, 100, |x, y| {
        Luma([if (20..100).contains(&x) && (20..80).contains(&y) {
            255
        } else {
            0
        }])
    });
    let out = seamless_clone(&shifted, &bright, &mask, (60, 50)).unwrap();
    let worst = out
        .pixels()
        .zip(bright.pixels())
        .flat_map(|(a, b)| (0..3).map(move |c| a.0[c].abs_diff(b.0[c])))
        .max()
        .unwrap();
    assert!(worst <= 1, "worst {worst}");
    let err = seamless_clone(&shifted, &bright, &mask, (5, 5)).unwrap_err();
    assert!(
        err.to_string().contains("leaves the 120x100 target"),
        "{err}"
    );
}
