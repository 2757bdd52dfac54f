//! The project's kernels inside tract plans give tract's own results. Depthwise: one-layer ONNX
//! models (3x3 and 5x5, stride 1, 2 and 3, symmetric and SAME padding, channel counts that are not
//! multiples of any vector width, maps down to 1x1, with and without a fused ReLU6), each run
//! through a plan with tract's kernels and one with the project's. The real extractor is
//! compared in tests/extractor_lite0.rs. Integer sums: the Pi 4 rung's int8 extractor
//! (demo/lite0-bundle). Runs under qemu for cortex-a72 / a76 and armv7's cortex-a7 too
//! (cross/test.sh).

use inspect_core::engine::{optimize, optimized_plan_with, run_plan, Kernels};
use inspect_core::kernels::depthwise::Isa;
use inspect_core::kernels::{
    fuse_depthwise_quantize, skip_zero_corrections, use_project_kernels, use_project_quantize,
    use_project_requantize, use_project_sums,
};
use inspect_core::onnx::{Attr, ModelBuilder, Padding};
use tract_onnx::prelude::*;

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) % 4001) as f32 / 1000.0 - 2.0
        })
        .collect()
}

struct Case {
    kernel: usize,
    stride: usize,
    padding: Padding,
    channels: usize,
    map: (usize, usize),
    relu6: bool,
    /// Input and output NHWC, around the NCHW conv: tract folds the transposes into a
    /// channels-last conv (as it lays the extractor out on aarch64).
    channels_last: bool,
}

fn model(case: &Case, seed: u64) -> Vec<u8> {
    let mut b = ModelBuilder::new("depthwise");
    let (h, w) = case.map;
    let mut x = if case.channels_last {
        b.input("x", &[1.into(), h.into(), w.into(), case.channels.into()])
    } else {
        b.input("x", &[1.into(), case.channels.into(), h.into(), w.into()])
    };
    if case.channels_last {
        x = b.node(
            "Transpose",
            &[&x],
            vec![("perm", Attr::Ints(vec![0, 3, 1, 2]))],
        );
    }
    let k = case.kernel;
    let weights = noise(case.channels * k * k, seed);
    let bias = noise(case.channels, seed + 1);
    let mut y = b.conv(
        &x,
        &weights,
        [case.channels, 1, k, k],
        Some(&bias),
        case.stride,
        case.padding,
        case.channels,
    );
    if case.relu6 {
        y = b.clip(&y, 0.0, 6.0);
    }
    if case.channels_last {
        y = b.node(
            "Transpose",
            &[&y],
            vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))],
        );
    }
    // Output shape left to the model: the padding decides it.
    b.output_unshaped(&y);
    b.to_bytes().unwrap()
}

/// Runs `case` both ways; returns (tract's output, the project's, the project plan's ops with
/// their details).
fn run_both(case: &Case, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<String>) {
    let onnx = model(case, seed);
    let (h, w) = case.map;
    let input = noise(case.channels * h * w, seed + 2);
    let shape = if case.channels_last {
        [1, h, w, case.channels]
    } else {
        [1, case.channels, h, w]
    };
    let tract = optimized_plan_with(&onnx, Kernels::Tract).unwrap();
    let ours = optimized_plan_with(&onnx, Kernels::Project).unwrap();
    let ops = ours
        .model()
        .nodes()
        .iter()
        .map(|n| format!("{} {}", n.op().name(), n.op().info().unwrap().join(" ")))
        .collect();
    let a = run_plan(&tract, &[(&shape, &input)]).unwrap().remove(0);
    let b = run_plan(&ours, &[(&shape, &input)]).unwrap().remove(0);
    (a, b, ops)
}

#[test]
fn project_depthwise_matches_tracts_own_op() {
    let mut seed = 0;
    let mut checked = 0;
    for kernel in [3, 5] {
        // Stride 3: the plane kernels' vector loads only serve 1 and 2 (they fall back).
        for stride in [1, 2, 3] {
            for padding in [Padding::Symmetric(kernel / 2), Padding::SameUpper] {
                for (channels, map) in [
                    (1, (1, 1)),
                    (5, (2, 3)),
                    (13, (7, 7)),
                    (16, (17, 12)),
                    (3, (32, 33)),
                    (40, (9, 9)),
                ] {
                    for (relu6, channels_last) in
                        [(false, false), (true, false), (false, true), (true, true)]
                    {
                        let case = Case {
                            kernel,
                            stride,
                            padding,
                            channels,
                            map,
                            relu6,
                            channels_last,
                        };
                        seed += 1;
                        let (want, got, ops) = run_both(&case, seed);
                        let layout = if channels_last {
                            "ChannelsLast"
                        } else {
                            "Planes"
                        };
                        assert!(
                            ops.iter().any(
                                |o| o.starts_with("ProjectDepthwiseConv") && o.contains(layout)
                            ),
                            "k{kernel} s{stride} {padding:?} {map:?} {layout}: not replaced: \
                             {ops:?}"
                        );
                        if relu6 {
                            // The clip is fused into the kernel: no op of its own is left.
                            assert!(
                                ops.iter().all(|o| !o.contains("Max")
                                    && !o.contains("Min")
                                    && !o.contains("BinChain")
                                    && !o.contains("Clip")),
                                "clip not fused: {ops:?}"
                            );
                        }
                        assert_eq!(want.len(), got.len());
                        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                            assert!(
                                (a - b).abs() <= 1e-5 * scale,
                                "k{kernel} s{stride} {padding:?} c{channels} {map:?} relu6 {relu6} \
                                 channels-last {channels_last} at {i}: tract {a}, project {b}"
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 288);
    eprintln!("288 cases agree; kernels used here: {:?}", Isa::detect());
}

/// The plan of `model` and what it evaluates (nodes that feed an output), by op name.
fn live(model: TypedModel) -> (Arc<TypedSimplePlan>, Vec<String>) {
    let plan = model.into_runnable().unwrap();
    let names = plan
        .order_without_consts()
        .iter()
        .map(|&n| plan.model().node(n).op().name().to_string())
        .collect();
    (plan, names)
}

/// The concrete shape of `model`'s first input.
fn input_shape(model: &TypedModel) -> Vec<usize> {
    model
        .input_fact(0)
        .unwrap()
        .shape
        .as_concrete()
        .unwrap()
        .to_vec()
}

/// The Pi 4 rung's int8 extractor (demo/lite0-bundle: Lite0), typed, as tract loads it.
fn lite0_extractor() -> TypedModel {
    // The repository root (this crate lies in crates/inspect-core): demo/ is there.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the repository root");
    let onnx =
        std::fs::read(root.join("demo/lite0-bundle/extractor.onnx")).expect("Lite0 extractor");
    tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(onnx))
        .and_then(|m| m.into_typed())
        .unwrap()
}

/// The Pi 4 rung's Lite0 extractor (int8 `QLinearConv` layers) in tract's own optimized plan,
/// with tract's int8 scaffolding taken over by the project step by step (activation sums, zero
/// weight-zero-point corrections skipped, requantization fused, float-to-int8 quantizers):
/// every step gives bit-identical taps (the depthwise layers are compared above, on their own).
#[test]
fn project_int8_steps_give_tracts_int8_extractor_exactly() {
    let tracts = optimize(lite0_extractor(), Kernels::Tract).unwrap();
    let ops = |model: &TypedModel, name: &str| {
        model
            .nodes()
            .iter()
            .filter(|n| n.op().name() == name)
            .count()
    };
    let shape = input_shape(&tracts);
    let x = noise(shape.iter().product(), 11);
    let sums = ops(&tracts, "Reduce<Sum>");
    let scales = ops(&tracts, "Scale");
    assert!(sums >= 10, "tract's plan has {sums} integer sums");
    let (plan, _) = live(tracts.clone());
    let want = run_plan(&plan, &[(&shape, &x)]).unwrap();
    assert_eq!(want.len(), 2);
    assert!(want.iter().all(|tap| tap.iter().any(|v| *v != 0.0)));

    let mut step = tracts.clone();
    assert_eq!(use_project_sums(&mut step).unwrap(), sums);
    assert_eq!(ops(&step, "ProjectIntSum"), sums);
    assert_eq!(ops(&step, "Reduce<Sum>"), 0);
    let (plan, _) = live(step.clone());
    assert_eq!(
        run_plan(&plan, &[(&shape, &x)]).unwrap(),
        want,
        "integer sums"
    );

    // The project's quantizer writes symmetric weights: every int8 convolution's correction is
    // zero (one `Scale` per int8 convolution).
    let skipped = skip_zero_corrections(&mut step).unwrap();
    assert_eq!(skipped, scales);
    let (plan, names) = live(step.clone());
    assert!(
        !names.iter().any(|n| n == "ProjectIntSum"),
        "sums still run: {names:?}"
    );
    assert_eq!(
        run_plan(&plan, &[(&shape, &x)]).unwrap(),
        want,
        "corrections skipped"
    );

    let fused = use_project_requantize(&mut step).unwrap();
    assert_eq!(fused, scales);
    let (plan, names) = live(step.clone());
    assert!(!names.iter().any(|n| n == "Scale"), "{names:?}");
    assert_eq!(
        run_plan(&plan, &[(&shape, &x)]).unwrap(),
        want,
        "requantization fused"
    );

    let quantizers = ops(&step, "QuantizeLinearI8");
    assert!(quantizers >= 10, "{quantizers} float-to-int8 quantizers");
    assert_eq!(use_project_quantize(&mut step).unwrap(), quantizers);
    let (plan, names) = live(step);
    assert!(!names.iter().any(|n| n == "QuantizeLinearI8"), "{names:?}");
    assert_eq!(
        run_plan(&plan, &[(&shape, &x)]).unwrap(),
        want,
        "quantizers replaced"
    );
    eprintln!(
        "{sums} sums replaced, {skipped} zero corrections skipped, {fused} tails fused, \
         {quantizers} quantizers replaced"
    );
}

/// The Lite0 int8 extractor as the daemon's plan has it, with and without the quantizers
/// folded into the depthwise ops they follow: the fused op quantizes the floats it computed
/// with the same function, so the taps are bit-identical, and no quantizer is left after a
/// depthwise op.
#[test]
fn quantizers_fold_into_depthwise_without_changing_the_lite0_extractor() {
    let mut model = lite0_extractor().into_decluttered().unwrap();
    let depthwise = use_project_kernels(&mut model).unwrap();
    let mut model = model.into_optimized().unwrap();
    use_project_sums(&mut model).unwrap();
    skip_zero_corrections(&mut model).unwrap();
    use_project_requantize(&mut model).unwrap();
    use_project_quantize(&mut model).unwrap();
    let unfused = model.clone().into_runnable().unwrap();
    let fused = fuse_depthwise_quantize(&mut model).unwrap();
    // Each depthwise layer of the int8 extractor is followed by its quantizer.
    assert!(depthwise >= 10, "{depthwise} depthwise layers");
    assert_eq!(fused, depthwise);
    let shape = input_shape(&model);
    let (plan, names) = live(model);
    for pair in names.windows(2) {
        assert!(
            !(pair[0] == "ProjectDepthwiseConv" && pair[1] == "ProjectQuantize"),
            "a quantizer still follows a depthwise op: {names:?}"
        );
    }
    for seed in [3, 4] {
        let x = noise(shape.iter().product(), seed);
        let want = run_plan(&unfused, &[(&shape, &x)]).unwrap();
        assert!(want.iter().all(|tap| tap.iter().any(|v| *v != 0.0)));
        assert_eq!(
            run_plan(&plan, &[(&shape, &x)]).unwrap(),
            want,
            "seed {seed}"
        );
    }
    eprintln!("{fused} quantizers folded into {depthwise} depthwise layers");
}
