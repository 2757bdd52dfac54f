//! `eval` runs a bundle on an MVTec-layout test set as the daemon would and writes the metrics
//! and the heatmap sheet; `score-candidates` compares tile post-processings on the same set:
//! here the brightness bundle on concrete frames with dark patches.

mod common;

use common::{patch, Scratch};
use image::{GrayImage, Luma};
use inspect_core::detector::Tiling;
use inspect_core::fixtures::concrete_frame;
use inspect_train::decisions::Estimator;
use inspect_train::eval::{evaluate, Evaluation};
use inspect_train::metrics::{area_up_to, pixel_auroc};
use inspect_train::score_choice::{
    compare_candidates, default_candidates, Calibration, ComparisonJob, HeldOutFold, PostProcessing,
};
use inspect_train::sweep::figure;

/// An MVTec-layout set of 200 x 150 concrete frames: 4 clean test frames and 5 with a dark
/// stain (masks in ground_truth/stain).
fn stain_dataset(root: &std::path::Path) {
    for sub in [
        "train/good",
        "test/good",
        "test/stain",
        "ground_truth/stain",
    ] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    concrete_frame(200, 150, 1, &[])
        .save(root.join("train/good/0.png"))
        .unwrap();
    for i in 0..4u64 {
        concrete_frame(200, 150, 10 + i, &[])
            .save(root.join(format!("test/good/{i}.png")))
            .unwrap();
    }
    for i in 0..5u32 {
        let b = patch(20 + 25 * i, 30 + 10 * i, 30 + 4 * i);
        concrete_frame(200, 150, 20 + i as u64, &[b])
            .save(root.join(format!("test/stain/{i}.png")))
            .unwrap();
        GrayImage::from_fn(200, 150, |x, y| {
            let inside = x >= b.x && x < b.x + b.width && y >= b.y && y < b.y + b.height;
            Luma([if inside { 255 } else { 0 }])
        })
        .save(root.join(format!("ground_truth/stain/{i}_mask.png")))
        .unwrap();
    }
}

#[test]
fn eval_writes_metrics_and_heatmaps_that_agree_with_the_dataset() {
    let dir = Scratch::new("eval");
    let bundle = common::bundle(&dir.0);
    let root = dir.path("data");
    stain_dataset(&root);
    let out = dir.path("eval");
    let evaluation = evaluate(&bundle, &root, &out, None, false).unwrap();
    let report = &evaluation.report;
    assert_eq!((report.images, report.good), (9, 4));
    assert!(report.pixel_auroc.unwrap() > 0.9, "{report:?}");
    assert!(report.aupro.unwrap() > 0.5, "{report:?}");
    assert_eq!(
        report.image_auroc,
        Some(1.0),
        "every stain outscores every clean frame"
    );
    assert_eq!(report.tile_recall, 1.0);
    assert_eq!(report.false_alarms_per_1000, 0.0);
    // 0 of 4: the exact interval reaches 1 - 0.025^(1/4) = 60% (no false alarm in 4 proves
    // little); the fixture's threshold is manual, so there is no target.
    let (lo, hi) = report.false_alarms_interval_per_1000;
    assert_eq!(lo, 0.0);
    assert!(
        (hi - 1000.0 * (1.0 - 0.025f64.powf(0.25))).abs() < 1e-3,
        "{hi}"
    );
    assert_eq!(report.target_false_alarms_per_1000, None);

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(json["images"], 9);
    let written = json["pixel_auroc"].as_f64().unwrap();
    assert!((written - report.pixel_auroc.unwrap()).abs() < 1e-12);
    let sheet = image::open(out.join("heatmaps.png")).unwrap();
    // 5 defect rows (8 asked, 5 exist) + 2 defect-free, of 192 px with 6 px gaps; 4 columns.
    assert_eq!(sheet.height(), 7 * (192 + 6) + 6);
    assert_eq!(sheet.width(), 4 * 192 + 5 * 6);
    // The curves: from (0, 0) to (1, 1), rising, and the drawn area is the metric.
    let curves = &evaluation.curves;
    for curve in [&curves.pixel_roc, &curves.image_roc, &curves.pro] {
        assert_eq!(curve.first(), Some(&(0.0, 0.0)));
        assert_eq!(curve.last(), Some(&(1.0, 1.0)));
        assert!(curve
            .windows(2)
            .all(|w| w[1].0 >= w[0].0 && w[1].1 >= w[0].1));
    }
    let image_area = area_up_to(&curves.image_roc, 1.0);
    assert!((image_area - 1.0).abs() < 1e-12);
    // The tile figures come from the same tile scores: the ROC's area, and read at 1% of 4
    // clean tiles (the manual threshold has no target) the highest clean score, which every
    // stain passes.
    assert_eq!(report.tile_auroc, Some(image_area));
    let at = &report.tile_at_target;
    assert_eq!(
        (at.good, at.defects, at.false_alarms, at.detected),
        (4, 5, 0, 5)
    );
    assert_eq!(json["tile_at_target"]["detected"], 5);
    let pixel_area = area_up_to(&curves.pixel_roc, 1.0);
    assert!(
        (pixel_area - report.pixel_auroc.unwrap()).abs() < 2e-3,
        "thinned pixel ROC area {pixel_area} vs {:?}",
        report.pixel_auroc
    );
    assert!((area_up_to(&curves.pro, 0.3) / 0.3 - report.aupro.unwrap()).abs() < 2e-3);
    for chart in ["roc.png", "pro.png"] {
        let png = image::open(out.join(chart)).unwrap().into_rgb8();
        assert_eq!(png.dimensions(), (640, 520), "{chart}");
        // Something beyond white, grey and black was drawn: the coloured curves.
        let coloured = png
            .pixels()
            .filter(|p| {
                let [r, g, b] = p.0;
                r.max(g).max(b) - r.min(g).min(b) > 60
            })
            .count();
        assert!(coloured > 200, "{chart}: {coloured} coloured pixels");
    }
    assert_eq!(evaluation.examples.len(), 7);
    // A resumed sweep reads the whole evaluation back instead of evaluating again, unless the
    // model was trained after it.
    let trained = dir.path("trained.ckpt");
    std::fs::write(&trained, b"before").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = evaluate(&bundle, &root, &out, None, false).unwrap();
    let kept = Evaluation::load_fresh(&trained, &out).expect("written after the checkpoint");
    assert_eq!(kept.report, again.report);
    assert_eq!(kept.curves, again.curves);
    assert_eq!(kept.side, again.side);
    assert_eq!(kept.examples.len(), again.examples.len());
    for (k, a) in kept.examples.iter().zip(&again.examples) {
        assert_eq!((&k.input, &k.mask, &k.map), (&a.input, &a.mask, &a.map));
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&trained, b"trained further").unwrap();
    assert!(Evaluation::load_fresh(&trained, &out).is_none());
    // `limit` keeps that many per class.
    let limited = evaluate(&bundle, &root, &dir.path("eval2"), Some(2), false).unwrap();
    assert_eq!(limited.report.images, 4);

    // The sweep figure: input, ground truth and one heatmap row per objective; one column per
    // defect example (5 exist, 4 asked); row names drawn in the left margin.
    let figure = figure(&["none", "boundary"], &[&evaluation, &evaluation], 4).unwrap();
    assert_eq!(
        figure.dimensions(),
        (130 + 4 * (160 + 4) + 4, 4 * (160 + 4) + 4)
    );
    let ink = (0..130)
        .flat_map(|x| (0..figure.height()).map(move |y| (x, y)))
        .filter(|&(x, y)| figure.get_pixel(x, y).0[0] < 100)
        .count();
    assert!(ink > 200, "row names missing: {ink} dark pixels");
    let first_input = figure.get_pixel(130 + 4 + 80, 4 + 80).0;
    assert_ne!(first_input, [255, 255, 255], "no picture in the first cell");
    // Sanity of the pixel metric on its own.
    assert_eq!(pixel_auroc(&[&[0.1, 0.9]], &[&[0, 1]]), Some(1.0));
}

#[test]
fn score_candidates_rank_post_processings_on_images_and_on_daemon_tiles() {
    let dir = Scratch::new("score-candidates");
    let bundle = common::bundle(&dir.0);
    let root = dir.path("data");
    stain_dataset(&root);
    let holdout = dir.path("holdout");
    std::fs::create_dir_all(&holdout).unwrap();
    for i in 0..12u64 {
        concrete_frame(200, 150, 100 + i, &[])
            .save(holdout.join(format!("{i}.png")))
            .unwrap();
    }
    let levels = inspect_core::bundle::Bundle::load(&bundle)
        .unwrap()
        .manifest
        .levels
        .len();
    let grid = default_candidates(levels);
    // Every comparison of this test: the bundle on the stain dataset at a 1% target.
    let compare = |calibration: Calibration,
                   tiling: Option<Tiling>,
                   candidates: Vec<PostProcessing>,
                   out: &str| {
        compare_candidates(ComparisonJob {
            bundle: &bundle,
            data: &root,
            calibration,
            rate: 0.01,
            limit: None,
            tiling,
            candidates,
            out: &dir.path(out),
        })
        .unwrap()
    };
    let out = dir.path("whole");
    let whole = compare(Calibration::HeldOut(&holdout), None, grid.clone(), "whole");
    // The bundle's own post-processing (all levels, no smoothing, the maximum) comes first and
    // is not repeated from the grid.
    assert_eq!(whole.results.len(), grid.len());
    assert_eq!(whole.results[0].label, "all levels / sigma 0 / max");
    assert_eq!((whole.good, whole.defects, whole.holdout), (4, 5, 12));
    let own = &whole.results[0];
    assert_eq!(
        own.tile_auroc,
        Some(1.0),
        "every stain outscores every clean frame"
    );
    assert_eq!(own.at_target.true_positive_rate(), 1.0);
    // 12 held-out tiles are too few for a 1% quantile: the tail fit sets the threshold.
    let (calibrated, estimator) = own.calibrated.unwrap();
    assert_eq!(estimator, Estimator::TailFit);
    assert_eq!(calibrated.good, 4);
    for file in [
        "candidates.md",
        "candidates.json",
        "tile_roc.png",
        "tile_roc_low.png",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let table = std::fs::read_to_string(out.join("candidates.md")).unwrap();
    assert_eq!(table.matches("\n| ").count(), grid.len() + 1, "{table}");
    // Every test tile's score, highest first: the stains (whose share of the frame is their
    // box's area) above the clean frames.
    let csv = std::fs::read_to_string(out.join("tile_scores.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 9, "{csv}");
    assert!(csv.starts_with("image,x,y,width,height,defect_share,all levels / sigma 0 / max,"));
    assert_eq!(rows[0].len(), 6 + grid.len(), "a column per candidate");
    let share = |r: &Vec<&str>| r[5].parse::<f32>().unwrap();
    let score = |r: &Vec<&str>| r[6].parse::<f32>().unwrap();
    assert!(
        rows.windows(2).all(|w| score(&w[0]) >= score(&w[1])),
        "{csv}"
    );
    assert!(
        rows[..5]
            .iter()
            .all(|r| share(r) > 0.02 && r[0].contains("stain")),
        "{csv}"
    );
    assert!(
        rows[5..]
            .iter()
            .all(|r| share(r) == 0.0 && r[0].contains("good")),
        "{csv}"
    );

    // Cut as the daemon cuts frames: 200 x 150 in tiles of 100 is 2 x 2 tiles per frame, and
    // a tile is a defect tile when its part of the mask holds stain pixels.
    let tiling = Tiling {
        tile_size: 100,
        overlap: 0,
    };
    let tiled = compare(Calibration::None, Some(tiling), Vec::new(), "tiled");
    assert_eq!(tiled.results.len(), 1);
    assert_eq!(tiled.good + tiled.defects, 9 * 4);
    assert!(
        tiled.defects >= 5 && tiled.defects < 5 * 4,
        "{} defect tiles",
        tiled.defects
    );
    assert!(tiled.results[0].calibrated.is_none());

    // Held-out whole frames with masks (an MVTec layout): every tile counts in its frame's
    // mean, only the 4 stain-free frames in the false-alarm sample.
    let labelled = compare(Calibration::HeldOut(&root), None, Vec::new(), "labelled");
    assert_eq!(labelled.holdout, 4);
    let (point, _) = labelled.results[0].calibrated.unwrap();
    assert_eq!(point.good, 4);
    // On the held-out frames themselves the threshold (their maximum: 4 tiles) lets none of
    // the stain-free ones through and finds all 5 stains: a choice that reads no test image.
    let held = labelled.results[0].held_out.unwrap();
    assert_eq!((held.good, held.false_alarms, held.defects), (4, 0, 5));
    assert_eq!(held.true_positive_rate(), 1.0);

    // Out of fold: one fold is the held-out set scored by its bundle, and folds pool their
    // defect-free tiles (each scored by its own bundle; here both folds' bundle is the same).
    let out_of_fold = |folds: &[HeldOutFold], out: &str| {
        compare(Calibration::OutOfFold(folds), None, Vec::new(), out)
    };
    let fold = |images: &std::path::Path| HeldOutFold {
        bundle: bundle.clone(),
        images: images.to_path_buf(),
    };
    let one = out_of_fold(&[fold(&root)], "one-fold");
    assert_eq!((one.holdout, one.folds), (4, 1));
    assert_eq!(one.results[0].calibrated, labelled.results[0].calibrated);
    let two = out_of_fold(&[fold(&root), fold(&holdout)], "two-folds");
    assert_eq!((two.holdout, two.folds), (4 + 12, 2));
    let pooled = two.results[0].calibrated.unwrap().0.threshold;
    let alone =
        |c: &inspect_train::score_choice::Comparison| c.results[0].calibrated.unwrap().0.threshold;
    assert_ne!(pooled, alone(&one), "the second fold's tiles count");
    // Each fold decided by the other's threshold: 4 + 12 defect-free tiles, the 5 stains of
    // the labelled fold; one fold alone has no other to be checked against.
    assert!(one.results[0].leave_one_fold_out.is_none());
    let crossed = two.results[0].leave_one_fold_out.unwrap();
    assert_eq!((crossed.good, crossed.defects), (16, 5));
    let table = std::fs::read_to_string(dir.path("two-folds").join("candidates.md")).unwrap();
    assert!(table.contains("16 held-out defect-free tiles for the calibrated threshold (out of fold: each of 2 folds"), "{table}");
}
