//! Extractor benchmark: per-image latency of EfficientNet-Lite0 at 256x256 in tract, float32 vs
//! int8 (float or int8 depthwise), with 1 and 2 threads, against onnxruntime on the same ONNX
//! files; int8 fidelity (tap cosine vs float) on defect-free images; the ops tract chose.
//!
//! `cargo bench --features data --bench extractor` (needs tests/setup.sh; uses the shared data
//! folder `../shared/data` when present, else synthetic frames).

use std::collections::BTreeMap;

mod common;
use common::{median_ms, ort_ms, root, weights, RUNS};

use inspect_core::engine::{optimized_plan, run_plan, set_threads};
use inspect_core::fixtures::concrete_frame;
use inspect_train::extractor::efficientnet::{
    build_lite, calibrate, calibration_images, lite_input, BuildOptions, Precision, TapPoint,
    Variant,
};
use inspect_train::extractor::Checkpoint;
use tract_onnx::prelude::*;

const SIZE: usize = 256;

/// Defect-free images: magnetic-tile train/good (real), else synthetic concrete.
fn normal_images(count: usize) -> (String, Vec<Vec<f32>>) {
    let shared = root().join("../shared/data/magnetic-tile/train/good");
    if shared.is_dir() {
        let images = calibration_images(&shared, count, SIZE).expect("reading shared data");
        return ("magnetic-tile train/good".into(), images);
    }
    let images = (0..count as u64)
        .map(|seed| lite_input(&concrete_frame(512, 512, seed, &[]), SIZE))
        .collect();
    ("synthetic concrete (shared data absent)".into(), images)
}

fn run(plan: &Arc<TypedSimplePlan>, input: &[f32]) -> Vec<Vec<f32>> {
    run_plan(plan, &[(&[1, 3, SIZE, SIZE], input)]).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn op_census(plan: &Arc<TypedSimplePlan>) -> BTreeMap<String, usize> {
    let mut census = BTreeMap::new();
    for node in plan.model().nodes() {
        *census.entry(node.op().name().to_string()).or_insert(0) += 1;
    }
    census
}

fn main() {
    let ckpt = Checkpoint::read(&weights()).expect("checkpoint");
    let (source, images) = normal_images(48);
    let (calib, held_out) = images.split_at(32);
    let ranges = calibrate(
        &ckpt,
        Variant::Lite0,
        SIZE,
        false,
        calib.iter().map(|v| v.as_slice()),
    )
    .unwrap();
    let build = |precision| {
        build_lite(
            &ckpt,
            &BuildOptions {
                input_size: SIZE,
                with_classifier: false,
                variant: Variant::Lite0,
                tap_point: TapPoint::BlockOutput,
                levels: 3,
                precision,
            },
        )
        .unwrap()
    };
    let variants = [
        ("float32", build(Precision::F32)),
        (
            "int8, float depthwise",
            build(Precision::Int8 {
                ranges: &ranges,
                int8_depthwise: false,
            }),
        ),
        (
            "int8, int8 depthwise",
            build(Precision::Int8 {
                ranges: &ranges,
                int8_depthwise: true,
            }),
        ),
    ];
    let dir = std::env::temp_dir().join(format!("ei-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join("input.raw");
    let bytes: Vec<u8> = held_out[0].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&raw, bytes).unwrap();

    println!("EfficientNet-Lite0 taps at {SIZE}x{SIZE}, median of {RUNS} runs, ms per image");
    println!(
        "calibration: 32 images, fidelity: {} held-out images, of {source}",
        held_out.len()
    );
    println!();
    println!("| model | tract 1T | tract 2T | ort 1T | ort 2T | tract/ort 1T | tract/ort 2T | min tap cosine vs float |");
    println!("|---|---|---|---|---|---|---|---|");
    let float_plan = optimized_plan(&variants[0].1).unwrap();
    let float_taps: Vec<Vec<Vec<f32>>> = held_out.iter().map(|i| run(&float_plan, i)).collect();
    let mut float_1t = 0.0;
    for (name, onnx) in &variants {
        let path = dir.join(format!("{}.onnx", name.replace([' ', ','], "_")));
        std::fs::write(&path, onnx).unwrap();
        let p = optimized_plan(onnx).unwrap();
        let mut min_cos = 1.0f64;
        for (image, reference) in held_out.iter().zip(&float_taps) {
            for (a, b) in run(&p, image).iter().zip(reference) {
                min_cos = min_cos.min(cosine(a, b));
            }
        }
        let mut row = Vec::new();
        for threads in [1, 2] {
            set_threads(threads);
            row.push(median_ms(RUNS, || {
                run(&p, &held_out[0]);
            }));
        }
        let ort: Vec<Option<f64>> = [1, 2]
            .iter()
            .map(|&t| ort_ms(&path, t, &raw, &[1, 3, SIZE, SIZE]))
            .collect();
        let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}"));
        let ratio =
            |a: f64, b: Option<f64>| b.map_or("n/a".to_string(), |b| format!("{:.2}", a / b));
        if *name == "float32" {
            float_1t = row[0];
        }
        println!(
            "| {name} | {:.1} | {:.1} | {} | {} | {} | {} | {min_cos:.4} |",
            row[0],
            row[1],
            fmt(ort[0]),
            fmt(ort[1]),
            ratio(row[0], ort[0]),
            ratio(row[1], ort[1]),
        );
        if *name != "float32" {
            println!(
                "|   speed-up over float32 in tract, 1 thread | {:.2}x | | | | | | |",
                float_1t / row[0]
            );
        }
    }
    set_threads(1);
    for (name, onnx) in &variants[1..] {
        println!("\nops in tract's optimized plan, {name}:");
        for (op, count) in op_census(&optimized_plan(onnx).unwrap()) {
            println!("  {count:3} {op}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
