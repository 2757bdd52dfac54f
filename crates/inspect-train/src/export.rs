//! The flows as the daemon's `head.onnx`, written with the project's ONNX writer: per level an
//! input `tap` (`N x C x h x w`) and an output `logp` (`N x h x w`), the same function as
//! [`crate::flow::Decoder::forward`] on the fibers of each position, conditioned on the
//! positional encoding of that position.
//!
//! Constants are folded on the host, in f64, so that the graph is small and quick in tract:
//! `0.1` and `1/1.9` go into the second layer, split in its `a_s` and `a_t` halves; the global
//! affine and the rotation become one matrix `diag(scale) R^T`, split by rows for `x1` and
//! `x2'`, plus the constant `offset R^T`. No Concat, no Slice of the condition, no Transpose
//! after the first. The condition's share of the first subnet layer, `P W1c^T + b1`, stays a
//! MatMul of constants in the file: tract folds it into one `hw x 2d` constant when it optimizes
//! the plan, while the file holds only `P` (`hw x 128`, once per level) and `W1c`, which keeps a
//! Lite0 head at a fraction of the size of the folded form.

use crate::flow::coupling::{BlockWeights, CLAMP};
use crate::flow::decoder::HALF_LOG_2PI;
use crate::flow::positional::positional_fibers;
use inspect_core::bundle::tap_name;
use inspect_core::onnx::{Attr, Dim, ModelBuilder, OnnxWriteError};

/// One level of the head.
#[derive(Clone, Debug)]
pub struct LevelHead<'a> {
    /// Input name (the extractor's tap).
    pub tap: String,
    /// Output name.
    pub logp: String,
    /// Feature-map rows.
    pub height: usize,
    /// Feature-map columns.
    pub width: usize,
    /// The decoder's blocks.
    pub blocks: &'a [BlockWeights],
}

impl<'a> LevelHead<'a> {
    /// A level named as the bundle convention does (`tap{stride}`, `logp{stride}`).
    pub fn named(stride: usize, height: usize, width: usize, blocks: &'a [BlockWeights]) -> Self {
        LevelHead {
            tap: tap_name(stride),
            logp: inspect_core::bundle::logp_name(stride),
            height,
            width,
            blocks,
        }
    }
}

/// Row-major `rows x cols` product `a (rows x k) * b (k x cols)`, in f64.
fn matmul(a: &[f64], b: &[f64], rows: usize, k: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for i in 0..rows {
        for t in 0..k {
            let av = a[i * k + t];
            if av == 0.0 {
                continue;
            }
            for j in 0..cols {
                out[i * cols + j] += av * b[t * cols + j];
            }
        }
    }
    out
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Columns `from..to` of the `rows x cols` matrix `w` (out x in), transposed: `(to-from) x rows`.
fn columns_transposed(w: &[f32], rows: usize, cols: usize, from: usize, to: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity((to - from) * rows);
    for c in from..to {
        for r in 0..rows {
            out.push(w[r * cols + c] as f64);
        }
    }
    out
}

/// Rows `from..to` of `w` (out x in), transposed: `in x (to-from)`, scaled by `k`.
fn rows_transposed(w: &[f32], cols: usize, from: usize, to: usize, k: f64) -> Vec<f64> {
    let mut out = vec![0.0; cols * (to - from)];
    for r in from..to {
        for c in 0..cols {
            out[c * (to - from) + (r - from)] = w[r * cols + c] as f64 * k;
        }
    }
    out
}

/// Writes the head ONNX of `levels` (batch size symbolic `N`).
pub fn head_onnx(levels: &[LevelHead]) -> Result<Vec<u8>, OnnxWriteError> {
    let mut b = ModelBuilder::new("cflow-head");
    let mut outputs = Vec::new();
    for level in levels {
        let logp = level_graph(&mut b, level);
        outputs.push((logp, level.height, level.width));
    }
    for (name, h, w) in outputs {
        b.output(&name, &["N".into(), Dim::Fixed(h), Dim::Fixed(w)]);
    }
    b.to_bytes()
}

/// Adds one level's graph; returns its output name.
fn level_graph(b: &mut ModelBuilder, level: &LevelHead) -> String {
    let c = level.blocks.first().map_or(0, |w| w.channels);
    let (h, w) = (level.height, level.width);
    let hw = h * w;
    let x = b.input(
        &level.tap,
        &["N".into(), Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)],
    );
    let flat = b.reshape(&x, &[0, c as i64, hw as i64]);
    let mut f = b.node(
        "Transpose",
        &[&flat],
        vec![("perm", Attr::Ints(vec![0, 2, 1]))],
    );
    let (s1, s2) = (c - c / 2, c / 2);
    let mut ldj: Option<String> = None;
    let mut ldj_constant = 0.0f64;
    let d_cond = level.blocks.first().map_or(0, |w| w.condition);
    let positional = b.constant(
        "positional",
        &[hw, d_cond],
        &positional_fibers(d_cond, h, w),
    );
    for block in level.blocks {
        let d = block.subnet_input();
        let starts = b.constant_i64("starts", &[1], &[0]);
        let split = b.constant_i64("split", &[1], &[s1 as i64]);
        let end = b.constant_i64("end", &[1], &[c as i64]);
        let axis = b.constant_i64("axis", &[1], &[2]);
        let x1 = b.node("Slice", &[&f, &starts, &split, &axis], vec![]);
        let x2 = b.node("Slice", &[&f, &split, &end, &axis], vec![]);

        // Layer 1: x1 W1a^T + (P W1c^T + b1).
        let w1a = columns_transposed(&block.hidden_weight, 2 * d, d, 0, s1);
        let w1c = columns_transposed(&block.hidden_weight, 2 * d, d, s1, d);
        let w1a = b.constant("w1a", &[s1, 2 * d], &f32s(&w1a));
        let w1c = b.constant("w1c", &[d_cond, 2 * d], &f32s(&w1c));
        let b1 = b.constant("b1", &[2 * d], &block.hidden_bias);
        let pc = b.node("MatMul", &[&positional, &w1c], vec![]);
        let pc = b.node("Add", &[&pc, &b1], vec![]);
        let h1 = b.node("MatMul", &[&x1, &w1a], vec![]);
        let h1 = b.node("Add", &[&h1, &pc], vec![]);
        let h1 = b.node("Relu", &[&h1], vec![]);

        // Layer 2, split: a_s / 1.9 and a_t, with the 0.1 folded in.
        let ks = 0.1 / CLAMP as f64;
        let w2s = rows_transposed(&block.output_weight, 2 * d, 0, s2, ks);
        let b2s: Vec<f64> = block.output_bias[..s2]
            .iter()
            .map(|&v| v as f64 * ks)
            .collect();
        let w2t = rows_transposed(&block.output_weight, 2 * d, s2, 2 * s2, 0.1);
        let b2t: Vec<f64> = block.output_bias[s2..]
            .iter()
            .map(|&v| v as f64 * 0.1)
            .collect();
        let w2s = b.constant("w2s", &[2 * d, s2], &f32s(&w2s));
        let b2s = b.constant("b2s", &[s2], &f32s(&b2s));
        let w2t = b.constant("w2t", &[2 * d, s2], &f32s(&w2t));
        let b2t = b.constant("b2t", &[s2], &f32s(&b2t));
        let a_s = b.node("MatMul", &[&h1, &w2s], vec![]);
        let a_s = b.node("Add", &[&a_s, &b2s], vec![]);
        let a_t = b.node("MatMul", &[&h1, &w2t], vec![]);
        let a_t = b.node("Add", &[&a_t, &b2t], vec![]);
        let t = b.node("Tanh", &[&a_s], vec![]);
        let s = b.binary_const("Mul", &t, &[], &[CLAMP]);
        let e = b.node("Exp", &[&s], vec![]);
        let x2 = b.node("Mul", &[&x2, &e], vec![]);
        let x2 = b.node("Add", &[&x2, &a_t], vec![]);

        // Global affine and rotation: y = x1 A[:s1] + x2' A[s1:] + offset R^T, A = diag(scale) R^T.
        let scale: Vec<f64> = block
            .global_scale
            .iter()
            .map(|&g| 0.2 * (0.5 * g as f64).exp().ln_1p())
            .collect();
        let rt: Vec<f64> = (0..c * c)
            .map(|i| block.rotation[(i % c) * c + i / c] as f64)
            .collect(); // R^T, row-major
        let a: Vec<f64> = (0..c * c).map(|i| scale[i / c] * rt[i]).collect();
        let offset_rt = matmul(&f64s(&block.global_offset), &rt, 1, c, c);
        let a1 = b.constant("affine1", &[s1, c], &f32s(&a[..s1 * c]));
        let a2 = b.constant("affine2", &[s2, c], &f32s(&a[s1 * c..]));
        let offset = b.constant("offset", &[c], &f32s(&offset_rt));
        let y1 = b.node("MatMul", &[&x1, &a1], vec![]);
        let y2 = b.node("MatMul", &[&x2, &a2], vec![]);
        let y = b.node("Add", &[&y1, &y2], vec![]);
        f = b.node("Add", &[&y, &offset], vec![]);

        let axes = b.constant_i64("axes", &[1], &[2]);
        let sum_s = b.node("ReduceSum", &[&s, &axes], vec![("keepdims", Attr::Int(0))]);
        ldj = Some(match ldj {
            Some(total) => b.node("Add", &[&total, &sum_s], vec![]),
            None => sum_s,
        });
        ldj_constant += scale.iter().map(|v| v.ln()).sum::<f64>();
    }
    // log p = -0.5 sum z^2 + ldj + (sum of ln scale - C ln(2 pi)/2).
    let z2 = b.node("Mul", &[&f, &f], vec![]);
    let axes = b.constant_i64("axes", &[1], &[2]);
    let sum_z2 = b.node("ReduceSum", &[&z2, &axes], vec![("keepdims", Attr::Int(0))]);
    let half = b.binary_const("Mul", &sum_z2, &[], &[-0.5]);
    let constant = ldj_constant - c as f64 * HALF_LOG_2PI as f64;
    let logp = match ldj {
        Some(ldj) => b.node("Add", &[&half, &ldj], vec![]),
        None => half,
    };
    let logp = b.binary_const("Add", &logp, &[], &[constant as f32]);
    b.reshape(&logp, &[0, h as i64, w as i64]);
    b.name_last_output(&level.logp)
}
