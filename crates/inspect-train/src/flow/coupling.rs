//! One FrEIA `AllInOneBlock` as CFlow-AD configures it (see DESIGN.md, "Decoder per level"):
//! an affine coupling conditioned on the positional encoding, soft-clamped by `1.9 tanh(a/1.9)`,
//! then a global affine with a softplus scale and a fixed random rotation.
//!
//! For `x` (N x C) and condition `c` (N x D): `s1 = C - floor(C/2)`, `x1 = x[:, :s1]`,
//! `x2 = x[:, s1:]`, `a = 0.1 subnet([x1, c])`, `s = 1.9 tanh(a_s / 1.9)`,
//! `x2' = x2 exp(s) + a_t`, `u = [x1, x2']`, `scale = 0.2 ln(1 + exp(0.5 g))`,
//! `y = (u scale + offset) R^T`, `log|det J| = sum(s) + sum(ln scale)`.

use burn::module::{Module, Param, ParamId};
use burn::nn::{Linear, Relu};
use burn::tensor::{Device, Tensor, TensorData};

use inspect_core::random::SplitMix;

use crate::tensors::floats;

/// The soft clamp of the coupling's log-scale (CFlow's `clamp_alpha`).
pub const CLAMP: f32 = 1.9;

/// The weights of one block as plain row-major floats, in FrEIA's conventions: linear weights
/// are `out x in` (`y = x W^T + b`), the rotation is applied as `y = v R^T`.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockWeights {
    /// Channels `C`.
    pub channels: usize,
    /// Condition size `D`.
    pub condition: usize,
    /// First linear layer, `2d x d` with `d = C - floor(C/2) + D`.
    pub hidden_weight: Vec<f32>,
    /// Its bias, `2d`.
    pub hidden_bias: Vec<f32>,
    /// Second linear layer, `2 floor(C/2) x 2d`.
    pub output_weight: Vec<f32>,
    /// Its bias, `2 floor(C/2)`.
    pub output_bias: Vec<f32>,
    /// `g`, per channel (`scale = 0.2 ln(1 + e^(0.5 g))`).
    pub global_scale: Vec<f32>,
    /// Per-channel offset.
    pub global_offset: Vec<f32>,
    /// `R`, `C x C`.
    pub rotation: Vec<f32>,
}

impl BlockWeights {
    /// Input width of the subnet, `C - floor(C/2) + D`.
    pub fn subnet_input(&self) -> usize {
        self.channels - self.channels / 2 + self.condition
    }

    /// Fresh weights of a whole decoder (`blocks` blocks, block `i` from [`BlockWeights::init`]
    /// with `seed + i`): what both trainers start from.
    pub fn decoder(
        channels: usize,
        condition: usize,
        blocks: usize,
        seed: u64,
    ) -> Vec<BlockWeights> {
        (0..blocks as u64)
            .map(|i| BlockWeights::init(channels, condition, seed.wrapping_add(i)))
            .collect()
    }

    /// Fresh weights as CFlow-AD starts training: PyTorch's default linear init
    /// (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for weights and biases), global scale 1
    /// (`g = 2 ln(e^5 - 1)`), offset 0, a random rotation; all drawn from `seed`.
    pub fn init(channels: usize, condition: usize, seed: u64) -> BlockWeights {
        let mut rng = SplitMix::new(seed);
        let d = channels - channels / 2 + condition;
        let out = 2 * (channels / 2);
        let mut uniform = |n: usize, fan_in: usize| -> Vec<f32> {
            let k = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| (rng.unit() * 2.0 - 1.0) * k).collect()
        };
        let hidden_weight = uniform(2 * d * d, d);
        let hidden_bias = uniform(2 * d, d);
        let output_weight = uniform(out * 2 * d, 2 * d);
        let output_bias = uniform(out, 2 * d);
        let g = 2.0 * (5f32.exp() - 1.0).ln();
        BlockWeights {
            channels,
            condition,
            hidden_weight,
            hidden_bias,
            output_weight,
            output_bias,
            global_scale: vec![g; channels],
            global_offset: vec![0.0; channels],
            rotation: random_rotation(channels, &mut rng),
        }
    }
}

/// A random rotation (`det = +1`), Haar-distributed: Gram-Schmidt on a Gaussian matrix, as
/// `scipy.stats.special_ortho_group` (FrEIA's `permute_soft`) draws it. Row-major `n x n`.
pub fn random_rotation(n: usize, rng: &mut SplitMix) -> Vec<f32> {
    let mut gauss = || {
        // Box-Muller; 1 - u keeps the logarithm finite.
        let (u, v) = (1.0 - rng.unit() as f64, rng.unit() as f64);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let mut rows: Vec<Vec<f64>> = (0..n).map(|_| (0..n).map(|_| gauss()).collect()).collect();
    for i in 0..n {
        let (done, rest) = rows.split_at_mut(i);
        let row = &mut rest[0];
        for prev in done.iter() {
            let dot: f64 = row.iter().zip(prev).map(|(a, b)| a * b).sum();
            row.iter_mut().zip(prev).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = rows[i].iter().map(|v| v * v).sum::<f64>().sqrt();
        rows[i].iter_mut().for_each(|v| *v /= norm);
    }
    // Gram-Schmidt gives det = +-1; flipping one row makes it a rotation.
    if determinant_sign(&rows) < 0.0 {
        rows[0].iter_mut().for_each(|v| *v = -*v);
    }
    rows.into_iter().flatten().map(|v| v as f32).collect()
}

/// Sign of the determinant by Gaussian elimination with partial pivoting.
fn determinant_sign(rows: &[Vec<f64>]) -> f64 {
    let mut m: Vec<Vec<f64>> = rows.to_vec();
    let n = m.len();
    let mut sign = 1.0;
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))
            .unwrap_or(col);
        if m[pivot][col] == 0.0 {
            return 0.0;
        }
        if pivot != col {
            m.swap(pivot, col);
            sign = -sign;
        }
        sign *= m[col][col].signum();
        let (top, below) = m.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for row in below.iter_mut() {
            let f = row[col] / pivot_row[col];
            row[col..]
                .iter_mut()
                .zip(&pivot_row[col..])
                .for_each(|(a, b)| *a -= f * b);
        }
    }
    sign
}

/// One coupling block, trainable with burn.
#[derive(Module, Debug)]
pub struct CouplingBlock {
    /// Subnet layer 1, `d -> 2d`.
    pub hidden: Linear,
    /// Subnet layer 2, `2d -> 2 floor(C/2)`.
    pub output: Linear,
    /// `g`, `1 x C`.
    pub global_scale: Param<Tensor<2>>,
    /// Offset, `1 x C`.
    pub global_offset: Param<Tensor<2>>,
    /// `R^T`, `C x C`: fixed, not trained.
    pub rotation_t: Tensor<2>,
    /// Channels `C`.
    pub channels: usize,
}

fn tensor2(values: &[f32], rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), [rows, cols]), device)
}

fn tensor1(values: &[f32], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// `m x n` row-major to `n x m`.
fn transposed(values: &[f32], m: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for i in 0..m {
        for j in 0..n {
            out[j * m + i] = values[i * n + j];
        }
    }
    out
}

impl CouplingBlock {
    /// A block holding `w` on `device`.
    pub fn from_weights(w: &BlockWeights, device: &Device) -> CouplingBlock {
        let (c, d) = (w.channels, w.subnet_input());
        let out = 2 * (c / 2);
        // burn's Linear computes x W + b with W `in x out`: FrEIA's W^T.
        let linear = |weight: &[f32], bias: &[f32], inputs: usize, outputs: usize| Linear {
            weight: Param::from_tensor(tensor2(
                &transposed(weight, outputs, inputs),
                inputs,
                outputs,
                device,
            )),
            bias: Some(Param::from_tensor(tensor1(bias, device))),
        };
        CouplingBlock {
            hidden: linear(&w.hidden_weight, &w.hidden_bias, d, 2 * d),
            output: linear(&w.output_weight, &w.output_bias, 2 * d, out),
            global_scale: Param::from_tensor(tensor2(&w.global_scale, 1, c, device)),
            global_offset: Param::from_tensor(tensor2(&w.global_offset, 1, c, device)),
            rotation_t: tensor2(&transposed(&w.rotation, c, c), c, c, device),
            channels: c,
        }
    }

    /// Like [`CouplingBlock::from_weights`], with the parameter ids of a checkpoint (hidden
    /// weight and bias, output weight and bias, global scale, global offset), so that an
    /// optimizer state saved with them applies again.
    pub fn from_weights_with_ids(
        w: &BlockWeights,
        ids: [u64; 6],
        device: &Device,
    ) -> CouplingBlock {
        let mut block = CouplingBlock::from_weights(w, device);
        let set = |p: &mut ParamId, id: u64| *p = ParamId::from(id);
        set(&mut block.hidden.weight.id, ids[0]);
        if let Some(b) = block.hidden.bias.as_mut() {
            set(&mut b.id, ids[1]);
        }
        set(&mut block.output.weight.id, ids[2]);
        if let Some(b) = block.output.bias.as_mut() {
            set(&mut b.id, ids[3]);
        }
        set(&mut block.global_scale.id, ids[4]);
        set(&mut block.global_offset.id, ids[5]);
        block
    }

    /// The ids of the six trainable parameters, in [`CouplingBlock::from_weights_with_ids`] order.
    pub fn param_ids(&self) -> [u64; 6] {
        let bias = |l: &Linear| l.bias.as_ref().map_or(0, |b| b.id.val());
        [
            self.hidden.weight.id.val(),
            bias(&self.hidden),
            self.output.weight.id.val(),
            bias(&self.output),
            self.global_scale.id.val(),
            self.global_offset.id.val(),
        ]
    }

    /// The block's weights, in FrEIA's conventions.
    pub fn to_weights(&self) -> BlockWeights {
        let c = self.channels;
        let [d, d2] = self.hidden.weight.val().dims();
        let out = 2 * (c / 2);
        let bias = |l: &Linear| {
            l.bias
                .as_ref()
                .map(|b| floats(&b.val()))
                .unwrap_or_default()
        };
        BlockWeights {
            channels: c,
            condition: d - (c - c / 2),
            hidden_weight: transposed(&floats(&self.hidden.weight.val()), d, d2),
            hidden_bias: bias(&self.hidden),
            output_weight: transposed(&floats(&self.output.weight.val()), d2, out),
            output_bias: bias(&self.output),
            global_scale: floats(&self.global_scale.val()),
            global_offset: floats(&self.global_offset.val()),
            rotation: transposed(&floats(&self.rotation_t), c, c),
        }
    }

    /// `(y, log|det J|)` for `x` (N x C) under condition `cond` (N x D); `log|det J|` is N.
    pub fn forward(&self, x: Tensor<2>, cond: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let [n, c] = x.dims();
        let (s1, s2) = (c - c / 2, c / 2);
        let x1 = x.clone().slice([0..n, 0..s1]);
        let x2 = x.slice([0..n, s1..c]);
        let h = Relu::new().forward(self.hidden.forward(Tensor::cat(vec![x1.clone(), cond], 1)));
        let a = self.output.forward(h).mul_scalar(0.1);
        let a_s = a.clone().slice([0..n, 0..s2]);
        let a_t = a.slice([0..n, s2..2 * s2]);
        let s = a_s.div_scalar(CLAMP).tanh().mul_scalar(CLAMP);
        let x2 = x2 * s.clone().exp() + a_t;
        let u = Tensor::cat(vec![x1, x2], 1);
        let scale = self
            .global_scale
            .val()
            .mul_scalar(0.5)
            .exp()
            .log1p()
            .mul_scalar(0.2);
        let y = (u * scale.clone() + self.global_offset.val()).matmul(self.rotation_t.clone());
        let ldj = s.sum_dim(1).reshape([n]) + scale.log().sum();
        (y, ldj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_rotations_are_orthonormal_with_determinant_one() {
        for (n, seed) in [(1, 1), (2, 2), (7, 3), (40, 4)] {
            let r = random_rotation(n, &mut SplitMix::new(seed));
            for i in 0..n {
                for j in 0..n {
                    let dot: f32 = (0..n).map(|k| r[i * n + k] * r[j * n + k]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!(
                        (dot - want).abs() < 1e-5,
                        "n={n}: row {i} . row {j} = {dot}"
                    );
                }
            }
            let rows: Vec<Vec<f64>> = r
                .chunks(n)
                .map(|c| c.iter().map(|&v| v as f64).collect())
                .collect();
            assert_eq!(determinant_sign(&rows), 1.0, "n={n}");
        }
        // A reflection is caught.
        assert_eq!(determinant_sign(&[vec![0.0, 1.0], vec![1.0, 0.0]]), -1.0);
    }
}
