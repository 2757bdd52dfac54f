//! The `[synthesis]` config, the defect bank cut from a source dataset, seeded augmentation of
//! training images and the contact sheet, on images the test makes.

mod common;

use std::path::Path;

use common::{defect_source, normal_images, Scratch};
use image::{GrayImage, Luma, Rgb, RgbImage};
use inspect_core::tiler::resize_rgb;
use inspect_train::dataset::load_image;
use inspect_train::synth::bank::{file_hash, Synthesizer};
use inspect_train::synth::config::SynthesisSettings;
use inspect_train::synth::sheet::contact_sheet;

fn parse(text: &str) -> Result<SynthesisSettings, String> {
    SynthesisSettings::parse(text, Path::new("cfg/train.toml")).map_err(|e| e.to_string())
}

const GOOD: &str = r#"
[synthesis]
defects = { images = "defects/images", masks = "defects/masks" }
window = 64
scale = [0.5, 1.5]
max_rotation_deg = 45
augmentations_per_image = 2
seed = 7

[training]   # other tables belong to the trainer, not to this parser
epochs = 3
"#;

#[test]
fn settings_are_validated_with_the_key_and_range_in_the_message() {
    let s = parse(GOOD).unwrap();
    assert_eq!(
        s.defects.images.as_deref(),
        Some(Path::new("cfg/defects/images")),
        "relative to the config file"
    );
    assert_eq!(
        (s.window, s.margin, s.flip),
        (64, 8, true),
        "defaults filled"
    );
    assert_eq!(s.transform().scale, (0.5, 1.5));

    let cases = [
        (
            GOOD.replace("window = 64", "window = 8"),
            "`synthesis.window` = 8",
            "16 to 4096",
        ),
        (
            GOOD.replace("[0.5, 1.5]", "[1.5, 0.5]"),
            "`synthesis.scale`",
            "low <= high",
        ),
        (
            GOOD.replace("[0.5, 1.5]", "[0.5, 9.0]"),
            "`synthesis.scale[1]` = 9",
            "0.1 to 4",
        ),
        (
            GOOD.replace("max_rotation_deg = 45", "max_rotation_deg = 270"),
            "`synthesis.max_rotation_deg` = 270",
            "0 to 180",
        ),
        (
            GOOD.replace("augmentations_per_image = 2", "augmentations_per_image = 0"),
            "`synthesis.augmentations_per_image` = 0",
            "1 to 64",
        ),
        (
            GOOD.replace("window = 64", "window = 64\nmargin = 2"),
            "`synthesis.margin` = 2",
            "5 to 64",
        ),
        (
            GOOD.replace("masks = \"defects/masks\"", "mvtec = \"tiles\""),
            "`synthesis.defects`",
            "either `images` and `masks`",
        ),
        (
            GOOD.replace("seed = 7", "seed = 7\nflip_vertically = true"),
            "flip_vertically",
            "cfg/train.toml",
        ),
        (
            GOOD.replace("max_rotation_deg = 45", "max_rotation_deg = nan"),
            "`synthesis.max_rotation_deg` = NaN",
            "0 to 180",
        ),
        (
            "[training]\nepochs = 3\n".to_string(),
            "no [synthesis] table",
            "cfg/train.toml",
        ),
    ];
    for (text, key, expected) in cases {
        let message = parse(&text).unwrap_err();
        assert!(
            message.contains(key) && message.contains(expected),
            "{message:?} should name {key:?} and {expected:?}"
        );
    }
}

fn settings(dir: &Path, extra: &str) -> SynthesisSettings {
    let text = format!(
        "[synthesis]\ndefects = {{ images = \"defects/images\", masks = \"defects/masks\" }}\n{extra}"
    );
    let path = dir.join("train.toml");
    std::fs::write(&path, text).unwrap();
    SynthesisSettings::load(&path).unwrap()
}

#[test]
fn the_bank_cuts_every_defect_and_augmentations_are_seeded() {
    let dir = Scratch::new("synth-bank");
    defect_source(&dir.path("defects"));
    let synth = Synthesizer::new(settings(&dir.0, "window = 40\nseed = 3")).unwrap();
    assert_eq!(synth.bank().len(), 3, "three cracks");
    assert_eq!(synth.bank().skipped(), 1, "the empty mask is skipped");

    let good = normal_images(&dir.path("good"), 2);
    let target = resize_rgb(&load_image(&good[0]).unwrap(), 128, 128);
    let hash = file_hash(&good[0]).unwrap();
    let (s0, s1) = (synth.seed_for(&hash, 0), synth.seed_for(&hash, 1));
    assert_ne!(s0, s1);
    let a = synth.augment(&target, s0).unwrap();
    assert_eq!(
        a,
        synth.augment(&target, s0).unwrap(),
        "same seed, same result"
    );
    assert_ne!(a.augmented, synth.augment(&target, s1).unwrap().augmented);

    // A window of 40 source pixels, scaled at most 1.0 (the default): M spans at most the
    // window's diagonal.
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in a.augmented.mask.enumerate_pixels() {
        if p.0[0] == 255 {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    assert!(x0 <= x1, "M is not empty");
    assert!(
        x1 - x0 <= 58 && y1 - y0 <= 58,
        "M spans {}x{}",
        x1 - x0,
        y1 - y0
    );
    // The crack is dark: pasted pixels are darker than the target there.
    let darker = a
        .augmented
        .mask
        .enumerate_pixels()
        .filter(|(_, _, p)| p.0[0] == 255)
        .filter(|(x, y, _)| {
            a.augmented.image.get_pixel(*x, *y).0[1] + 40 < target.get_pixel(*x, *y).0[1]
        })
        .count();
    let inside = a.augmented.mask.pixels().filter(|p| p.0[0] == 255).count();
    assert!(darker * 2 > inside, "{darker} of {inside} darker");

    // The fingerprint follows what changes the output.
    let other = Synthesizer::new(settings(&dir.0, "window = 40\nseed = 4")).unwrap();
    assert_ne!(synth.fingerprint(), other.fingerprint());
    let again = Synthesizer::new(settings(&dir.0, "window = 40\nseed = 3")).unwrap();
    assert_eq!(synth.fingerprint(), again.fingerprint());
}

#[test]
fn grey_targets_get_grey_defects_and_large_defects_are_shrunk() {
    let dir = Scratch::new("synth-grey");
    defect_source(&dir.path("defects"));
    // Whole cracks (100 px long) into a 96 px image, at most 0.3 of its side.
    let synth = Synthesizer::new(settings(
        &dir.0,
        "window = 0\nmax_extent = 0.3\nscale = [1.0, 1.0]\nmax_rotation_deg = 0",
    ))
    .unwrap();
    let grey = RgbImage::from_fn(96, 96, |x, y| {
        let v = 120 + ((x * 7 + y * 3) % 17) as u8;
        Rgb([v, v, v])
    });
    for seed in 0..6 {
        let a = synth.augment(&grey, seed).unwrap().augmented;
        assert!(
            a.image
                .pixels()
                .all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]),
            "seed {seed}: a colour defect tinted a grey image"
        );
        let cols: Vec<u32> = a
            .mask
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0[0] == 255)
            .map(|(x, _, _)| x)
            .collect();
        let span = cols.iter().max().unwrap() - cols.iter().min().unwrap() + 1;
        // 0.3 * 96 = 28.8 px for the whole box, margin included.
        assert!(span <= 29, "seed {seed}: M spans {span} columns");
    }
}

#[test]
fn an_mvtec_source_is_filtered_by_class() {
    let dir = Scratch::new("synth-mvtec");
    let root = dir.path("tiles");
    normal_images(&root.join("train/good"), 1);
    for (class, count) in [("crack", 2), ("blowhole", 1)] {
        std::fs::create_dir_all(root.join("test").join(class)).unwrap();
        std::fs::create_dir_all(root.join("ground_truth").join(class)).unwrap();
        for i in 0..count {
            RgbImage::from_pixel(50, 40, Rgb([100, 100, 100]))
                .save(root.join(format!("test/{class}/{i}.png")))
                .unwrap();
            GrayImage::from_fn(50, 40, |x, y| {
                Luma([if (20..30).contains(&x) && y == 20 {
                    255
                } else {
                    0
                }])
            })
            .save(root.join(format!("ground_truth/{class}/{i}_mask.png")))
            .unwrap();
        }
    }
    let write = |classes: &str| {
        let path = dir.path("mvtec.toml");
        std::fs::write(
            &path,
            format!("[synthesis]\ndefects = {{ mvtec = \"tiles\"{classes} }}\nwindow = 0\n"),
        )
        .unwrap();
        Synthesizer::new(SynthesisSettings::load(&path).unwrap()).unwrap()
    };
    assert_eq!(write("").bank().len(), 3);
    assert_eq!(write(", classes = [\"crack\"]").bank().len(), 2);
    let path = dir.path("mvtec.toml");
    std::fs::write(
        &path,
        "[synthesis]\ndefects = { mvtec = \"tiles\", classes = [\"fray\"] }\n",
    )
    .unwrap();
    let err = Synthesizer::new(SynthesisSettings::load(&path).unwrap()).unwrap_err();
    assert!(err.to_string().contains("no defect"), "{err}");
}

#[test]
fn the_contact_sheet_shows_image_augmentation_and_outlined_mask() {
    let dir = Scratch::new("synth-sheet");
    defect_source(&dir.path("defects"));
    let synth = Synthesizer::new(settings(&dir.0, "window = 48")).unwrap();
    let good = normal_images(&dir.path("good"), 3);
    let samples: Vec<_> = good
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let image = resize_rgb(&load_image(p).unwrap(), 96, 96);
            let aug = synth.augment(&image, i as u64).unwrap().augmented;
            (image, aug)
        })
        .collect();
    let sheet = contact_sheet(&samples, 2, 64);
    // Two groups of three 64 px pictures per row, two rows, 6 px gaps.
    assert_eq!(
        sheet.dimensions(),
        (2 * (3 * 64 + 12) + 3 * 18, 2 * 64 + 18)
    );
    let red = sheet
        .pixels()
        .filter(|p| p.0[0] > 150 && p.0[1] < 90 && p.0[2] < 90)
        .count();
    assert!(red > 20, "{red} red outline pixels");
    // The first picture is the defect-free image, scaled.
    let first =
        image::imageops::resize(&samples[0].0, 64, 64, image::imageops::FilterType::Triangle);
    assert_eq!(sheet.get_pixel(18 + 10, 6 + 10), first.get_pixel(10, 10));
}
