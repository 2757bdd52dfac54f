//! Metrics against the references: scikit-learn's `roc_auc_score` and the MVTec AD AUPRO
//! (numpy + scipy connected components, tests/reference/metrics_ref.py), to 1e-4, on anomaly
//! maps made by the real engine and scorer, and on hand-made edge cases. The scorer's map
//! smoothing and top-fraction tile score against scipy's `gaussian_filter` and numpy
//! (tests/reference/post_processing_ref.py) on the demo bundle's maps of a real frame.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use inspect_core::bundle::Bundle;
use inspect_core::detector::Detector;
use inspect_core::engine::{Engine, ExtractorPrecision, LevelMaps};
use inspect_core::fixtures::concrete_frame;
use inspect_core::random::SplitMix;
use inspect_core::scorer::Scorer;
use inspect_core::tiler::{sample_tile, Normalization, PixelBox};
use inspect_train::metrics::{aupro, image_auroc, pixel_auroc};

struct Case {
    name: &'static str,
    width: usize,
    height: usize,
    maps: Vec<Vec<f32>>,
    masks: Vec<Vec<u8>>,
}

/// What the reference script `tests/reference/<script>` prints for `input` on its stdin.
fn python_reference(script: &str, input: &serde_json::Value) -> serde_json::Value {
    let path = common::repo_root().join("tests/reference").join(script);
    let mut child = Command::new("python3")
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (run tests/setup.sh for scikit-learn and scipy)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{script} failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (pixel AUROC, image AUROC, AUPRO) from the Python references.
fn reference(case: &Case) -> [Option<f64>; 3] {
    let input = serde_json::json!({
        "width": case.width, "height": case.height, "maps": case.maps, "masks": case.masks,
    });
    let v = python_reference("metrics_ref.py", &input);
    ["pixel_auroc", "image_auroc", "aupro"].map(|k| v[k].as_f64())
}

fn ours(case: &Case) -> [Option<f64>; 3] {
    let maps: Vec<&[f32]> = case.maps.iter().map(Vec::as_slice).collect();
    let masks: Vec<&[u8]> = case.masks.iter().map(Vec::as_slice).collect();
    [
        pixel_auroc(&maps, &masks),
        image_auroc(&maps, &masks),
        aupro(&maps, &masks, case.width, case.height, 0.3),
    ]
}

/// Anomaly maps of the brightness bundle (run by tract, scored by the daemon's scorer) on
/// concrete frames with dark patches, and the patches as masks.
fn engine_case() -> Case {
    let dir = common::Scratch::new("metrics-engine");
    let bundle = Bundle::load(&common::bundle(&dir.0)).unwrap();
    let manifest = bundle.manifest.clone();
    let side = manifest.input.width;
    let mut engine = Engine::new(bundle, ExtractorPrecision::F32).unwrap();
    let mut scorer = Scorer::new(&manifest, manifest.threshold.value);
    let norm = Normalization {
        mean: manifest.input.mean,
        std: manifest.input.std,
    };
    let mut rng = SplitMix::new(4);
    let (mut maps, mut masks) = (Vec::new(), Vec::new());
    for i in 0..6u64 {
        // Images 0 and 3 are defect-free; the others get one or two patches.
        let mut patches = Vec::new();
        for _ in 0..(i % 3) {
            let s = 6 + (rng.unit() * 20.0) as u32;
            let x = (rng.unit() * (side as u32 - s) as f32) as u32;
            let y = (rng.unit() * (side as u32 - s) as f32) as u32;
            patches.push(PixelBox {
                x,
                y,
                width: s,
                height: s,
            });
        }
        let frame = concrete_frame(side as u32, side as u32, 50 + i, &patches);
        let whole = PixelBox {
            x: 0,
            y: 0,
            width: side as u32,
            height: side as u32,
        };
        let mut input = vec![0.0; 3 * side * side];
        sample_tile(&frame, &whole, side, side, &norm, &mut input);
        let mut out = LevelMaps::default();
        engine.run(&input, 1, &mut out).unwrap();
        let levels: Vec<&[f32]> = (0..manifest.levels.len()).map(|l| out.tile(l, 0)).collect();
        scorer.score(&levels);
        maps.push(scorer.anomaly_map().to_vec());
        masks.push(
            (0..side * side)
                .map(|p| {
                    let (x, y) = ((p % side) as u32, (p / side) as u32);
                    u8::from(
                        patches.iter().any(|b| {
                            x >= b.x && x < b.x + b.width && y >= b.y && y < b.y + b.height
                        }),
                    )
                })
                .collect(),
        );
    }
    Case {
        name: "engine maps",
        width: side,
        height: side,
        maps,
        masks,
    }
}

fn hand_made() -> Vec<Case> {
    let (w, h) = (12, 9);
    let mut rng = SplitMix::new(7);
    // Scores on a coarse grid of 0.05: many ties.
    let mut noisy = |bias: f32| ((rng.unit() + bias) * 20.0).round() / 20.0;
    let mask_of = |cells: &[(usize, usize)]| {
        let mut m = vec![0u8; w * h];
        for &(x, y) in cells {
            m[y * w + x] = 1;
        }
        m
    };
    let blob = mask_of(&[(2, 2), (3, 2), (2, 3), (3, 3), (4, 4), (9, 7)]); // a blob, a diagonal
                                                                           // neighbour joining it, and a one-pixel region
    let single = mask_of(&[(6, 1)]);
    let empty = vec![0u8; w * h];
    let tied_maps = |masks: &[Vec<u8>], noisy: &mut dyn FnMut(f32) -> f32| -> Vec<Vec<f32>> {
        masks
            .iter()
            .map(|m| {
                m.iter()
                    .map(|&d| noisy(if d == 1 { 0.4 } else { 0.0 }))
                    .collect()
            })
            .collect()
    };
    let masks = vec![blob.clone(), single.clone(), empty.clone()];
    let ties = tied_maps(&masks, &mut noisy);
    vec![
        Case {
            name: "ties, one-pixel region, an empty mask",
            width: w,
            height: h,
            maps: ties,
            masks: masks.clone(),
        },
        Case {
            name: "constant scores",
            width: w,
            height: h,
            maps: vec![vec![0.5; w * h]; 3],
            masks: masks.clone(),
        },
        Case {
            name: "perfect",
            width: w,
            height: h,
            maps: masks
                .iter()
                .map(|m| m.iter().map(|&d| f32::from(d) + 0.1).collect())
                .collect(),
            masks: masks.clone(),
        },
        Case {
            name: "only a one-pixel region",
            width: w,
            height: h,
            maps: vec![(0..w * h).map(|i| (i % 7) as f32).collect()],
            masks: vec![single],
        },
        Case {
            name: "no defect anywhere",
            width: w,
            height: h,
            maps: vec![vec![0.3; w * h]; 2],
            masks: vec![empty.clone(), empty],
        },
    ]
}

#[test]
fn metrics_equal_scikit_learn_and_the_mvtec_aupro() {
    let mut cases = hand_made();
    cases.push(engine_case());
    for case in &cases {
        let (got, want) = (ours(case), reference(case));
        println!("{}: ours {got:?}, reference {want:?}", case.name);
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            match (g, w) {
                (Some(g), Some(w)) => {
                    assert!(
                        (g - w).abs() <= 1e-4,
                        "{}: metric {k}: {g} vs {w}",
                        case.name
                    )
                }
                (None, None) => {}
                _ => panic!("{}: metric {k}: {g:?} vs {w:?}", case.name),
            }
        }
    }
    // The hand-made cases mean what they say.
    let [p, i, a] = ours(&cases[2]);
    assert_eq!(
        (p, i, a),
        (Some(1.0), Some(1.0), Some(1.0)),
        "perfect separation"
    );
    let [p, _, a] = ours(&cases[1]);
    assert_eq!(p, Some(0.5), "constant scores");
    // One step from (0, 0) to (1, 1): the area up to 0.3 is 0.045, over 0.3.
    assert!((a.unwrap() - 0.15).abs() < 1e-12);
    assert_eq!(ours(&cases[4]), [None, None, None]);
    // The engine's maps separate the patches well (the model is made for them).
    let [p, _, _] = ours(&cases[5]);
    assert!(p.unwrap() > 0.9, "{p:?}");
}

/// scipy's smoothing and numpy's top mean of `map` (`side x side`).
fn post_processing_reference(map: &[f32], side: usize, sigma: f32, top: f32) -> (Vec<f32>, f64) {
    let input = serde_json::json!({
        "width": side, "height": side, "map": map, "sigma": sigma, "top_fraction": top,
    });
    let v = python_reference("post_processing_ref.py", &input);
    let smoothed = v["smoothed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    (smoothed, v["top_mean"].as_f64().unwrap())
}

#[test]
fn smoothing_and_top_mean_equal_scipy_on_real_maps() {
    let root = common::repo_root();
    let bundle = Bundle::load(&root.join("demo/bundle")).unwrap();
    let plain = bundle.manifest.score.clone();
    let side = bundle.manifest.input.width;
    let mut detector = Detector::new(bundle, ExtractorPrecision::F32, f32::MAX).unwrap();
    // A cracked frame of the demo: the map has a sharp ridge along the crack.
    let frame = image::open(root.join("demo/frames/11289-10.jpg"))
        .unwrap()
        .to_rgb8();
    let levels = detector.image_level_maps(&frame).unwrap();
    for (sigma, top) in [(4.0f32, 0.01f32), (2.0, 0.0), (1.5, 0.1)] {
        let mut spec = plain.clone();
        detector.set_score(spec.clone());
        detector.score_level_maps(&levels);
        let raw = detector.anomaly_map().to_vec();
        spec.smoothing_sigma = sigma;
        spec.top_fraction = top;
        detector.set_score(spec);
        let score = detector.score_level_maps(&levels).score;
        let ours = detector.anomaly_map();
        let (expected, expected_score) = post_processing_reference(&raw, side, sigma, top);
        let range = raw.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = ours
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-5 * range,
            "sigma {sigma}: worst difference {worst} on a map of range {range}"
        );
        assert!(
            (f64::from(score) - expected_score).abs() <= 1e-5 * f64::from(range),
            "sigma {sigma}, top {top}: score {score} against {expected_score}"
        );
        // The smoothing did something on this map.
        assert!(raw
            .iter()
            .zip(ours)
            .any(|(a, b)| (a - b).abs() > 1e-3 * range));
    }
}
