//! Synthetic anomalies: defects cut by their masks, transformed, pasted, with the mask M.

use image::{GrayImage, Luma, Rgb, RgbImage};
use inspect_core::fixtures::concrete_frame;
use inspect_train::synth::anomaly::{
    downsample_mask, synthesize, Defect, SynthConfig, PASTE_MARGIN,
};

/// A 40x30 source with an L-shaped dark defect: a bar at rows 10..13, cols 8..30, and a leg at
/// cols 8..11, rows 10..24.
fn source() -> (RgbImage, GrayImage) {
    let defect = |x: u32, y: u32| {
        ((10..13).contains(&y) && (8..30).contains(&x))
            || ((8..11).contains(&x) && (10..24).contains(&y))
    };
    let image = RgbImage::from_fn(40, 30, |x, y| {
        if defect(x, y) {
            Rgb([20, 20, 20])
        } else {
            Rgb([150, 140, (x * 3) as u8])
        }
    });
    let mask = GrayImage::from_fn(40, 30, |x, y| Luma([if defect(x, y) { 200 } else { 0 }]));
    (image, mask)
}

fn count(mask: &GrayImage) -> usize {
    mask.pixels().filter(|p| p.0[0] > 127).count()
}

#[test]
fn cut_and_transform_keep_the_defect() {
    let (image, mask) = source();
    // A margin under the paste's needs is raised to PASTE_MARGIN + 1 = 5.
    let d = Defect::cut(&image, &mask, 2).unwrap();
    assert_eq!(PASTE_MARGIN + 1, 5);
    assert_eq!(d.image.dimensions(), (22 + 10, 14 + 10));
    assert_eq!(count(&d.mask), 22 * 3 + 3 * 11);
    assert!(
        d.mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255),
        "binarized"
    );
    assert_eq!(*d.image.get_pixel(5, 5), Rgb([20, 20, 20]));
    assert_eq!(*d.image.get_pixel(4, 5), Rgb([150, 140, 21]));

    let same = d.transformed(1.0, 0.0, false);
    assert_eq!(same, d, "the identity transform changes nothing");
    let quarter = d.transformed(1.0, 90.0, false);
    assert_eq!(quarter.mask.dimensions(), (24, 32));
    assert_eq!(count(&quarter.mask), count(&d.mask));
    let flipped = d.transformed(1.0, 0.0, true);
    for y in 0..24 {
        for x in 0..32 {
            assert_eq!(flipped.mask.get_pixel(x, y), d.mask.get_pixel(31 - x, y));
        }
    }
    let half = d.transformed(0.5, 0.0, false);
    assert_eq!(half.mask.dimensions(), (16, 12));
    assert!(Defect::cut(&image, &GrayImage::new(40, 30), 0).is_err());
}

#[test]
fn synthesis_is_seeded_and_returns_the_pasted_mask() {
    let (image, mask) = source();
    let defect = Defect::cut(&image, &mask, 3).unwrap();
    let target = concrete_frame(128, 128, 5, &[]);
    let config = SynthConfig::default();
    let a = synthesize(&target, &defect, &config, 42).unwrap();
    let again = synthesize(&target, &defect, &config, 42).unwrap();
    assert_eq!(a, again, "same seed, same result");
    let b = synthesize(&target, &defect, &config, 43).unwrap();
    assert_ne!(a.mask, b.mask, "another seed, another paste");

    for aug in [&a, &b] {
        assert_eq!(aug.mask.dimensions(), (128, 128));
        let pasted = count(&aug.mask);
        assert!(pasted > 10, "{pasted} pixels in M");
        // Inside M the image darkened (the defect is dark); far from M it is the target.
        let (mut dark, mut inside) = (0, 0);
        for (x, y, p) in aug.mask.enumerate_pixels() {
            if p.0[0] == 255 {
                inside += 1;
                let (new, old) = (aug.image.get_pixel(x, y).0, target.get_pixel(x, y).0);
                if (new[0] as i32) < old[0] as i32 - 30 {
                    dark += 1;
                }
            }
        }
        assert!(
            dark * 2 > inside,
            "{dark} of {inside} pasted pixels darkened"
        );
    }

    let tiny = RgbImage::new(10, 10);
    assert!(synthesize(
        &tiny,
        &defect,
        &SynthConfig {
            scale: (1.0, 1.0),
            // Allowed the whole side, the defect is shrunk to 10 px, still too big with the
            // blend's 1-pixel frame.
            max_extent: 1.0,
            ..config
        },
        1
    )
    .is_err());
}

#[test]
fn masks_are_downsampled_by_the_top_left_pixel_of_each_cell() {
    let mut mask = GrayImage::new(8, 8);
    mask.put_pixel(4, 0, Luma([255])); // top-left of cell (0, 1)
    mask.put_pixel(1, 5, Luma([255])); // inside cell (1, 0), not its top-left
    assert_eq!(downsample_mask(&mask, 4), vec![0, 1, 0, 0]);
    assert_eq!(downsample_mask(&mask, 8), vec![0]);
    assert_eq!(
        downsample_mask(&mask, 1)
            .iter()
            .map(|&v| v as usize)
            .sum::<usize>(),
        2
    );
}
