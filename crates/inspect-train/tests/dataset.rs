//! Dataset layouts and the paper's crop protocol, on images the test makes.
#![cfg(feature = "train")]

mod common;

use std::path::{Path, PathBuf};

use common::Scratch;
use image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use inspect_train::dataset::crops::{prepare_crops, CropProtocol, Fold, Split};
use inspect_train::dataset::{load_image, load_mask, Dataset};

/// A 90x60 image whose mask holds a crack in cell (row 0, col 2) of a 3x3 grid when `cracked`.
fn write_pair(images: &Path, masks: &Path, name: &str, cracked: bool) {
    RgbImage::from_fn(90, 60, |x, y| Rgb([(x * 2) as u8, (y * 3) as u8, 90]))
        .save(images.join(format!("{name}.jpg")))
        .unwrap();
    let mut mask = GrayImage::new(90, 60);
    if cracked {
        for x in 62..80 {
            mask.put_pixel(x, 10, Luma([200]));
        }
    }
    mask.save(masks.join(format!("{name}.png"))).unwrap();
}

/// `images/` and `masks/` folders under `dir` holding a pair per `(name, cracked)`.
fn sources(dir: &Scratch, pairs: &[(&str, bool)]) -> (PathBuf, PathBuf) {
    let (images, masks) = (dir.path("images"), dir.path("masks"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    for &(name, cracked) in pairs {
        write_pair(&images, &masks, name, cracked);
    }
    (images, masks)
}

#[test]
fn crop_protocol_splits_by_image_and_by_crack() {
    let dir = Scratch::new("crops");
    let (images, masks) = sources(&dir, &[("a", true), ("b", false), ("c", true), ("d", true)]);
    let out = dir.path("out");
    let protocol = CropProtocol {
        grid: 3,
        train_images: 2,
        test_images: 2,
        split: Split::Blocks,
        held_out_fold: None,
    };
    let summary = prepare_crops(&images, &masks, &protocol, &out).unwrap();
    // a, b train: 9 + 9 crops, one cracked (a's r0c2) left out. c, d test: 2 cracked crops.
    assert_eq!((summary.training_images, summary.test_images), (2, 2));
    assert_eq!(summary.train_good, 17);
    assert_eq!(summary.train_dropped, 1);
    assert_eq!(summary.test_good, 16);
    assert_eq!(summary.test_crack, 2);

    let data = Dataset::mvtec(&out).unwrap();
    assert_eq!(data.train.len(), 17);
    assert!(!data.train.iter().any(|s| s.image.ends_with("a_r0c2.png")));
    let cracked: Vec<_> = data.test.iter().filter(|s| s.class == "crack").collect();
    assert_eq!(cracked.len(), 2);
    assert!(cracked[0].image.ends_with("c_r0c2.png"));
    let crop = load_image(&cracked[0].image).unwrap();
    assert_eq!(crop.dimensions(), (30, 20));
    let mask = load_mask(
        cracked[0].mask.as_ref().unwrap(),
        &cracked[0].image,
        crop.dimensions(),
    )
    .unwrap();
    // Crack pixels x 62..80 at y = 10 land at x 2..20 of the crop, binarized to 255.
    assert_eq!(mask.get_pixel(2, 10).0[0], 255);
    assert_eq!(mask.get_pixel(1, 10).0[0], 0);
    assert_eq!(mask.pixels().filter(|p| p.0[0] == 255).count(), 18);

    let too_many = CropProtocol {
        test_images: 3,
        ..protocol
    };
    let err = prepare_crops(&images, &masks, &too_many, &dir.path("x"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("4 images with masks") && err.contains("3 test"),
        "{err}"
    );
}

#[test]
fn a_held_out_fold_writes_its_training_images_whole_as_the_test_set() {
    let dir = Scratch::new("crops-fold");
    // Four training images (a, b, c, d) and one test image (e) that a fold never uses.
    let (images, masks) = sources(
        &dir,
        &[
            ("a", true),
            ("b", false),
            ("c", true),
            ("d", false),
            ("e", true),
        ],
    );
    let fold = |index| CropProtocol {
        grid: 3,
        train_images: 4,
        test_images: 1,
        split: Split::Blocks,
        held_out_fold: Some(Fold { index, count: 2 }),
    };
    // Fold 2 of 2 holds c and d out whole: c's cracked crop goes to test with its mask, not away.
    let out = dir.path("fold-2");
    let summary = prepare_crops(&images, &masks, &fold(1), &out).unwrap();
    assert_eq!((summary.train_good, summary.train_dropped), (17, 1));
    assert_eq!((summary.test_good, summary.test_crack), (17, 1));
    assert_eq!((summary.training_images, summary.test_images), (2, 2));
    let data = Dataset::mvtec(&out).unwrap();
    let named = |prefix: &str, samples: &[inspect_train::dataset::Sample]| {
        samples
            .iter()
            .filter(|s| {
                s.image
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(prefix)
            })
            .count()
    };
    assert_eq!((named("a_", &data.train), named("b_", &data.train)), (8, 9));
    assert_eq!((named("c_", &data.test), named("d_", &data.test)), (9, 9));
    assert_eq!(named("e_", &data.train) + named("e_", &data.test), 0);
    assert!(data
        .test
        .iter()
        .any(|s| s.class == "crack" && s.mask.is_some()));

    // Fold 1 of 2: the other block.
    let out = dir.path("fold-1");
    prepare_crops(&images, &masks, &fold(0), &out).unwrap();
    let data = Dataset::mvtec(&out).unwrap();
    assert_eq!((named("c_", &data.train), named("a_", &data.test)), (8, 9));

    let err = prepare_crops(
        &images,
        &masks,
        &CropProtocol {
            held_out_fold: Some(Fold { index: 0, count: 5 }),
            ..fold(0)
        },
        &dir.path("x"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("fold 1 of 5") && err.contains("4 training images"),
        "{err}"
    );
}

/// The stems of the images whose crops lie in `dir` (a folder of an MVTec layout).
fn stems_in(dir: &Path) -> Vec<String> {
    let mut stems: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.split('_').next().unwrap().to_owned()
        })
        .collect();
    stems.sort();
    stems.dedup();
    stems
}

#[test]
fn an_interleaved_split_deals_images_in_turn_and_so_do_its_folds() {
    let dir = Scratch::new("crops-interleaved");
    // Two "series" in name order, a..d then e..h; every image cracked in one crop.
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let (images, masks) = sources(&dir, &names.map(|name| (name, true)));
    let protocol = CropProtocol {
        grid: 3,
        train_images: 4,
        test_images: 4,
        split: Split::Interleaved,
        held_out_fold: None,
    };
    let out = dir.path("split");
    let summary = prepare_crops(&images, &masks, &protocol, &out).unwrap();
    assert_eq!((summary.training_images, summary.test_images), (4, 4));
    assert_eq!(stems_in(&out.join("train/good")), ["a", "c", "e", "g"]);
    assert_eq!(stems_in(&out.join("test/good")), ["b", "d", "f", "h"]);
    assert_eq!(stems_in(&out.join("test/crack")), ["b", "d", "f", "h"]);

    // Uneven counts: 6 training and 2 test images of 8 are still spread, one test image per
    // half of the names.
    let uneven = CropProtocol {
        train_images: 6,
        test_images: 2,
        ..protocol
    };
    let out = dir.path("uneven");
    prepare_crops(&images, &masks, &uneven, &out).unwrap();
    let tested = stems_in(&out.join("test/good"));
    assert_eq!(tested.len(), 2);
    assert!(
        tested[0].as_str() <= "d" && tested[1].as_str() > "d",
        "{tested:?}"
    );

    // Fold 2 of 2 of the training images a, c, e, g holds c and g: both series, whole, with
    // their cracked crops; the test images are not written.
    let out = dir.path("fold-2");
    let summary = prepare_crops(
        &images,
        &masks,
        &CropProtocol {
            held_out_fold: Some(Fold { index: 1, count: 2 }),
            ..protocol
        },
        &out,
    )
    .unwrap();
    assert_eq!((summary.training_images, summary.test_images), (2, 2));
    assert_eq!(stems_in(&out.join("train/good")), ["a", "e"]);
    assert_eq!(stems_in(&out.join("test/good")), ["c", "g"]);
    assert_eq!(stems_in(&out.join("test/crack")), ["c", "g"]);
}

#[test]
fn layouts_report_missing_and_misfit_masks_by_name() {
    let dir = Scratch::new("layouts");
    let root = dir.path("mvtec");
    for d in ["train/good", "test/good", "test/hole", "ground_truth/hole"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // Grey, RGB and RGBA inputs are all read as RGB.
    GrayImage::from_pixel(8, 6, Luma([77]))
        .save(root.join("train/good/g.png"))
        .unwrap();
    RgbaImage::from_pixel(8, 6, Rgba([1, 2, 3, 128]))
        .save(root.join("test/good/t.png"))
        .unwrap();
    RgbImage::new(8, 6)
        .save(root.join("test/hole/h1.png"))
        .unwrap();
    let err = Dataset::mvtec(&root).unwrap_err().to_string();
    assert!(
        err.contains("h1.png") && err.contains("h1_mask.png"),
        "{err}"
    );

    GrayImage::new(5, 5)
        .save(root.join("ground_truth/hole/h1_mask.png"))
        .unwrap();
    let data = Dataset::mvtec(&root).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (1, 2));
    assert_eq!(
        load_image(&data.train[0].image).unwrap().get_pixel(0, 0).0,
        [77, 77, 77]
    );
    let hole = data.test.iter().find(|s| s.class == "hole").unwrap();
    let err = load_mask(hole.mask.as_ref().unwrap(), &hole.image, (8, 6))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("h1_mask.png is 5x5") && err.contains("8x6"),
        "{err}"
    );

    let (normal, defects, masks) = (dir.path("n"), dir.path("d"), dir.path("m"));
    for d in [&normal, &defects, &masks] {
        std::fs::create_dir_all(d).unwrap();
    }
    RgbImage::new(4, 4)
        .save(defects.join("crack7.jpg"))
        .unwrap();
    let err = Dataset::generic(&normal, &defects, &masks)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("crack7.jpg") && err.contains("crack7.png"),
        "{err}"
    );
    assert!(Dataset::mvtec(&normal)
        .unwrap_err()
        .to_string()
        .contains("train/good"));
}
