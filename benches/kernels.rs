//! The project's kernels against tract's own and onnxruntime, on the real extractor
//! (EfficientNet-Lite0 taps at strides 8/16/32, 256x256, float32, the same ONNX file):
//! per-tile latency with the project's kernels on and off, 1 and 2 threads, onnxruntime (PyPI)
//! at the same thread counts, the ratios, and where each plan spends its time, by op.
//!
//! `cargo bench --features data --bench kernels` (needs tests/setup.sh for the weights and
//! onnxruntime). Results: docs/PERFORMANCE.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use edge_inspector::engine::{optimized_plan_with, run_plan, set_threads, Kernels};
use edge_inspector::extractor::efficientnet::{build_lite0, lite0_input, BuildOptions, Precision};
use edge_inspector::extractor::Checkpoint;
use edge_inspector::fixtures::concrete_frame;
use edge_inspector::kernels::depthwise::Isa;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{eval, SimpleState};

const SIZE: usize = 256;
const RUNS: usize = 30;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn weights() -> PathBuf {
    let out = Command::new("python3")
        .arg(root().join("tests/reference/lite0_weights.py"))
        .output()
        .expect("python3");
    assert!(out.status.success(), "run tests/setup.sh first");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn median_ms(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[RUNS / 2]
}

fn ort_ms(model: &Path, threads: usize, raw: &Path) -> Option<f64> {
    let out = Command::new("python3")
        .arg(root().join("benches/ort_bench.py"))
        .arg(model)
        .arg(threads.to_string())
        .arg(RUNS.to_string())
        .arg(raw)
        .arg(format!("1,3,{SIZE},{SIZE}"))
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Milliseconds per op name over `RUNS` runs (mean per run), most expensive first.
fn profile(plan: &Arc<TypedSimplePlan>, input: &Tensor) -> Vec<(String, usize, f64)> {
    let mut state = SimpleState::new(plan).unwrap();
    let mut spent: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for run in 0..RUNS + 3 {
        let mut per_node = Vec::new();
        state
            .run_plan_with_eval(
                tvec!(input.clone().into()),
                |ctx, op_state, node, inputs| {
                    let t = Instant::now();
                    let out = eval(ctx, op_state, node, inputs);
                    per_node.push((node.op().name().to_string(), t.elapsed().as_secs_f64()));
                    out
                },
            )
            .unwrap();
        if run < 3 {
            continue; // warm-up
        }
        let mut counted = BTreeMap::new();
        for (name, secs) in per_node {
            let e = spent.entry(name.clone()).or_default();
            e.1 += secs * 1000.0 / RUNS as f64;
            *counted.entry(name).or_insert(0) += 1;
        }
        for (name, n) in counted {
            spent.get_mut(&name).unwrap().0 = n;
        }
    }
    let mut rows: Vec<_> = spent.into_iter().map(|(k, (n, ms))| (k, n, ms)).collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    rows
}

fn main() {
    let ckpt = Checkpoint::read(&weights()).expect("checkpoint");
    let onnx = build_lite0(
        &ckpt,
        &BuildOptions {
            input_size: SIZE,
            with_classifier: false,
            levels: 3,
            precision: Precision::F32,
        },
    )
    .unwrap();
    let input = lite0_input(&concrete_frame(512, 512, 7, &[]), SIZE);
    let dir = std::env::temp_dir().join(format!("ei-kernels-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("lite0.onnx");
    std::fs::write(&model, &onnx).unwrap();
    let raw = dir.join("input.raw");
    let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&raw, bytes).unwrap();

    let shape = [1, 3, SIZE, SIZE];
    let plans = [
        (
            "tract's kernels",
            optimized_plan_with(&onnx, Kernels::Tract).unwrap(),
        ),
        (
            "project kernels",
            optimized_plan_with(&onnx, Kernels::Project).unwrap(),
        ),
    ];
    println!(
        "EfficientNet-Lite0 taps (strides 8/16/32) at {SIZE}x{SIZE}, float32, median of {RUNS} runs, \
         ms per tile; project kernels: {:?}",
        Isa::detect()
    );
    println!();
    println!("| runtime | 1 thread | 2 threads | ratio to onnxruntime, 1T | 2T |");
    println!("|---|---|---|---|---|");
    let ort: Vec<Option<f64>> = [1, 2].iter().map(|&t| ort_ms(&model, t, &raw)).collect();
    for (name, plan) in &plans {
        let mut ms = Vec::new();
        for threads in [1, 2] {
            set_threads(threads);
            ms.push(median_ms(|| {
                run_plan(plan, &[(&shape, &input)]).unwrap();
            }));
        }
        let ratio = |i: usize| ort[i].map_or("n/a".into(), |o| format!("{:.2}", ms[i] / o));
        println!(
            "| tract 0.23.9, {name} | {:.1} | {:.1} | {} | {} |",
            ms[0],
            ms[1],
            ratio(0),
            ratio(1)
        );
    }
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}"));
    println!(
        "| onnxruntime | {} | {} | 1.00 | 1.00 |",
        fmt(ort[0]),
        fmt(ort[1])
    );

    set_threads(1);
    let tensor = Tensor::from_shape(&shape, &input).unwrap();
    for (name, plan) in &plans {
        let rows = profile(plan, &tensor);
        let total: f64 = rows.iter().map(|r| r.2).sum();
        println!("\nwhere the time goes, {name}, 1 thread ({total:.1} ms per tile):");
        println!("| op | nodes | ms | share |");
        println!("|---|---|---|---|");
        for (op, nodes, ms) in rows.iter().filter(|r| r.2 >= 0.05) {
            println!("| {op} | {nodes} | {ms:.2} | {:.0}% |", 100.0 * ms / total);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
