//! The flows trained on the CPU without a framework: forward and backward of the coupling
//! blocks written out ([`decoder`]), matrix products by the `gemm` crate ([`gemm`]), the
//! losses with their gradients ([`objectives`]) and a fused Adam ([`adam`]). Same formulas,
//! same initial weights and same optimizer as the burn flows in `crate::flow`, which stay for
//! the GPU backends and as the reference the tests hold this path to.
//!
//! [`LevelTrainer`] owns one level's flow, optimizer and every buffer a step needs, sized for
//! the largest fiber batch: a step allocates nothing, and levels train on separate threads.

pub mod adam;
pub mod decoder;
pub mod gemm;
pub mod objectives;

pub use adam::Adam;
pub use decoder::{BlockShape, Flow, Scratch, Tape};
pub use objectives::LossGrads;

use crate::flow::BlockWeights;
use crate::losses::{NfLoss, Objective};
use objectives::{Pass, TermScratch};

/// What one step minimises.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLoss {
    /// The form of `L_NF`.
    pub nf: NfLoss,
    /// The term on top of it (contrastive epochs with augmentations), or `None`.
    pub objective: Option<Objective>,
    /// Margin of the likelihood term.
    pub margin: f32,
}

/// The fibers of one image batch of one level, from which steps gather their rows.
#[derive(Clone, Copy, Debug)]
pub struct Fibers<'a> {
    /// Real fibers, rows of `C` (row `image * hw + position`).
    pub real: &'a [f32],
    /// The augmented images' fibers at the same rows, when this epoch uses them.
    pub aug: Option<&'a [f32]>,
    /// 1 where the synthetic defect lies, per row.
    pub defect: &'a [f32],
    /// The positional encoding of the level, rows of `D` per position.
    pub condition: &'a [f32],
    /// Positions per image (`h w`).
    pub positions: usize,
}

/// The losses of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLosses {
    /// `L_NF` of the real fibers.
    pub nf: f64,
    /// The contrastive term, when it was on.
    pub term: Option<f64>,
    /// Augmented fibers equal to their real fiber (off the synthetic defect's reach), whose
    /// pass was the real one's.
    pub shared: usize,
}

/// One level's flow, its Adam state and the buffers of a step.
#[derive(Clone, Debug)]
pub struct LevelTrainer {
    /// The flow.
    pub flow: Flow,
    /// Its optimizer state.
    pub adam: Adam,
    real: Tape,
    aug: Tape,
    scratch: Scratch,
    g_real: LossGrads,
    g_aug: LossGrads,
    terms: TermScratch,
    condition: Vec<f32>,
    defect: Vec<f32>,
    /// The augmented rows that differ from their real row, and their conditions.
    changed: Vec<usize>,
    aug_condition: Vec<f32>,
    /// The augmented pass at every row: the real pass's values where the fibers are equal.
    aug_z: Vec<f32>,
    aug_logp: Vec<f32>,
}

impl LevelTrainer {
    /// A trainer of `weights` (one per block) with a fresh optimizer, for steps of up to
    /// `capacity` fibers.
    pub fn new(weights: &[BlockWeights], capacity: usize) -> LevelTrainer {
        let flow = Flow::from_weights(weights);
        let adam = Adam::new(flow.params.len());
        LevelTrainer::with_state(flow, adam, capacity)
    }

    /// A trainer going on from `flow` and `adam`.
    pub fn with_state(flow: Flow, adam: Adam, capacity: usize) -> LevelTrainer {
        let sh = flow.shape();
        LevelTrainer {
            real: Tape::new(&flow, capacity),
            aug: Tape::new(&flow, capacity),
            scratch: Scratch::new(&flow, capacity),
            g_real: LossGrads::new(sh.channels, capacity),
            g_aug: LossGrads::new(sh.channels, capacity),
            terms: TermScratch::default(),
            condition: vec![0.0; capacity * sh.condition],
            defect: vec![0.0; capacity],
            changed: Vec::with_capacity(capacity),
            aug_condition: vec![0.0; capacity * sh.condition],
            aug_z: vec![0.0; capacity * sh.channels],
            aug_logp: vec![0.0; capacity],
            flow,
            adam,
        }
    }

    /// One Adam step on the rows `rows` of `fibers` (at most the capacity).
    pub fn step(
        &mut self,
        fibers: &Fibers,
        rows: &[usize],
        loss: &StepLoss,
        lr: f64,
    ) -> StepLosses {
        let sh = self.flow.shape();
        let (c, dc, n) = (sh.channels, sh.condition, rows.len());
        let gather = |src: &[f32], dst: &mut [f32]| {
            for (out, &i) in dst.chunks_exact_mut(c).zip(rows) {
                out.copy_from_slice(&src[i * c..(i + 1) * c]);
            }
        };
        gather(fibers.real, self.real.input());
        for (out, &i) in self.condition.chunks_exact_mut(dc).zip(rows) {
            let p = i % fibers.positions;
            out.copy_from_slice(&fibers.condition[p * dc..(p + 1) * dc]);
        }
        self.flow.grads.fill(0.0);
        self.flow.forward(&mut self.real, &self.condition, n);
        self.g_real.clear(n);
        let nf = objectives::nf(loss.nf, &self.real, &mut self.g_real);
        let mut term = None;
        let mut shared = 0;
        if let (Some(objective), Some(aug)) = (loss.objective, fibers.aug) {
            for (out, &i) in self.defect.iter_mut().zip(rows) {
                *out = fibers.defect[i];
            }
            // Away from the pasted defect the extractor sees the same pixels: the augmented
            // fiber is the real one bit for bit, and so is its pass. Only the changed rows go
            // through the flow; the others take the real pass's values, and their gradients
            // join the real rows' (the same function of the same input).
            self.changed.clear();
            for (r, &i) in rows.iter().enumerate() {
                let (a, x) = (&aug[i * c..(i + 1) * c], &fibers.real[i * c..(i + 1) * c]);
                if a.iter().zip(x).any(|(p, q)| p.to_bits() != q.to_bits()) {
                    self.changed.push(r);
                }
            }
            let m = self.changed.len();
            shared = n - m;
            let input = self.aug.input();
            for (k, &r) in self.changed.iter().enumerate() {
                let i = rows[r];
                input[k * c..(k + 1) * c].copy_from_slice(&aug[i * c..(i + 1) * c]);
                self.aug_condition[k * dc..(k + 1) * dc]
                    .copy_from_slice(&self.condition[r * dc..(r + 1) * dc]);
            }
            if m > 0 {
                self.flow.forward(&mut self.aug, &self.aug_condition, m);
            }
            self.aug_z[..n * c].copy_from_slice(self.real.z());
            self.aug_logp[..n].copy_from_slice(self.real.logp());
            for (k, &r) in self.changed.iter().enumerate() {
                self.aug_z[r * c..(r + 1) * c].copy_from_slice(&self.aug.z()[k * c..(k + 1) * c]);
                self.aug_logp[r] = self.aug.logp()[k];
            }
            self.g_aug.clear(n);
            term = objectives::term(
                objective,
                Pass::from(&self.real),
                Pass {
                    z: &self.aug_z[..n * c],
                    logp: &self.aug_logp[..n],
                },
                &self.defect[..n],
                loss.margin,
                &mut self.g_real,
                &mut self.g_aug,
                &mut self.terms,
            );
            if term.is_some() {
                self.g_aug.fold_shared(&mut self.g_real, &self.changed, n);
                if m > 0 {
                    self.g_aug.chain(&self.aug);
                    self.flow.backward(
                        &self.aug,
                        &self.g_aug.z,
                        &self.g_aug.log_jac_det,
                        &mut self.scratch,
                        false,
                    );
                }
            }
        }
        self.g_real.chain(&self.real);
        self.flow.backward(
            &self.real,
            &self.g_real.z,
            &self.g_real.log_jac_det,
            &mut self.scratch,
            false,
        );
        self.adam.step(lr, &mut self.flow.params, &self.flow.grads);
        StepLosses { nf, term, shared }
    }
}

/// `log p` of every row of `fibers` (rows of `C`) under the matching rows of `condition`,
/// in batches of `batch`.
pub fn logp(flow: &Flow, fibers: &[f32], condition: &[f32], batch: usize) -> Vec<f32> {
    let sh = flow.shape();
    let n = fibers.len() / sh.channels;
    let mut tape = Tape::new(flow, batch.min(n).max(1));
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let rows = batch.min(n - start);
        tape.input()[..rows * sh.channels]
            .copy_from_slice(&fibers[start * sh.channels..(start + rows) * sh.channels]);
        flow.forward(
            &mut tape,
            &condition[start * sh.condition..(start + rows) * sh.condition],
            rows,
        );
        out.extend_from_slice(tape.logp());
        start += rows;
    }
    out
}
