//! The project's kernels against tract's own and onnxruntime, on the real extractor
//! (EfficientNet-Lite0 taps at strides 8/16/32, 256x256, float32, the same ONNX file):
//! per-tile latency with the project's kernels on and off, 1 and 2 threads, onnxruntime (PyPI)
//! at the same thread counts, the ratios, and where each plan spends its time, by op; then the
//! daemon's pipeline (tiling, extractor, flow head, scoring) on 1280x720 frames with the Pi 4
//! rung's bundle (demo/lite0-bundle: Lite0 int8), frames/s with 1 and 2 inference workers.
//!
//! `cargo bench --features data --bench kernels` (needs tests/setup.sh for the weights and
//! onnxruntime). Results: docs/PERFORMANCE.md.

use std::collections::BTreeMap;
use std::time::Instant;

mod common;
use common::{median_ms, ort_ms, root, weights, RUNS};

use inspect_core::bundle::Bundle;
use inspect_core::engine::{
    optimize, optimized_plan_with, run_plan, set_threads, Engine, ExtractorPrecision, Kernels,
    LevelMaps,
};
use inspect_core::fixtures::concrete_frame;
use inspect_core::kernels::depthwise::Isa;
use inspect_core::scorer::Scorer;
use inspect_core::tiler::{sample_tile, Normalization, TileGrid};
use inspect_train::extractor::efficientnet::{
    build_lite, lite_input, BuildOptions, Precision, TapPoint, Variant,
};
use inspect_train::extractor::Checkpoint;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{eval, SimpleState};

/// Counts heap allocations, to report how many one frame of the pipeline makes.
struct CountingAlloc;

static ALLOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const SIZE: usize = 256;

/// Milliseconds per op name over `RUNS` runs (mean per run), most expensive first.
fn profile(plan: &Arc<TypedSimplePlan>, inputs: &[Tensor]) -> Vec<(String, usize, f64)> {
    let mut state = SimpleState::new(plan).unwrap();
    let mut spent: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for run in 0..RUNS + 3 {
        let mut per_node = Vec::new();
        state
            .run_plan_with_eval(
                inputs.iter().map(|t| t.clone().into()).collect(),
                |ctx, op_state, node, node_inputs| {
                    let t = Instant::now();
                    let out = eval(ctx, op_state, node, node_inputs);
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
    let onnx = build_lite(
        &ckpt,
        &BuildOptions {
            input_size: SIZE,
            with_classifier: false,
            variant: Variant::Lite0,
            tap_point: TapPoint::BlockOutput,
            levels: 3,
            precision: Precision::F32,
        },
    )
    .unwrap();
    let input = lite_input(&concrete_frame(512, 512, 7, &[]), SIZE);
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
    let ort: Vec<Option<f64>> = [1, 2]
        .iter()
        .map(|&t| ort_ms(&model, t, &raw, &shape))
        .collect();
    for (name, plan) in &plans {
        let mut ms = Vec::new();
        for threads in [1, 2] {
            set_threads(threads);
            ms.push(median_ms(RUNS, || {
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
        print_profile(
            &format!("{name}, 1 thread"),
            plan,
            std::slice::from_ref(&tensor),
            1,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    lite0_models(40);
    pipeline();
}

fn print_profile(title: &str, plan: &Arc<TypedSimplePlan>, inputs: &[Tensor], per: usize) {
    let rows = profile(plan, inputs);
    let total: f64 = rows.iter().map(|r| r.2).sum::<f64>() / per as f64;
    println!("\nwhere the time goes, {title} ({total:.2} ms per tile):");
    println!("| op | nodes | ms per tile | share |");
    println!("|---|---|---|---|");
    for (op, nodes, ms) in rows.iter().filter(|r| r.2 / per as f64 >= 0.02) {
        let ms = ms / per as f64;
        println!("| {op} | {nodes} | {ms:.2} | {:.0}% |", 100.0 * ms / total);
    }
}

/// The Pi 4 rung's bundle (demo/lite0-bundle) as the daemon runs it: the int8 extractor (float
/// depthwise) per tile, with tract's kernels and the project's, against onnxruntime; the flow
/// head for a batch of `tiles` tiles (a 1280x720 frame), per tile.
fn lite0_models(tiles: usize) {
    let lite0 = root().join("demo/lite0-bundle");
    let bundle = Bundle::load(&lite0).expect("Lite0 bundle");
    let m = &bundle.manifest;
    let (w, h) = (m.input.width, m.input.height);
    let frame = concrete_frame(512, 512, 3, &[]);
    let input = lite_input(&frame, w);
    let shape = [1, 3, h, w];
    let raw = std::env::temp_dir().join(format!("ei-demo-input-{}.raw", std::process::id()));
    let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&raw, bytes).unwrap();
    set_threads(1);
    println!(
        "\nLite0 bundle ({}), 1 thread, ms per tile:",
        m.extractor.name
    );
    println!("| model | tract's kernels | project kernels | onnxruntime | project / onnxruntime |");
    println!("|---|---|---|---|---|");
    let plan = |k| {
        optimize(bundle.extractor.clone(), k)
            .and_then(|p| p.into_runnable())
            .unwrap()
    };
    let (theirs, ours) = (plan(Kernels::Tract), plan(Kernels::Project));
    let time = |p: &Arc<TypedSimplePlan>| {
        median_ms(RUNS, || {
            run_plan(p, &[(&shape, &input)]).unwrap();
        })
    };
    let (a, b) = (time(&theirs), time(&ours));
    let ort = ort_ms(&lite0.join("extractor.onnx"), 1, &raw, &shape);
    let _ = std::fs::remove_file(&raw);
    println!(
        "| extractor (int8) | {a:.2} | {b:.2} | {} | {} |",
        ort.map_or("n/a".into(), |o| format!("{o:.2}")),
        ort.map_or("n/a".into(), |o| format!("{:.2}", b / o))
    );
    let head = bundle
        .head_for_batch(tiles)
        .unwrap()
        .into_optimized()
        .and_then(|p| p.into_runnable())
        .unwrap();
    let features: Vec<Tensor> = m
        .levels
        .iter()
        .enumerate()
        .map(|(l, level)| {
            let n = tiles * level.channels * level.height * level.width;
            let values: Vec<f32> = (0..n).map(|i| ((i * 7 + l) % 13) as f32 * 0.1).collect();
            Tensor::from_shape(&[tiles, level.channels, level.height, level.width], &values)
                .unwrap()
        })
        .collect();
    let head_ms = median_ms(RUNS, || {
        head.run(features.iter().map(|t| t.clone().into()).collect())
            .unwrap();
    }) / tiles as f64;
    println!("| flow head (batch of {tiles}) | {head_ms:.2} | (same) | n/a | |");
    print_profile(
        "Lite0 extractor, project kernels",
        &ours,
        &[Tensor::from_shape(&shape, &input).unwrap()],
        1,
    );
    print_profile(
        &format!("Lite0 flow head, batch of {tiles}"),
        &head,
        &features,
        tiles,
    );
}

/// Frames per second of tiling + extractor + head + scoring, as `inspectd` runs them, on
/// 1280x720 frames with the Lite0 bundle and the demo config's tiling (192 px, overlap 32).
fn pipeline() {
    let frames: Vec<_> = (0..4)
        .map(|seed| concrete_frame(1280, 720, seed, &[]))
        .collect();
    let grid = TileGrid::new(1280, 720, 192, 32);
    println!(
        "\ndaemon pipeline, Lite0 bundle (int8 extractor, float depthwise), 1280x720 frames, {} \
         tiles of 192 px per frame, tract threads 1:",
        grid.tiles.len()
    );
    println!(
        "| inference workers | ms per frame | frames/s | tiles/s | heap allocations per frame |"
    );
    println!("|---|---|---|---|---|");
    set_threads(1);
    for workers in [1, 2] {
        let bundle = Bundle::load(&root().join("demo/lite0-bundle")).expect("Lite0 bundle");
        let manifest = bundle.manifest.clone();
        let mut scorer = Scorer::new(&manifest, manifest.threshold.value);
        let mut engine = Engine::new(bundle, ExtractorPrecision::F32).unwrap();
        engine.set_workers(workers).unwrap();
        let (w, h) = (manifest.input.width, manifest.input.height);
        let norm = Normalization {
            mean: manifest.input.mean,
            std: manifest.input.std,
        };
        let tile_len = 3 * w * h;
        let mut input = vec![0.0; grid.tiles.len() * tile_len];
        let mut maps = LevelMaps::default();
        let mut frame_index = 0;
        let mut frame = || {
            let frame = &frames[frame_index % frames.len()];
            frame_index += 1;
            for (tile, out) in grid.tiles.iter().zip(input.chunks_exact_mut(tile_len)) {
                sample_tile(frame, &tile.rect, w, h, &norm, out);
            }
            engine.run(&input, grid.tiles.len(), &mut maps).unwrap();
            for tile in &grid.tiles {
                let levels: Vec<&[f32]> = (0..maps.levels.len())
                    .map(|l| maps.tile(l, tile.index))
                    .collect();
                scorer.score(&levels);
            }
        };
        let ms = median_ms(10, &mut frame);
        let before = ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed);
        frame();
        let allocations = ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed) - before;
        println!(
            "| {workers} | {ms:.0} | {:.2} | {:.0} | {} |",
            1000.0 / ms,
            1000.0 * grid.tiles.len() as f64 / ms,
            allocations
        );
    }
}
