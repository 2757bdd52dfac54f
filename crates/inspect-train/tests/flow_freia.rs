//! The flows against FrEIA's own outputs (tests/data/freia, trimmed from FrEIA's AllInOneBlock
//! run in float64 by tests/reference/trim_freia.py): one block with a rotation, one with a hard
//! permutation, and a whole 8-block decoder; z, log|det J|, log p and d(sum log p)/dx, in f32,
//! for burn's flows and for the hand-written CPU flow; and the CPU flow's parameter gradients
//! against FrEIA's (`param_grads.bin`, written by tests/reference/freia_grads.py).
#![cfg(feature = "train")]

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use inspect_train::flow::cpu::{Flow, LossGrads, Scratch, Tape};
use inspect_train::flow::positional::positional_encoding;
use inspect_train::flow::{BlockWeights, Decoder};
use serde_json::Value;

struct Fixture {
    json: Value,
    weights: Vec<f32>,
}

fn fixture() -> Fixture {
    let dir = common::repo_root().join("tests/data/freia");
    let json = serde_json::from_slice(&std::fs::read(dir.join("vectors.json")).unwrap()).unwrap();
    let weights = std::fs::read(dir.join("weights.bin"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Fixture { json, weights }
}

impl Fixture {
    /// A stored tensor: (values, shape).
    fn tensor(&self, entry: &Value) -> (Vec<f32>, Vec<usize>) {
        let shape: Vec<usize> = entry["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let offset = entry["offset"].as_u64().unwrap() as usize;
        let len = shape.iter().product::<usize>();
        (self.weights[offset..offset + len].to_vec(), shape)
    }
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn vector(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn block_weights(f: &Fixture, case: &Value, block: &Value) -> BlockWeights {
    let c = case["C"].as_u64().unwrap() as usize;
    let get = |name: &str| f.tensor(&block[name]).0;
    let (perm, shape) = f.tensor(&block["w_perm"]);
    // A hard permutation is stored as indices: y = v[:, perm], i.e. R[j][perm[j]] = 1.
    let rotation = if shape == [c] {
        let mut r = vec![0.0; c * c];
        for (j, p) in perm.iter().enumerate() {
            r[j * c + *p as usize] = 1.0;
        }
        r
    } else {
        perm
    };
    BlockWeights {
        channels: c,
        condition: case["cond_dim"].as_u64().unwrap() as usize,
        hidden_weight: get("subnet.0.weight"),
        hidden_bias: get("subnet.0.bias"),
        output_weight: get("subnet.2.weight"),
        output_bias: get("subnet.2.bias"),
        global_scale: get("global_scale"),
        global_offset: get("global_offset"),
        rotation,
    }
}

fn tensor(rows: &[Vec<f64>], device: &Device) -> Tensor<2> {
    let (n, c) = (rows.len(), rows[0].len());
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    Tensor::from_data(TensorData::new(flat, [n, c]), device)
}

fn values<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
    t.to_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Largest |a - b| / max(1, |b|).
fn worst(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
        .fold(0.0, f64::max)
}

#[test]
fn blocks_and_decoders_equal_freia() {
    let f = fixture();
    let cases = f.json["cases"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 3);
    let device = Device::flex().autodiff();
    for case in &cases {
        let name = format!(
            "C={} blocks={} soft={}",
            case["C"],
            case["blocks"].as_array().unwrap().len(),
            case["permute_soft"]
        );
        let weights: Vec<BlockWeights> = case["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| block_weights(&f, case, b))
            .collect();
        let decoder = Decoder::from_weights(&weights, &device);
        assert_eq!(decoder.to_weights(), weights, "{name}: weights round-trip");

        let x = tensor(&matrix(&case["x"]), &device).require_grad();
        let cond = tensor(&matrix(&case["cond"]), &device);
        let out = decoder.forward(x.clone(), cond);
        let z_want: Vec<f64> = matrix(&case["z"]).into_iter().flatten().collect();
        let checks = [
            ("z", worst(&values(&out.z), &z_want)),
            (
                "log_jac_det",
                worst(&values(&out.log_jac_det), &vector(&case["log_jac_det"])),
            ),
            ("logp", worst(&values(&out.logp), &vector(&case["logp"]))),
        ];
        let grads = out.logp.sum().backward();
        let dx = x.grad(&grads).expect("x requires a gradient");
        let dx_want: Vec<f64> = matrix(&case["dlogp_dx"]).into_iter().flatten().collect();
        let grad_error = worst(&values(&dx), &dx_want);
        for (what, error) in checks.iter().chain([("dlogp_dx", grad_error)].iter()) {
            println!("{name}: {what} worst relative error {error:.2e}");
            assert!(*error < 1e-5, "{name}: {what} off by {error:.2e}");
        }
    }
}

#[test]
fn positional_encoding_equals_cflow() {
    let f = fixture();
    let pe = &f.json["positional_encoding"];
    let (want, shape) = f.tensor(&pe["P"]);
    assert_eq!(shape, [128, 6, 8]);
    let got = positional_encoding(128, 6, 8);
    let error = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(error < 1e-6, "max difference {error:.2e}");
}

/// The cases with their weights, named for messages.
fn cases(f: &Fixture) -> Vec<(String, Value, Vec<BlockWeights>)> {
    f.json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let name = format!(
                "C={} blocks={} soft={}",
                case["C"],
                case["blocks"].as_array().unwrap().len(),
                case["permute_soft"]
            );
            let weights = case["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| block_weights(f, case, b))
                .collect();
            (name, case.clone(), weights)
        })
        .collect()
}

/// Forward and backward of `sum(log p)` on the CPU flow: (tape, flow with its parameter
/// gradients, d/dx).
fn cpu_sum_logp(weights: &[BlockWeights], case: &Value) -> (Tape, Flow, Vec<f32>) {
    let mut flow = Flow::from_weights(weights);
    let x: Vec<f32> = matrix(&case["x"])
        .into_iter()
        .flatten()
        .map(|v| v as f32)
        .collect();
    let cond: Vec<f32> = matrix(&case["cond"])
        .into_iter()
        .flatten()
        .map(|v| v as f32)
        .collect();
    let c = flow.shape().channels;
    let n = x.len() / c;
    let mut tape = Tape::new(&flow, n);
    tape.input()[..n * c].copy_from_slice(&x);
    flow.forward(&mut tape, &cond, n);
    let mut grads = LossGrads::new(c, n);
    grads.logp.fill(1.0);
    grads.chain(&tape);
    let mut scratch = Scratch::new(&flow, n);
    flow.grads.fill(0.0);
    flow.backward(&tape, &grads.z, &grads.log_jac_det, &mut scratch, true);
    let dx = scratch.input_grad(n).to_vec();
    (tape, flow, dx)
}

#[test]
fn cpu_flow_equals_freia() {
    let f = fixture();
    for (name, case, weights) in cases(&f) {
        let (tape, flow, dx) = cpu_sum_logp(&weights, &case);
        assert_eq!(flow.to_weights(), weights, "{name}: weights round-trip");
        let f64s = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        let flat = |key: &str| matrix(&case[key]).into_iter().flatten().collect::<Vec<_>>();
        let checks = [
            ("z", worst(&f64s(tape.z()), &flat("z"))),
            (
                "log_jac_det",
                worst(&f64s(tape.log_jac_det()), &vector(&case["log_jac_det"])),
            ),
            ("logp", worst(&f64s(tape.logp()), &vector(&case["logp"]))),
            ("dlogp_dx", worst(&f64s(&dx), &flat("dlogp_dx"))),
        ];
        for (what, error) in checks {
            println!("cpu {name}: {what} worst relative error {error:.2e}");
            assert!(error < 1e-5, "cpu {name}: {what} off by {error:.2e}");
        }
    }
}

#[test]
fn cpu_parameter_gradients_equal_freia() {
    let f = fixture();
    let dir = common::repo_root().join("tests/data/freia");
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("param_grads.json")).unwrap()).unwrap();
    let values: Vec<f64> = std::fs::read(dir.join("param_grads.bin"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect();
    let want = index["cases"].as_array().unwrap();
    let cases = cases(&f);
    assert_eq!(want.len(), cases.len());
    for ((name, case, weights), entry) in cases.iter().zip(want) {
        let (_, flow, _) = cpu_sum_logp(weights, case);
        // Both laid out block by block: W1, b1, W2, b2, g, offset (FrEIA's shapes, row-major).
        let at = |key: &str| entry[key].as_u64().unwrap() as usize;
        let expected = &values[at("offset")..at("offset") + at("len")];
        let got: Vec<f64> = flow.grads.iter().map(|&v| f64::from(v)).collect();
        let c = case["C"].as_u64().unwrap() as usize;
        let cond = case["cond_dim"].as_u64().unwrap() as usize;
        let error = common::gradient_error(&got, expected, c, cond);
        println!("cpu {name}: parameter gradients worst error per tensor {error:.2e}");
        assert!(
            error < 1e-5,
            "cpu {name}: parameter gradients off by {error:.2e}"
        );
    }
}
