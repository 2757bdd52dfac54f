//! The training objectives (DESIGN.md, "Contrastive objectives"; paper sec. 2.3), on one fiber
//! batch of one level: `x` real fibers, `x'` the augmented image's fibers at the same positions,
//! `M` 1 where the synthetic defect lies. Each function returns a scalar tensor (shape `[1]`)
//! that burn can differentiate.
//!
//! - `L_NF`, paper form: `mean(0.5 ||z||^2 - log|det J|)`; reference (CFlow code) form:
//!   `mean(-logsigmoid(logp / C))`. The reference form is the default: it is what CFlow-AD's
//!   published results were trained with, and it saturates for fibers that are already likely,
//!   so training concentrates on the unlikely ones instead of pushing likely ones further.
//! - boundary (BGAD): `l = (logp / C) / 10`; `b_n` the `floor(n beta)`-th smallest `l` of the
//!   normal fibers (detached), `b_a = b_n - tau`; `mean(b_n - l)` over normal fibers below `b_n`
//!   plus `mean(l - b_a)` over defect fibers above `b_a` (an empty mean is 0).
//! - CL: per fiber, the cosine similarity of `z(x)` and `z(x')`; its mean on `M` minus its mean
//!   off `M` (pull normal parts together, push the defect apart).
//! - likelihood: with `d = |l(x) - l(x')|`, `mean_off(d) + max(0, margin - mean_on(d))`: the
//!   paper's `||(1-M) d|| - ||M d||` with the unbounded reward on `M` capped at `margin`.
//! - fusion: boundary + likelihood.

use burn::tensor::activation::log_sigmoid;
use burn::tensor::Tensor;

/// BGAD's quantile of the normal log-likelihoods.
pub const BOUNDARY_BETA: f32 = 0.05;
/// BGAD's margin between the normal and the defect boundary.
pub const BOUNDARY_TAU: f32 = 0.1;
/// BGAD's normalizer of `logp / C`.
pub const BOUNDARY_NORMALIZER: f32 = 10.0;

/// The objective on top of `L_NF`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// `L_NF` alone (CFlow-AD).
    None,
    /// BGAD's boundary.
    Boundary,
    /// Cosine similarity of the latents on and off the mask.
    Cl,
    /// Log-likelihood differences on and off the mask.
    Likelihood,
    /// boundary + likelihood.
    Fusion,
}

/// Which form of `L_NF`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NfLoss {
    /// `mean(-logsigmoid(logp / C))`, CFlow-AD's code (default).
    #[default]
    Reference,
    /// `mean(0.5 ||z||^2 - log|det J|)`, the paper's formula.
    Paper,
}

/// `L_NF` in the reference form: `mean(-logsigmoid(logp / C))`.
pub fn nf_reference(logp: Tensor<1>, channels: usize) -> Tensor<1> {
    log_sigmoid(logp.div_scalar(channels as f32)).neg().mean()
}

/// `L_NF` in the paper's form: `mean(0.5 ||z||^2 - log|det J|)`.
pub fn nf_paper(z: Tensor<2>, log_jac_det: Tensor<1>) -> Tensor<1> {
    let [n, _] = z.dims();
    (z.square().sum_dim(1).reshape([n]).mul_scalar(0.5) - log_jac_det).mean()
}

/// Mean of `values` weighted by `weights` (0/1); 0 when no weight is set.
fn masked_mean(values: Tensor<1>, weights: Tensor<1>) -> Tensor<1> {
    let count = weights.clone().sum();
    (values * weights).sum() / count.clamp_min(1.0)
}

/// The `floor(n * beta)`-th smallest of `values` (0-based), `None` when empty.
pub fn lower_quantile(mut values: Vec<f32>, beta: f32) -> Option<f32> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f32::total_cmp);
    let index = ((values.len() as f32 * beta).floor() as usize).min(values.len() - 1);
    Some(values[index])
}

/// BGAD's boundary loss for fibers with log-likelihoods `logp` (N) of dimension `channels`,
/// `defect` 1 on synthetic-defect fibers and 0 on normal ones.
pub fn boundary(logp: Tensor<1>, defect: Tensor<1>, channels: usize) -> Tensor<1> {
    let l = logp.div_scalar(channels as f32 * BOUNDARY_NORMALIZER);
    let normal = defect.clone().neg().add_scalar(1.0);
    // The boundary comes from the normal fibers only, detached: it is a target, not a path
    // for gradients.
    let values = crate::tensors::floats(&l.clone().detach());
    let flags = crate::tensors::floats(&normal);
    let normal_values: Vec<f32> = values
        .iter()
        .zip(&flags)
        .filter(|(_, f)| **f > 0.5)
        .map(|(v, _)| *v)
        .collect();
    let Some(b_n) = lower_quantile(normal_values, BOUNDARY_BETA) else {
        return l.sum().mul_scalar(0.0);
    };
    let b_a = b_n - BOUNDARY_TAU;
    let below = l.clone().lower_equal_elem(b_n).float() * normal;
    let above = l.clone().greater_equal_elem(b_a).float() * defect;
    let loss_n = masked_mean(l.clone().neg().add_scalar(b_n), below);
    let loss_a = masked_mean(l.sub_scalar(b_a), above);
    loss_n + loss_a
}

/// The CL term: mean cosine similarity of `z_real` and `z_aug` (N x C, same positions) on the
/// defect fibers minus the mean off them.
pub fn contrastive(z_real: Tensor<2>, z_aug: Tensor<2>, defect: Tensor<1>) -> Tensor<1> {
    let [n, _] = z_real.dims();
    let dot = (z_real.clone() * z_aug.clone()).sum_dim(1).reshape([n]);
    let norms = (z_real.square().sum_dim(1) * z_aug.square().sum_dim(1))
        .reshape([n])
        .sqrt()
        .clamp_min(1e-8);
    let cos = dot / norms;
    let normal = defect.clone().neg().add_scalar(1.0);
    masked_mean(cos.clone(), defect) - masked_mean(cos, normal)
}

/// The bounded likelihood term for `logp` of real and augmented fibers at the same positions.
pub fn likelihood(
    logp_real: Tensor<1>,
    logp_aug: Tensor<1>,
    defect: Tensor<1>,
    channels: usize,
    margin: f32,
) -> Tensor<1> {
    let any_defect = crate::tensors::floats(&defect).iter().any(|&m| m > 0.5);
    let d = (logp_real - logp_aug).div_scalar(channels as f32).abs();
    let normal = defect.clone().neg().add_scalar(1.0);
    let off = masked_mean(d.clone(), normal);
    if !any_defect {
        // No defect in this batch: nothing to push apart (and no constant margin added).
        return off;
    }
    let on = masked_mean(d, defect);
    off + on.neg().add_scalar(margin).clamp_min(0.0)
}

/// One fiber batch of one level, real and augmented at the same positions.
#[derive(Clone, Debug)]
pub struct PairedFibers {
    /// Latents of the real fibers, N x C.
    pub z_real: Tensor<2>,
    /// Their log-likelihoods, N.
    pub logp_real: Tensor<1>,
    /// Latents of the augmented fibers, N x C.
    pub z_aug: Tensor<2>,
    /// Their log-likelihoods, N.
    pub logp_aug: Tensor<1>,
    /// 1 where the synthetic defect lies, N.
    pub defect: Tensor<1>,
    /// Channels `C`.
    pub channels: usize,
}

/// The term `objective` adds to `L_NF` (`None` for [`Objective::None`]). Boundary sees the real
/// fibers (all normal) and the augmented ones (normal off `M`, defect on `M`) together.
pub fn objective_term(
    objective: Objective,
    f: &PairedFibers,
    likelihood_margin: f32,
) -> Option<Tensor<1>> {
    let boundary_term = || {
        let logp = Tensor::cat(vec![f.logp_real.clone(), f.logp_aug.clone()], 0);
        let defect = Tensor::cat(vec![f.defect.clone().zeros_like(), f.defect.clone()], 0);
        boundary(logp, defect, f.channels)
    };
    let likelihood_term = || {
        likelihood(
            f.logp_real.clone(),
            f.logp_aug.clone(),
            f.defect.clone(),
            f.channels,
            likelihood_margin,
        )
    };
    match objective {
        Objective::None => None,
        Objective::Boundary => Some(boundary_term()),
        Objective::Cl => Some(contrastive(
            f.z_real.clone(),
            f.z_aug.clone(),
            f.defect.clone(),
        )),
        Objective::Likelihood => Some(likelihood_term()),
        Objective::Fusion => Some(boundary_term() + likelihood_term()),
    }
}
