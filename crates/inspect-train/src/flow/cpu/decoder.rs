//! One level's flow (8 `AllInOneBlock`s), forward and backward written out by hand. The
//! formulas are DESIGN.md's "Decoder per level"; the derivatives, for a block with input `x`,
//! upstream gradients `gy` (of the output) and `gj` (of each fiber's `log|det J|`):
//!
//! ```text
//! gv = gy R                         g_offset = sum_n gv
//! g_scale = sum_n gv * u + sum_n gj / scale,   g_g = g_scale * 0.1 * sigmoid(0.5 g)
//! gu = gv * scale;  gx1 = gu1;  gx2 = gu2 * e^s
//! ga_t = gu2;  ga_s = (gu2 * x2 * e^s + gj) (1 - tanh^2(a_s / 1.9));  ga' = 0.1 ga
//! gW2 = ga'^T h;  gb2 = sum_n ga';  gh = (ga' W2) [h > 0]
//! gW1 = gh^T [x1, c];  gb1 = sum_n gh;  gx1 += gh W1[:, :s1]
//! ```
//!
//! Every buffer is allocated once for the largest fiber batch ([`Tape`], [`Scratch`]); a step
//! allocates nothing.

use super::gemm::{matmul, View};
use crate::flow::coupling::{BlockWeights, CLAMP};
use crate::flow::decoder::HALF_LOG_2PI;

/// Sizes of one block of a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockShape {
    /// Channels `C`.
    pub channels: usize,
    /// Condition size `D`.
    pub condition: usize,
}

impl BlockShape {
    /// `s1 = C - floor(C/2)`: the channels that pass unchanged and feed the subnet.
    pub fn kept(&self) -> usize {
        self.channels - self.channels / 2
    }
    /// `floor(C/2)`: the channels the coupling transforms.
    pub fn coupled(&self) -> usize {
        self.channels / 2
    }
    /// Subnet input `d = s1 + D`.
    pub fn subnet_input(&self) -> usize {
        self.kept() + self.condition
    }
    /// Subnet hidden width `2d`.
    pub fn hidden(&self) -> usize {
        2 * self.subnet_input()
    }
    /// Subnet output `2 floor(C/2)`.
    pub fn subnet_output(&self) -> usize {
        2 * self.coupled()
    }
    /// Trainable floats per block: W1, b1, W2, b2, g, offset.
    pub fn parameters(&self) -> usize {
        let (d, h, o, c) = (
            self.subnet_input(),
            self.hidden(),
            self.subnet_output(),
            self.channels,
        );
        h * d + h + o * h + o + 2 * c
    }
    /// Where each parameter starts in a block's slice: W1, b1, W2, b2, g, offset.
    fn offsets(&self) -> [usize; 6] {
        let (d, h, o, c) = (
            self.subnet_input(),
            self.hidden(),
            self.subnet_output(),
            self.channels,
        );
        let w1 = 0;
        let b1 = w1 + h * d;
        let w2 = b1 + h;
        let b2 = w2 + o * h;
        let g = b2 + o;
        [w1, b1, w2, b2, g, g + c]
    }
}

/// A block's parameters as slices of its part of the level's buffer.
struct Params<'a> {
    w1: &'a [f32],
    b1: &'a [f32],
    w2: &'a [f32],
    b2: &'a [f32],
    g: &'a [f32],
    offset: &'a [f32],
}

fn split<'a>(shape: &BlockShape, p: &'a [f32]) -> Params<'a> {
    let [w1, b1, w2, b2, g, off] = shape.offsets();
    Params {
        w1: &p[w1..b1],
        b1: &p[b1..w2],
        w2: &p[w2..b2],
        b2: &p[b2..g],
        g: &p[g..off],
        offset: &p[off..off + shape.channels],
    }
}

/// The global affine scale `0.2 ln(1 + e^(0.5 g))`.
fn scale_of(g: f32) -> f32 {
    (0.5 * g).exp().ln_1p() * 0.2
}

/// The trainable flow of one level: every block's parameters in one contiguous buffer (one
/// fused optimizer pass), the fixed rotations beside them.
#[derive(Clone, Debug)]
pub struct Flow {
    shape: BlockShape,
    blocks: usize,
    /// All parameters, block `k` at `k * shape.parameters()`.
    pub params: Vec<f32>,
    /// Their gradients, same layout.
    pub grads: Vec<f32>,
    rotations: Vec<f32>,
}

impl Flow {
    /// The flow holding `weights` (one entry per block, all of one shape).
    pub fn from_weights(weights: &[BlockWeights]) -> Flow {
        let first = weights.first().expect("a flow has at least one block");
        let shape = BlockShape {
            channels: first.channels,
            condition: first.condition,
        };
        let mut params = Vec::with_capacity(shape.parameters() * weights.len());
        let mut rotations = Vec::with_capacity(shape.channels.pow(2) * weights.len());
        for w in weights {
            assert_eq!((w.channels, w.condition), (shape.channels, shape.condition));
            for part in [
                &w.hidden_weight,
                &w.hidden_bias,
                &w.output_weight,
                &w.output_bias,
                &w.global_scale,
                &w.global_offset,
            ] {
                params.extend_from_slice(part);
            }
            rotations.extend_from_slice(&w.rotation);
        }
        assert_eq!(params.len(), shape.parameters() * weights.len());
        Flow {
            shape,
            blocks: weights.len(),
            grads: vec![0.0; params.len()],
            params,
            rotations,
        }
    }

    /// Every block's weights, in FrEIA's conventions.
    pub fn to_weights(&self) -> Vec<BlockWeights> {
        let (n, c) = (self.shape.parameters(), self.shape.channels);
        (0..self.blocks)
            .map(|k| {
                let p = split(&self.shape, &self.params[k * n..(k + 1) * n]);
                BlockWeights {
                    channels: c,
                    condition: self.shape.condition,
                    hidden_weight: p.w1.to_vec(),
                    hidden_bias: p.b1.to_vec(),
                    output_weight: p.w2.to_vec(),
                    output_bias: p.b2.to_vec(),
                    global_scale: p.g.to_vec(),
                    global_offset: p.offset.to_vec(),
                    rotation: self.rotations[k * c * c..(k + 1) * c * c].to_vec(),
                }
            })
            .collect()
    }

    /// The block shape.
    pub fn shape(&self) -> BlockShape {
        self.shape
    }

    /// Blocks.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Runs the flow on the first `rows` fibers of `tape.input()` (rows of `C`) under
    /// `cond` (rows of `D`), keeping what the backward pass needs in `tape`: then
    /// [`Tape::z`], [`Tape::log_jac_det`] and [`Tape::logp`] hold the result.
    pub fn forward(&self, tape: &mut Tape, cond: &[f32], rows: usize) {
        let sh = self.shape;
        let (c, d, hd, o, s1, s2, cd) = (
            sh.channels,
            sh.subnet_input(),
            sh.hidden(),
            sh.subnet_output(),
            sh.kept(),
            sh.coupled(),
            sh.condition,
        );
        assert!(rows <= tape.capacity, "more fibers than the tape holds");
        assert!(cond.len() >= rows * cd, "condition too short");
        tape.rows = rows;
        let per = sh.parameters();
        tape.ldj[..rows].fill(0.0);
        for k in 0..self.blocks {
            let p = split(&sh, &self.params[k * per..(k + 1) * per]);
            let rotation = &self.rotations[k * c * c..(k + 1) * c * c];
            let (done, rest) = tape.blocks.split_at_mut(k + 1);
            let b = &mut done[k];
            let out: &mut [f32] = match rest.first_mut() {
                Some(next) => &mut next.x,
                None => &mut tape.z,
            };
            // inp = [x1, cond]
            for r in 0..rows {
                let row = &mut b.inp[r * d..(r + 1) * d];
                row[..s1].copy_from_slice(&b.x[r * c..r * c + s1]);
                row[s1..].copy_from_slice(&cond[r * cd..(r + 1) * cd]);
            }
            // h = relu(inp W1^T + b1)
            matmul(
                &mut b.h,
                hd,
                false,
                View::rows(&b.inp, rows, d),
                View::rows(p.w1, hd, d).t(),
            );
            for row in b.h.chunks_exact_mut(hd).take(rows) {
                for (v, bias) in row.iter_mut().zip(p.b1) {
                    *v = (*v + bias).max(0.0);
                }
            }
            // a = 0.1 (h W2^T + b2)
            matmul(
                &mut tape.a,
                o,
                false,
                View::rows(&b.h, rows, hd),
                View::rows(p.w2, o, hd).t(),
            );
            let ldj_const: f32 = p.g.iter().map(|&g| scale_of(g).ln()).sum();
            for (j, &g) in p.g.iter().enumerate() {
                tape.scale[j] = scale_of(g);
            }
            for r in 0..rows {
                let a = &tape.a[r * o..(r + 1) * o];
                let x = &b.x[r * c..(r + 1) * c];
                let u = &mut b.u[r * c..(r + 1) * c];
                let t = &mut b.t[r * s2..(r + 1) * s2];
                let e = &mut b.e[r * s2..(r + 1) * s2];
                u[..s1].copy_from_slice(&x[..s1]);
                let mut sum_s = 0.0f32;
                for j in 0..s2 {
                    let a_s = 0.1 * (a[j] + p.b2[j]);
                    let a_t = 0.1 * (a[s2 + j] + p.b2[s2 + j]);
                    let th = (a_s / CLAMP).tanh();
                    let s = CLAMP * th;
                    let es = s.exp();
                    t[j] = th;
                    e[j] = es;
                    u[s1 + j] = x[s1 + j] * es + a_t;
                    sum_s += s;
                }
                tape.ldj[r] += sum_s + ldj_const;
                // v = u * scale + offset (into the scratch row, then rotated below)
                let v = &mut tape.v[r * c..(r + 1) * c];
                for j in 0..c {
                    v[j] = u[j] * tape.scale[j] + p.offset[j];
                }
            }
            // y = v R^T
            matmul(
                out,
                c,
                false,
                View::rows(&tape.v, rows, c),
                View::rows(rotation, c, c).t(),
            );
        }
        let base = -(c as f32) * HALF_LOG_2PI;
        for r in 0..rows {
            let z = &tape.z[r * c..(r + 1) * c];
            let sq: f32 = z.iter().map(|v| v * v).sum();
            tape.logp[r] = base - 0.5 * sq + tape.ldj[r];
        }
    }

    /// Adds to [`Flow::grads`] the gradient of a loss whose gradients with respect to the
    /// tape's `z` (rows of `C`) and `log|det J|` are `gz` and `gldj`. With `want_input`, [`Scratch::input_grad`] holds the gradient of the input fibers.
    pub fn backward(
        &mut self,
        tape: &Tape,
        gz: &[f32],
        gldj: &[f32],
        scratch: &mut Scratch,
        want_input: bool,
    ) {
        let sh = self.shape;
        let (c, d, hd, o, s1, s2) = (
            sh.channels,
            sh.subnet_input(),
            sh.hidden(),
            sh.subnet_output(),
            sh.kept(),
            sh.coupled(),
        );
        let rows = tape.rows;
        let per = sh.parameters();
        let sum_gldj: f32 = gldj[..rows].iter().sum();
        // `gy` of the current block lives in `gz` (the last block's output) or in
        // `scratch.gx` (written by the block after it); swapped as we go down.
        let mut gy_in_gz = true;
        for k in (0..self.blocks).rev() {
            let (param_part, grad_part) = (
                &self.params[k * per..(k + 1) * per],
                &mut self.grads[k * per..(k + 1) * per],
            );
            let p = split(&sh, param_part);
            let [o_w1, o_b1, o_w2, o_b2, o_g, o_off] = sh.offsets();
            let rotation = &self.rotations[k * c * c..(k + 1) * c * c];
            let b = &tape.blocks[k];
            let gy: &[f32] = if gy_in_gz { gz } else { &scratch.gx };
            // gv = gy R
            matmul(
                &mut scratch.gv,
                c,
                false,
                View::rows(gy, rows, c),
                View::rows(rotation, c, c),
            );
            // Column sums of gv and gv * u, row by row (contiguous, vectorised).
            scratch.sum_gv[..c].fill(0.0);
            scratch.sum_gvu[..c].fill(0.0);
            for r in 0..rows {
                let gv = &scratch.gv[r * c..(r + 1) * c];
                let u = &b.u[r * c..(r + 1) * c];
                for ((sg, sgu), (g, uv)) in scratch
                    .sum_gv
                    .iter_mut()
                    .zip(scratch.sum_gvu.iter_mut())
                    .zip(gv.iter().zip(u))
                {
                    *sg += g;
                    *sgu += g * uv;
                }
            }
            for j in 0..c {
                let scale = scale_of(p.g[j]);
                let g_scale = scratch.sum_gvu[j] + sum_gldj / scale;
                let sig = 1.0 / (1.0 + (-0.5 * p.g[j]).exp());
                grad_part[o_off + j] += scratch.sum_gv[j];
                grad_part[o_g + j] += g_scale * 0.1 * sig;
                scratch.scale[j] = scale;
            }
            // gx (next gy) and ga'
            let gx = &mut scratch.gx_next;
            for r in 0..rows {
                let gv = &scratch.gv[r * c..(r + 1) * c];
                let x = &b.x[r * c..(r + 1) * c];
                let t = &b.t[r * s2..(r + 1) * s2];
                let e = &b.e[r * s2..(r + 1) * s2];
                let gx_row = &mut gx[r * c..(r + 1) * c];
                let ga = &mut scratch.ga[r * o..(r + 1) * o];
                for j in 0..s1 {
                    gx_row[j] = gv[j] * scratch.scale[j];
                }
                for j in 0..s2 {
                    let gu2 = gv[s1 + j] * scratch.scale[s1 + j];
                    gx_row[s1 + j] = gu2 * e[j];
                    let gs = gu2 * x[s1 + j] * e[j] + gldj[r];
                    ga[j] = 0.1 * gs * (1.0 - t[j] * t[j]);
                    ga[s2 + j] = 0.1 * gu2;
                }
            }
            for r in 0..rows {
                let ga = &scratch.ga[r * o..(r + 1) * o];
                for (acc, v) in grad_part[o_b2..o_b2 + o].iter_mut().zip(ga) {
                    *acc += v;
                }
            }
            // gW2 += ga'^T h
            matmul(
                &mut grad_part[o_w2..o_b2],
                hd,
                true,
                View::rows(&scratch.ga, rows, o).t(),
                View::rows(&b.h, rows, hd),
            );
            // gh = (ga' W2) [h > 0]
            matmul(
                &mut scratch.gh,
                hd,
                false,
                View::rows(&scratch.ga, rows, o),
                View::rows(p.w2, o, hd),
            );
            for (g, h) in scratch.gh[..rows * hd].iter_mut().zip(&b.h[..rows * hd]) {
                if *h <= 0.0 {
                    *g = 0.0;
                }
            }
            for r in 0..rows {
                let gh = &scratch.gh[r * hd..(r + 1) * hd];
                for (acc, v) in grad_part[o_b1..o_w2].iter_mut().zip(gh) {
                    *acc += v;
                }
            }
            // gW1 += gh^T inp
            matmul(
                &mut grad_part[o_w1..o_b1],
                d,
                true,
                View::rows(&scratch.gh, rows, hd).t(),
                View::rows(&b.inp, rows, d),
            );
            // gx1 += gh W1[:, :s1] (the first block's input gradient only when asked)
            if k > 0 || want_input {
                matmul(
                    &mut scratch.gx_next,
                    c,
                    true,
                    View::rows(&scratch.gh, rows, hd),
                    View::rows(p.w1, hd, d).columns(0, s1),
                );
            }
            std::mem::swap(&mut scratch.gx, &mut scratch.gx_next);
            gy_in_gz = false;
        }
    }
}

/// What one block's forward keeps for the backward pass.
#[derive(Clone, Debug)]
struct BlockTape {
    /// Input fibers, rows of `C`.
    x: Vec<f32>,
    /// `[x1, cond]`, rows of `d`.
    inp: Vec<f32>,
    /// `relu(inp W1^T + b1)`, rows of `2d`.
    h: Vec<f32>,
    /// `tanh(a_s / 1.9)`, rows of `floor(C/2)`.
    t: Vec<f32>,
    /// `e^s`, rows of `floor(C/2)`.
    e: Vec<f32>,
    /// `[x1, x2']`, rows of `C`.
    u: Vec<f32>,
}

/// A forward pass's record: inputs, intermediate values and outputs of every block, for up to
/// `capacity` fibers.
#[derive(Clone, Debug)]
pub struct Tape {
    capacity: usize,
    rows: usize,
    channels: usize,
    blocks: Vec<BlockTape>,
    a: Vec<f32>,
    v: Vec<f32>,
    scale: Vec<f32>,
    z: Vec<f32>,
    ldj: Vec<f32>,
    logp: Vec<f32>,
}

impl Tape {
    /// A tape for `flow` and up to `capacity` fibers.
    pub fn new(flow: &Flow, capacity: usize) -> Tape {
        let sh = flow.shape;
        let (c, n) = (sh.channels, capacity);
        let block = BlockTape {
            x: vec![0.0; n * c],
            inp: vec![0.0; n * sh.subnet_input()],
            h: vec![0.0; n * sh.hidden()],
            t: vec![0.0; n * sh.coupled()],
            e: vec![0.0; n * sh.coupled()],
            u: vec![0.0; n * c],
        };
        Tape {
            capacity,
            rows: 0,
            channels: c,
            blocks: vec![block; flow.blocks],
            a: vec![0.0; n * sh.subnet_output()],
            v: vec![0.0; n * c],
            scale: vec![0.0; c],
            z: vec![0.0; n * c],
            ldj: vec![0.0; n],
            logp: vec![0.0; n],
        }
    }

    /// Where the input fibers go before [`Flow::forward`]: rows of `C`, `capacity` of them.
    pub fn input(&mut self) -> &mut [f32] {
        &mut self.blocks[0].x
    }

    /// Fibers of the last forward pass.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The latent `z` of the last forward pass, rows of `C`.
    pub fn z(&self) -> &[f32] {
        &self.z[..self.rows * self.channels]
    }

    /// `log|det J|` per fiber.
    pub fn log_jac_det(&self) -> &[f32] {
        &self.ldj[..self.rows]
    }

    /// `log p` per fiber.
    pub fn logp(&self) -> &[f32] {
        &self.logp[..self.rows]
    }
}

/// Buffers of the backward pass, for up to `capacity` fibers.
#[derive(Clone, Debug)]
pub struct Scratch {
    gv: Vec<f32>,
    gx: Vec<f32>,
    gx_next: Vec<f32>,
    ga: Vec<f32>,
    gh: Vec<f32>,
    scale: Vec<f32>,
    sum_gv: Vec<f32>,
    sum_gvu: Vec<f32>,
}

impl Scratch {
    /// Buffers for `flow` and up to `capacity` fibers.
    pub fn new(flow: &Flow, capacity: usize) -> Scratch {
        let sh = flow.shape;
        let (c, n) = (sh.channels, capacity);
        Scratch {
            gv: vec![0.0; n * c],
            gx: vec![0.0; n * c],
            gx_next: vec![0.0; n * c],
            ga: vec![0.0; n * sh.subnet_output()],
            gh: vec![0.0; n * sh.hidden()],
            scale: vec![0.0; c],
            sum_gv: vec![0.0; c],
            sum_gvu: vec![0.0; c],
        }
    }

    /// The gradient of the input fibers after a [`Flow::backward`] with `want_input`.
    pub fn input_grad(&self, rows: usize) -> &[f32] {
        &self.gx[..rows * self.scale.len()]
    }
}
