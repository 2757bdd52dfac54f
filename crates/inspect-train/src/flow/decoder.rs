//! A decoder: the normalizing flow of one feature level, 8 coupling blocks in CFlow-AD, and the
//! log-likelihood it gives each fiber: `log p = C (-0.5 ln 2 pi) - 0.5 ||z||^2 + log|det J|`.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::coupling::{BlockWeights, CouplingBlock};

/// Blocks per decoder in CFlow-AD.
pub const CFLOW_BLOCKS: usize = 8;

/// `0.5 ln(2 pi)`: a standard normal loses this much log-density per channel.
pub const HALF_LOG_2PI: f32 = 0.918_938_5;

/// The flow of one feature level.
#[derive(Module, Debug)]
pub struct Decoder {
    /// The coupling blocks, applied in order.
    pub blocks: Vec<CouplingBlock>,
}

/// What a decoder gives for a batch of fibers.
#[derive(Debug, Clone)]
pub struct FlowOutput {
    /// The latent `z`, N x C.
    pub z: Tensor<2>,
    /// `log|det J|`, N.
    pub log_jac_det: Tensor<1>,
    /// `log p(x)`, N.
    pub logp: Tensor<1>,
}

impl Decoder {
    /// A decoder holding `weights`, one entry per block.
    pub fn from_weights(weights: &[BlockWeights], device: &Device) -> Decoder {
        Decoder {
            blocks: weights
                .iter()
                .map(|w| CouplingBlock::from_weights(w, device))
                .collect(),
        }
    }

    /// The weights of every block.
    pub fn to_weights(&self) -> Vec<BlockWeights> {
        self.blocks.iter().map(CouplingBlock::to_weights).collect()
    }

    /// Runs the flow on fibers `x` (N x C) with condition `cond` (N x D).
    pub fn forward(&self, x: Tensor<2>, cond: Tensor<2>) -> FlowOutput {
        let [n, c] = x.dims();
        let mut z = x;
        let mut ldj: Option<Tensor<1>> = None;
        for block in &self.blocks {
            let (y, j) = block.forward(z, cond.clone());
            z = y;
            ldj = Some(match ldj {
                Some(total) => total + j,
                None => j,
            });
        }
        let device = z.device();
        let ldj = ldj.unwrap_or_else(|| Tensor::zeros([n], &device));
        let logp = z
            .clone()
            .square()
            .sum_dim(1)
            .reshape([n])
            .mul_scalar(-0.5)
            .add_scalar(-(c as f32) * HALF_LOG_2PI)
            + ldj.clone();
        FlowOutput {
            z,
            log_jac_det: ldj,
            logp,
        }
    }
}
