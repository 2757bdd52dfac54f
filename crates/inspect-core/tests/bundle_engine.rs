//! Bundles written with the ONNX writer, loaded and verified, then run by the engine and the
//! scorer, against values computed by hand; the detector's frame and image paths against each
//! other.

use inspect_core::bundle::{sha256_hex, write_bundle, Bundle, BundleError, MANIFEST_FILE};
use inspect_core::detector::{Detector, Tiling};
use inspect_core::engine::{Engine, ExtractorPrecision, LevelMaps, MAX_HEAD_PLANS};
use inspect_core::fixtures::Scratch;
use inspect_core::fixtures::{
    brightness_extractor, brightness_head, brightness_manifest, concrete_frame,
    write_brightness_bundle, BrightnessModel,
};
use inspect_core::scorer::Scorer;
use inspect_core::tiler::PixelBox;

const HALF_LN_2PI: f32 = 0.918_938_5;

#[test]
fn engine_computes_the_known_brightness_likelihood() {
    let dir = Scratch::new("engine");
    let model = BrightnessModel::default();
    write_brightness_bundle(&dir.0, &model).unwrap();
    let bundle = Bundle::load(&dir.0).unwrap();
    let manifest_bytes = std::fs::read(dir.path(MANIFEST_FILE)).unwrap();
    assert_eq!(bundle.model_id, sha256_hex(&manifest_bytes)[..12]);
    let manifest = bundle.manifest.clone();
    let mut engine = Engine::new(bundle, ExtractorPrecision::F32).unwrap();

    // Tile 0: grey exactly at the mean. Tile 1: one sigma brighter. Tile 2: left half at the mean,
    // right half 3 sigma darker (cells never straddle the edge at x = 64).
    let n = 128 * 128;
    let mut input = vec![0.0f32; 3 * 3 * n];
    for (t, tile) in input.chunks_exact_mut(3 * n).enumerate() {
        for c in 0..3 {
            for y in 0..128 {
                for x in 0..128 {
                    tile[c * n + y * 128 + x] = match (t, x < 64) {
                        (0, _) | (2, true) => model.mean,
                        (1, _) => model.mean + model.sigma,
                        _ => model.mean - 3.0 * model.sigma,
                    };
                }
            }
        }
    }
    let mut maps = LevelMaps::default();
    engine.run(&input, 3, &mut maps).unwrap();
    assert_eq!(maps.sizes, vec![(16, 16), (8, 8), (4, 4)]);
    for level in 0..3 {
        assert!(maps
            .tile(level, 0)
            .iter()
            .all(|v| (v + HALF_LN_2PI).abs() < 1e-4));
        assert!(maps
            .tile(level, 1)
            .iter()
            .all(|v| (v + 0.5 + HALF_LN_2PI).abs() < 1e-3));
        let (h, w) = maps.sizes[level];
        let half = maps.tile(level, 2);
        for y in 0..h {
            for x in 0..w {
                let want = if x < w / 2 {
                    -HALF_LN_2PI
                } else {
                    -4.5 - HALF_LN_2PI
                };
                assert!(
                    (half[y * w + x] - want).abs() < 1e-3,
                    "level {level} ({y},{x})"
                );
            }
        }
    }

    let mut scorer = Scorer::new(&manifest, model.threshold);
    let refs = |t: usize| -> Vec<&[f32]> { (0..3).map(|l| maps.tile(l, t)).collect() };
    let normal = scorer.score(&refs(0));
    assert!(
        normal.score.abs() < 1e-4 && normal.region.is_none(),
        "{normal:?}"
    );
    // One sigma everywhere: each level's likelihood is exp(-1/2), anomaly 3 (1 - e^-0.5).
    let bright = scorer.score(&refs(1));
    assert!(
        (bright.score - 3.0 * (1.0 - (-0.5f32).exp())).abs() < 1e-3,
        "{bright:?}"
    );
    let half = scorer.score(&refs(2));
    let region = half.region.expect("the dark half passes the threshold");
    assert!((half.score - 3.0 * (1.0 - (-4.5f32).exp())).abs() < 1e-3);
    assert!(region.bbox.x >= 56 && region.bbox.x <= 64, "{region:?}");
    assert_eq!(region.bbox.x + region.bbox.width, 128);
    assert_eq!((region.bbox.y, region.bbox.height), (0, 128));
}

fn rewrite_manifest(dir: &std::path::Path, edit: impl Fn(&str) -> String) {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(&text)).unwrap();
}

#[test]
fn manifest_faults_name_the_file_and_field() {
    let dir = Scratch::new("manifest");
    write_brightness_bundle(&dir.0, &BrightnessModel::default()).unwrap();
    rewrite_manifest(&dir.0, |t| {
        t.replace("format_version = 1", "format_version = 2")
    });
    let err = Bundle::load(&dir.0).unwrap_err().to_string();
    assert!(
        err.contains("manifest.toml") && err.contains("format_version"),
        "{err}"
    );
    assert!(err.contains("reads format 1"), "{err}");

    write_brightness_bundle(&dir.0, &BrightnessModel::default()).unwrap();
    rewrite_manifest(&dir.0, |t| t.replacen("stride = 8", "stride = 4", 1));
    let err = Bundle::load(&dir.0).unwrap_err().to_string();
    assert!(
        err.contains("levels[0].height/width") && err.contains("expected 32x32"),
        "{err}"
    );

    write_brightness_bundle(&dir.0, &BrightnessModel::default()).unwrap();
    rewrite_manifest(&dir.0, |t| format!("surprise = 1\n{t}"));
    let err = Bundle::load(&dir.0).unwrap_err().to_string();
    assert!(err.contains("unknown field `surprise`"), "{err}");

    // The map's post-processing: each key out of range names itself and what it accepts.
    let cases = [
        ("smoothing_sigma = 40.0", "score.smoothing_sigma", "0..=32"),
        ("top_fraction = 1.5", "score.top_fraction", "0..=1"),
        ("frame_weight = 2.0", "score.frame_weight", "0..=1"),
        ("level_weights = [1.0]", "score.level_weights", "3 levels"),
        (
            "level_weights = [1.0, -1.0, 1.0]",
            "score.level_weights",
            ">= 0",
        ),
        (
            "level_weights = [0.0, 0.0, 0.0]",
            "score.level_weights",
            "all 0",
        ),
    ];
    for (line, field, accepted) in cases {
        write_brightness_bundle(&dir.0, &BrightnessModel::default()).unwrap();
        rewrite_manifest(&dir.0, |t| {
            t.replace("[score]\n", &format!("[score]\n{line}\n"))
        });
        let err = Bundle::load(&dir.0).unwrap_err().to_string();
        assert!(
            err.contains(field) && err.contains(accepted),
            "{line}: {err}"
        );
    }
    write_brightness_bundle(&dir.0, &BrightnessModel::default()).unwrap();
    rewrite_manifest(&dir.0, |t| {
        t.replace(
            "[score]\n",
            "[score]\nsmoothing_sigma = 4.0\ntop_fraction = 0.01\nlevel_weights = [1.0, 0.0, 1.0]\n",
        )
    });
    let score = Bundle::load(&dir.0).unwrap().manifest.score;
    assert_eq!(
        (
            score.smoothing_sigma,
            score.top_fraction,
            score.level_weights
        ),
        (4.0, 0.01, vec![1.0, 0.0, 1.0])
    );
}

#[test]
fn model_shapes_that_disagree_with_the_manifest_are_refused() {
    let dir = Scratch::new("shapes");
    let model = BrightnessModel::default();
    // A head built for 64-pixel inputs inside a bundle that promises 128.
    let extractor = brightness_extractor(128).unwrap();
    let head = brightness_head(64, model.mean, model.sigma).unwrap();
    let manifest = brightness_manifest(&model);
    write_bundle(
        &dir.0,
        &manifest,
        &[("extractor.onnx", &extractor), ("head.onnx", &head)],
    )
    .unwrap();
    let err = Bundle::load(&dir.0).unwrap_err();
    assert!(matches!(err, BundleError::Shape { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("head.onnx") && msg.contains("\"tap8\""),
        "{msg}"
    );
    assert!(
        msg.contains("[1, 1, 16, 16]") && msg.contains("[?, 1, 8, 8]"),
        "{msg}"
    );

    // Taps the extractor does not have.
    rewrite_manifest(&dir.0, |t| t.replace("\"tap8\"", "\"tap4\""));
    let err = Bundle::load(&dir.0).unwrap_err().to_string();
    assert!(
        err.contains("extractor.onnx") && err.contains("tap4"),
        "{err}"
    );
}

#[test]
fn f16_extractor_matches_f32_within_half_precision() {
    let dir = Scratch::new("engine-f16");
    write_brightness_bundle(&dir.0, &BrightnessModel::default()).unwrap();
    let n = 128 * 128;
    // A ramp of grey levels around the mean, so every cell differs.
    let input: Vec<f32> = (0..3 * n)
        .map(|i| 0.4 + 0.3 * ((i % n) as f32 / n as f32))
        .collect();
    let mut maps = [LevelMaps::default(), LevelMaps::default()];
    for (precision, out) in [ExtractorPrecision::F32, ExtractorPrecision::F16]
        .into_iter()
        .zip(maps.iter_mut())
    {
        let mut engine = Engine::new(Bundle::load(&dir.0).unwrap(), precision).unwrap();
        engine.run(&input, 1, out).unwrap();
    }
    for level in 0..3 {
        let (a, b) = (maps[0].tile(level, 0), maps[1].tile(level, 0));
        let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        let spread = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        println!("level {level}: max |f16 - f32| = {worst:.2e} (values up to {spread:.2})");
        // Grey levels carry ~5e-4 error in f16; logp = -z^2/2 with z = (f - 0.55) / 0.08.
        assert!(worst < 0.05, "level {level}: {worst}");
        assert!(spread > 1.0, "the ramp must spread the likelihoods");
    }
}

#[test]
fn head_plans_are_bounded_and_the_least_recently_used_goes_first() {
    let dir = Scratch::new("engine-head-cache");
    write_brightness_bundle(&dir.0, &BrightnessModel::default()).unwrap();
    let n = 3 * 128 * 128;
    let mut engine = Engine::new(Bundle::load(&dir.0).unwrap(), ExtractorPrecision::F32).unwrap();
    let mut maps = LevelMaps::default();
    let mut run = |tiles: usize, engine: &mut Engine| {
        let input = vec![0.5; tiles * n];
        engine.run(&input, tiles, &mut maps).unwrap();
        maps.levels[0][0]
    };
    let first = run(1, &mut engine);
    for tiles in [2, 3, 4] {
        run(tiles, &mut engine);
    }
    assert_eq!(engine.cached_head_batches(), [1, 2, 3, 4]);
    // Batch 1 used again, then a fifth size: batch 2, the least recently used, goes.
    assert_eq!(run(1, &mut engine), first);
    run(5, &mut engine);
    assert_eq!(engine.cached_head_batches(), [3, 4, 1, 5]);
    assert_eq!(engine.cached_head_batches().len(), MAX_HEAD_PLANS);
    // A dropped size is planned again when it comes back, with the same result.
    assert_eq!(run(2, &mut engine), first);
}

#[test]
fn tiles_spread_over_workers_give_the_same_maps() {
    let dir = Scratch::new("engine-workers");
    write_brightness_bundle(&dir.0, &BrightnessModel::default()).unwrap();
    let n = 128 * 128;
    // 5 tiles, each its own ramp: a tile written to another tile's slot would show.
    let tiles = 5;
    let input: Vec<f32> = (0..tiles * 3 * n)
        .map(|i| 0.35 + 0.05 * (i / (3 * n)) as f32 + 0.1 * ((i % n) as f32 / n as f32))
        .collect();
    let mut engine = Engine::new(Bundle::load(&dir.0).unwrap(), ExtractorPrecision::F32).unwrap();
    let mut one = LevelMaps::default();
    engine.run(&input, tiles, &mut one).unwrap();
    for workers in [2, 3, 8] {
        engine.set_workers(workers).unwrap();
        assert_eq!(engine.workers(), workers);
        let mut spread = LevelMaps::default();
        engine.run(&input, tiles, &mut spread).unwrap();
        assert_eq!(spread.sizes, one.sizes);
        assert_eq!(spread.levels, one.levels, "{workers} workers");
        // Again, on the same states: frame after frame.
        engine.run(&input, tiles, &mut spread).unwrap();
        assert_eq!(spread.levels, one.levels, "{workers} workers, second frame");
    }
    assert_ne!(one.tile(0, 0), one.tile(0, 4), "tiles differ");
}

#[test]
fn the_daemon_and_eval_paths_give_the_same_maps_bit_for_bit() {
    // A frame at the model's input size, cut by the daemon's path into one tile of the whole
    // frame, and scored by eval's and calibration's path as a whole image: one detector, so the
    // same input, maps, score and region to the bit.
    let dir = Scratch::new("detector-paths");
    let model = BrightnessModel::default();
    write_brightness_bundle(&dir.0, &model).unwrap();
    let side = model.input_size as u32;
    let stain = PixelBox {
        x: 40,
        y: 30,
        width: 30,
        height: 20,
    };
    let frame = concrete_frame(side, side, 5, &[stain]);
    let bundle = Bundle::load(&dir.0).unwrap();
    let mut detector = Detector::new(bundle, ExtractorPrecision::F32, model.threshold).unwrap();

    let mut daemon = Vec::new();
    let tiling = Tiling {
        tile_size: side,
        overlap: 0,
    };
    let tiles = detector
        .detect_frame(&frame, tiling, |found| {
            daemon.push((
                found.tile.rect,
                found.score,
                found.region,
                found.map.to_vec(),
            ));
        })
        .unwrap();
    assert_eq!(tiles, 1);
    let (rect, daemon_score, daemon_region, daemon_map) = daemon.pop().unwrap();
    assert_eq!((rect.width, rect.height), (side, side));

    let (resized, eval) = detector.detect_image(&frame).unwrap();
    assert_eq!(
        resized, frame,
        "an image at the input size is not resampled"
    );
    let bits = |m: &[f32]| m.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&daemon_map), bits(detector.anomaly_map()));
    assert_eq!(daemon_score.to_bits(), eval.score.to_bits());
    let eval_region = eval.region.map(|r| (r.bbox, r.area_fraction));
    assert_eq!(daemon_region, eval_region);
    // Not a vacuous map: the dark stain alarms, the surface around it does not.
    let (region, _) = daemon_region.expect("the stain passes the threshold");
    assert!(region.intersects(&stain));
    assert!(daemon_map.iter().any(|&a| a <= model.threshold));
}

#[test]
fn a_trusted_key_takes_only_signed_current_bundles() {
    use inspect_core::bundle::trust::{SecretKey, Trust, SIGNATURE_FILE};
    use inspect_core::bundle::{write_manifest, BundleError, MANIFEST_FILE};
    let dir = Scratch::new("bundle-trust");
    write_brightness_bundle(&dir.0, &BrightnessModel::default()).unwrap();
    let secret = SecretKey::from_seed([42; 32]);
    let sign = |version: u64| {
        let mut manifest = Bundle::load(&dir.0).unwrap().manifest;
        manifest.bundle_version = version;
        write_manifest(&dir.0, &manifest).unwrap();
        let bytes = std::fs::read(dir.0.join(MANIFEST_FILE)).unwrap();
        std::fs::write(dir.0.join(SIGNATURE_FILE), secret.sign(&bytes)).unwrap();
    };
    let trust = |min_version| Trust {
        key: secret.public(),
        min_version,
    };
    sign(7);
    let bundle = Bundle::load_trusted(&dir.0, Some(&trust(7))).unwrap();
    assert_eq!(bundle.manifest.bundle_version, 7);
    // Older than the newest accepted: refused, naming both.
    let err = Bundle::load_trusted(&dir.0, Some(&trust(8))).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::Rollback {
                version: 7,
                newest: 8,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("rollback refused"), "{err}");
    // Signed by someone else.
    let stranger = Trust {
        key: SecretKey::from_seed([1; 32]).public(),
        min_version: 0,
    };
    let err = Bundle::load_trusted(&dir.0, Some(&stranger)).unwrap_err();
    assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
    // The manifest changed after signing (a threshold moved by hand).
    let manifest = dir.0.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("bundle_version = 7", "bundle_version = 9"),
    )
    .unwrap();
    let err = Bundle::load_trusted(&dir.0, Some(&trust(0))).unwrap_err();
    assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
    std::fs::write(&manifest, text).unwrap();
    // A model file swapped after signing: its hash no longer matches the signed manifest.
    let head = dir.0.join("head.onnx");
    let original = std::fs::read(&head).unwrap();
    let mut changed = original.clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    std::fs::write(&head, &changed).unwrap();
    let err = Bundle::load_trusted(&dir.0, Some(&trust(0))).unwrap_err();
    assert!(matches!(err, BundleError::HashMismatch { .. }), "{err}");
    std::fs::write(&head, &original).unwrap();
    // No signature at all.
    std::fs::remove_file(dir.0.join(SIGNATURE_FILE)).unwrap();
    let err = Bundle::load_trusted(&dir.0, Some(&trust(0))).unwrap_err();
    assert!(matches!(err, BundleError::Unsigned { .. }), "{err}");
    // Without a key nothing of this is asked.
    assert!(Bundle::load(&dir.0).is_ok());
}

/// Every tile of `frame` the detector alerts on, by grid index, and all tiles' scores.
fn alerts(
    detector: &mut Detector,
    frame: &image::RgbImage,
    tiling: Tiling,
) -> (Vec<usize>, Vec<f32>) {
    let (mut alerted, mut scores) = (Vec::new(), Vec::new());
    detector
        .detect_frame(frame, tiling, |found| {
            if found.region.is_some() {
                alerted.push(found.tile.index);
            }
            scores.push(found.score);
        })
        .unwrap();
    (alerted, scores)
}

#[test]
fn a_frame_weight_decides_tiles_against_their_frame() {
    // A surface darker than any the model knows lifts every tile of its frame; a stain on it
    // lifts its own tile. Plain, the daemon alerts on every tile; against the frame's mean
    // score, only on the stain.
    let dir = Scratch::new("frame-weight");
    let model = BrightnessModel::default();
    write_brightness_bundle(&dir.0, &model).unwrap();
    let side = model.input_size as u32;
    let tiling = Tiling {
        tile_size: side,
        overlap: 0,
    };
    let stain = PixelBox {
        x: side + 40,
        y: 30,
        width: 40,
        height: 40,
    };
    let darken = |frame: image::RgbImage| {
        let mut f = frame;
        for p in f.pixels_mut() {
            p.0 = p.0.map(|v| (f32::from(v) * 0.85) as u8);
        }
        f
    };
    let dark = darken(concrete_frame(2 * side, 2 * side, 9, &[]));
    let dark_stained = darken(concrete_frame(2 * side, 2 * side, 9, &[stain]));

    let mut plain = Detector::new(
        Bundle::load(&dir.0).unwrap(),
        ExtractorPrecision::F32,
        model.threshold,
    )
    .unwrap();
    let (alerted, plain_scores) = alerts(&mut plain, &dark, tiling);
    assert_eq!(
        alerted,
        [0, 1, 2, 3],
        "plain: every tile of the dark surface"
    );

    rewrite_manifest(&dir.0, |t| {
        t.replace("[score]\n", "[score]\nframe_weight = 1.0\n")
    });
    let bundle = Bundle::load(&dir.0).unwrap();
    assert_eq!(bundle.manifest.score.frame_weight, 1.0);
    let mut relative = Detector::new(bundle, ExtractorPrecision::F32, model.threshold).unwrap();
    let (alerted, scores) = alerts(&mut relative, &dark, tiling);
    assert!(
        alerted.is_empty(),
        "relative: no tile stands out: {scores:?}"
    );
    // Each score lost the frame's mean plain score.
    let mean = plain_scores.iter().sum::<f32>() / 4.0;
    for (s, p) in scores.iter().zip(&plain_scores) {
        assert!((s - (p - mean)).abs() < 1e-4, "{s} = {p} - {mean}");
    }
    let (alerted, scores) = alerts(&mut relative, &dark_stained, tiling);
    assert_eq!(alerted, [1], "relative: the stained tile alone: {scores:?}");
}
