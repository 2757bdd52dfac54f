//! The training losses of `crate::losses`, with their gradients written out, on the tapes of
//! the CPU flow. Each function returns the loss and adds its gradient to a [`LossGrads`]: with
//! respect to `z` directly, to `log p`, and to `log|det J|` directly; [`LossGrads::chain`] then
//! folds `log p = const - 0.5 ||z||^2 + log|det J|` into the two the flow's backward takes.

use super::decoder::Tape;
use crate::losses::{NfLoss, Objective, BOUNDARY_BETA, BOUNDARY_NORMALIZER, BOUNDARY_TAU};

/// Gradients of a loss on one forward pass, for up to `capacity` fibers of `C` channels.
#[derive(Clone, Debug)]
pub struct LossGrads {
    channels: usize,
    /// d loss / d z (direct part), rows of `C`; after [`LossGrads::chain`], the whole of it.
    pub z: Vec<f32>,
    /// d loss / d log p, per fiber.
    pub logp: Vec<f32>,
    /// d loss / d log|det J| (direct part); after [`LossGrads::chain`], the whole of it.
    pub log_jac_det: Vec<f32>,
}

impl LossGrads {
    /// Zeroed gradients for `capacity` fibers of `channels`.
    pub fn new(channels: usize, capacity: usize) -> LossGrads {
        LossGrads {
            channels,
            z: vec![0.0; capacity * channels],
            logp: vec![0.0; capacity],
            log_jac_det: vec![0.0; capacity],
        }
    }

    /// Zeroes the first `rows` fibers.
    pub fn clear(&mut self, rows: usize) {
        self.z[..rows * self.channels].fill(0.0);
        self.logp[..rows].fill(0.0);
        self.log_jac_det[..rows].fill(0.0);
    }

    /// Of these gradients on `rows` fibers, adds those of the rows not in `changed` (ascending)
    /// to the same rows of `real`, and packs those of `changed` into the first rows: the
    /// layout of a pass over the changed rows only.
    pub fn fold_shared(&mut self, real: &mut LossGrads, changed: &[usize], rows: usize) {
        let c = self.channels;
        let mut next = changed.iter().copied().enumerate().peekable();
        for r in 0..rows {
            match next.peek() {
                Some(&(k, changed_row)) if changed_row == r => {
                    // k <= r: rows move towards the front only.
                    self.z.copy_within(r * c..(r + 1) * c, k * c);
                    self.logp[k] = self.logp[r];
                    self.log_jac_det[k] = self.log_jac_det[r];
                    next.next();
                }
                _ => {
                    for (g, a) in real.z[r * c..(r + 1) * c]
                        .iter_mut()
                        .zip(&self.z[r * c..(r + 1) * c])
                    {
                        *g += a;
                    }
                    real.logp[r] += self.logp[r];
                    real.log_jac_det[r] += self.log_jac_det[r];
                }
            }
        }
    }

    /// Moves the `log p` gradient onto `z` and `log|det J|`.
    pub fn chain(&mut self, tape: &Tape) {
        let c = self.channels;
        for (r, &g) in self.logp[..tape.rows()].iter().enumerate() {
            let z = &tape.z()[r * c..(r + 1) * c];
            for (gz, zv) in self.z[r * c..(r + 1) * c].iter_mut().zip(z) {
                *gz -= g * zv;
            }
            self.log_jac_det[r] += g;
        }
    }
}

/// `-log(sigmoid(x))`, computed without overflow.
fn softplus_neg(x: f32) -> f32 {
    if x > 0.0 {
        (-x).exp().ln_1p()
    } else {
        -x + x.exp().ln_1p()
    }
}

/// `L_NF` of one pass: the reference form `mean(-logsigmoid(logp / C))` or the paper's
/// `mean(0.5 ||z||^2 - log|det J|)`.
pub fn nf(kind: NfLoss, tape: &Tape, grads: &mut LossGrads) -> f64 {
    let (n, c) = (tape.rows(), grads.channels);
    if n == 0 {
        return 0.0;
    }
    let inv_n = 1.0 / n as f32;
    match kind {
        NfLoss::Reference => {
            let mut total = 0.0f64;
            for (r, &lp) in tape.logp().iter().enumerate() {
                let x = lp / c as f32;
                total += f64::from(softplus_neg(x));
                // d/dx -log sigmoid(x) = -sigmoid(-x)
                let sig_neg = 1.0 / (1.0 + x.exp());
                grads.logp[r] += -sig_neg / c as f32 * inv_n;
            }
            total / n as f64
        }
        NfLoss::Paper => {
            let mut total = 0.0f64;
            for r in 0..n {
                let z = &tape.z()[r * c..(r + 1) * c];
                let sq: f32 = z.iter().map(|v| v * v).sum();
                total += f64::from(0.5 * sq - tape.log_jac_det()[r]);
                for (g, zv) in grads.z[r * c..(r + 1) * c].iter_mut().zip(z) {
                    *g += zv * inv_n;
                }
                grads.log_jac_det[r] -= inv_n;
            }
            total / n as f64
        }
    }
}

/// Reusable buffers of the contrastive terms.
#[derive(Clone, Debug, Default)]
pub struct TermScratch {
    normal_values: Vec<f32>,
}

/// What the contrastive terms read of a forward pass: `z` (rows of `C`) and `log p` per fiber.
#[derive(Clone, Copy, Debug)]
pub struct Pass<'a> {
    /// The latent, rows of `C`.
    pub z: &'a [f32],
    /// `log p` per fiber.
    pub logp: &'a [f32],
}

impl Pass<'_> {
    fn rows(&self) -> usize {
        self.logp.len()
    }
}

impl<'a> From<&'a Tape> for Pass<'a> {
    fn from(tape: &'a Tape) -> Pass<'a> {
        Pass {
            z: tape.z(),
            logp: tape.logp(),
        }
    }
}

/// The objective's term on top of `L_NF` for a real pass and its augmented pass at the same
/// positions (`defect[r]` 1 where the synthetic defect lies), `None` for [`Objective::None`].
#[allow(clippy::too_many_arguments)]
pub fn term(
    objective: Objective,
    real: Pass,
    aug: Pass,
    defect: &[f32],
    margin: f32,
    g_real: &mut LossGrads,
    g_aug: &mut LossGrads,
    scratch: &mut TermScratch,
) -> Option<f64> {
    match objective {
        Objective::None => None,
        Objective::Boundary => Some(boundary(real, aug, defect, g_real, g_aug, scratch)),
        Objective::Cl => Some(contrastive(real, aug, defect, g_real, g_aug)),
        Objective::Likelihood => Some(likelihood(real, aug, defect, margin, g_real, g_aug)),
        Objective::Fusion => Some(
            boundary(real, aug, defect, g_real, g_aug, scratch)
                + likelihood(real, aug, defect, margin, g_real, g_aug),
        ),
    }
}

/// BGAD's boundary over the real fibers (all normal) and the augmented ones (normal off the
/// mask, defect on it): see `crate::losses::boundary`.
fn boundary(
    real: Pass,
    aug: Pass,
    defect: &[f32],
    g_real: &mut LossGrads,
    g_aug: &mut LossGrads,
    scratch: &mut TermScratch,
) -> f64 {
    let c = g_real.channels as f32;
    let norm = c * BOUNDARY_NORMALIZER;
    let n = real.rows();
    let l = |lp: f32| lp / norm;
    let values = &mut scratch.normal_values;
    values.clear();
    values.extend(real.logp.iter().map(|&lp| l(lp)));
    values.extend(
        aug.logp
            .iter()
            .zip(&defect[..n])
            .filter(|(_, &m)| m <= 0.5)
            .map(|(&lp, _)| l(lp)),
    );
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return 0.0;
    }
    let index = ((values.len() as f32 * BOUNDARY_BETA).floor() as usize).min(values.len() - 1);
    let (_, &mut b_n, _) = values.select_nth_unstable_by(index, f32::total_cmp);
    let b_a = b_n - BOUNDARY_TAU;
    // Counts and sums of the two hinge sets.
    let (mut below, mut sum_below, mut above, mut sum_above) = (0usize, 0.0f64, 0usize, 0.0f64);
    let mut visit = |lp: f32, is_defect: bool| {
        let v = l(lp);
        if !is_defect && v <= b_n {
            below += 1;
            sum_below += f64::from(b_n - v);
        } else if is_defect && v >= b_a {
            above += 1;
            sum_above += f64::from(v - b_a);
        }
    };
    real.logp.iter().for_each(|&lp| visit(lp, false));
    aug.logp
        .iter()
        .zip(&defect[..n])
        .for_each(|(&lp, &m)| visit(lp, m > 0.5));
    let (w_below, w_above) = (
        1.0 / below.max(1) as f32 / norm,
        1.0 / above.max(1) as f32 / norm,
    );
    for (g, &lp) in g_real.logp.iter_mut().zip(real.logp) {
        if l(lp) <= b_n {
            *g -= w_below;
        }
    }
    for ((g, &lp), &m) in g_aug.logp.iter_mut().zip(aug.logp).zip(&defect[..n]) {
        let v = l(lp);
        if m <= 0.5 && v <= b_n {
            *g -= w_below;
        } else if m > 0.5 && v >= b_a {
            *g += w_above;
        }
    }
    sum_below / below.max(1) as f64 + sum_above / above.max(1) as f64
}

/// Mean cosine similarity of `z` and `z'` on the defect minus its mean off it.
fn contrastive(
    real: Pass,
    aug: Pass,
    defect: &[f32],
    g_real: &mut LossGrads,
    g_aug: &mut LossGrads,
) -> f64 {
    let (n, c) = (real.rows(), g_real.channels);
    let on = defect[..n].iter().filter(|&&m| m > 0.5).count();
    let (w_on, w_off) = (1.0 / on.max(1) as f32, 1.0 / (n - on).max(1) as f32);
    let (mut sum_on, mut sum_off) = (0.0f64, 0.0f64);
    for (r, &m) in defect[..n].iter().enumerate() {
        let z = &real.z[r * c..(r + 1) * c];
        let za = &aug.z[r * c..(r + 1) * c];
        let (mut dot, mut nz, mut na) = (0.0f32, 0.0f32, 0.0f32);
        for (a, b) in z.iter().zip(za) {
            dot += a * b;
            nz += a * a;
            na += b * b;
        }
        let raw = (nz * na).sqrt();
        let norms = raw.max(1e-8);
        let cos = dot / norms;
        let is_defect = m > 0.5;
        let w = if is_defect {
            sum_on += f64::from(cos);
            w_on
        } else {
            sum_off += f64::from(cos);
            -w_off
        };
        let gz = &mut g_real.z[r * c..(r + 1) * c];
        let ga = &mut g_aug.z[r * c..(r + 1) * c];
        for j in 0..c {
            // d cos / d z = z' / |z||z'| - cos z / |z|^2 (the norm clamp has no gradient).
            let (dz, da) = if raw > 1e-8 {
                (
                    za[j] / norms - cos * z[j] / nz,
                    z[j] / norms - cos * za[j] / na,
                )
            } else {
                (za[j] / norms, z[j] / norms)
            };
            gz[j] += w * dz;
            ga[j] += w * da;
        }
    }
    sum_on / on.max(1) as f64 - sum_off / (n - on).max(1) as f64
}

/// `mean_off |l - l'| + max(0, margin - mean_on |l - l'|)` with `l = log p / C`.
fn likelihood(
    real: Pass,
    aug: Pass,
    defect: &[f32],
    margin: f32,
    g_real: &mut LossGrads,
    g_aug: &mut LossGrads,
) -> f64 {
    let (n, c) = (real.rows(), g_real.channels as f32);
    let on = defect[..n].iter().filter(|&&m| m > 0.5).count();
    let (mut sum_on, mut sum_off) = (0.0f64, 0.0f64);
    for (r, &m) in defect[..n].iter().enumerate() {
        let d = f64::from(((real.logp[r] - aug.logp[r]) / c).abs());
        if m > 0.5 {
            sum_on += d;
        } else {
            sum_off += d;
        }
    }
    let off = sum_off / (n - on).max(1) as f64;
    let mean_on = sum_on / on.max(1) as f64;
    let hinge = on > 0 && (margin as f64 - mean_on) > 0.0;
    let (w_off, w_on) = (
        1.0 / (n - on).max(1) as f32,
        if hinge { -1.0 / on as f32 } else { 0.0 },
    );
    for (r, &m) in defect[..n].iter().enumerate() {
        let diff = real.logp[r] - aug.logp[r];
        let sign = if diff > 0.0 {
            1.0
        } else if diff < 0.0 {
            -1.0
        } else {
            0.0
        };
        let w = if m > 0.5 { w_on } else { w_off };
        let g = w * sign / c;
        g_real.logp[r] += g;
        g_aug.logp[r] -= g;
    }
    if on == 0 {
        off
    } else {
        off + (margin as f64 - mean_on).max(0.0)
    }
}
