//! The hand-written CPU flow against burn's (autodiff, Adam) on the same weights and fibers:
//! parameter gradients of `L_NF` and of every contrastive objective, then the losses of 50
//! seeded Adam steps. burn's flows are themselves held to FrEIA by tests/flow_freia.rs.
#![cfg(feature = "train")]

mod common;

use burn::module::Param;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Gradients;
use burn::tensor::{Device, Tensor, TensorData};
use inspect_core::random::SplitMix;
use inspect_train::flow::cpu::{Fibers, LevelTrainer, StepLoss};
use inspect_train::flow::positional::{positional_fibers, CONDITION_DIM};
use inspect_train::flow::{BlockWeights, Decoder};
use inspect_train::losses::{
    nf_paper, nf_reference, objective_term, NfLoss, Objective, PairedFibers,
};

/// Fibers of a synthetic level: `images` images of `side x side` positions, `c` channels; the
/// augmented copy differs by a bump on a square "defect" of each image.
struct Level {
    c: usize,
    positions: usize,
    real: Vec<f32>,
    aug: Vec<f32>,
    defect: Vec<f32>,
    condition: Vec<f32>,
}

impl Level {
    /// The fibers as the CPU trainer takes them.
    fn fibers(&self) -> Fibers<'_> {
        Fibers {
            real: &self.real,
            aug: Some(&self.aug),
            defect: &self.defect,
            condition: &self.condition,
            positions: self.positions,
        }
    }
}

fn level(c: usize, side: usize, images: usize, seed: u64) -> Level {
    let mut rng = SplitMix::new(seed);
    let positions = side * side;
    let n = images * positions;
    let mut gauss = || {
        let (u, v) = (1.0 - rng.unit(), rng.unit());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let real: Vec<f32> = (0..n * c).map(|_| gauss()).collect();
    // The augmentation moves the fibers within the paste's reach (the extractor's receptive
    // field, here the first three quarters of the rows and columns) a little and the defect a
    // lot; the others stay equal to the real ones, bit for bit, as they do on real images.
    let mut aug = real.clone();
    let reach = side * 3 / 4;
    for (row, fiber) in aug.chunks_exact_mut(c).enumerate() {
        let (y, x) = ((row % positions) / side, row % side);
        if y < reach && x < reach {
            fiber.iter_mut().for_each(|v| *v += 0.05 * gauss());
        }
    }
    let mut defect = vec![0.0; n];
    for image in 0..images {
        for y in 1..side / 2 {
            for x in 2..side / 2 + 1 {
                let row = image * positions + y * side + x;
                defect[row] = 1.0;
                for ch in 0..c {
                    aug[row * c + ch] += 1.5 + 0.3 * gauss();
                }
            }
        }
    }
    Level {
        c,
        positions,
        real,
        aug,
        defect,
        condition: positional_fibers(CONDITION_DIM, side, side),
    }
}

fn burn_rows(src: &[f32], width: usize, rows: &[usize], device: &Device) -> Tensor<2> {
    let mut out = Vec::with_capacity(rows.len() * width);
    for &r in rows {
        out.extend_from_slice(&src[r * width..(r + 1) * width]);
    }
    Tensor::from_data(TensorData::new(out, [rows.len(), width]), device)
}

fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// burn's loss on `rows` (as `inspect-train --device burn-cpu` computes it): (L_NF, term, loss).
fn burn_loss(
    decoder: &Decoder,
    lv: &Level,
    rows: &[usize],
    loss: &StepLoss,
    device: &Device,
) -> (f32, Option<f32>, Tensor<1>) {
    let x = burn_rows(&lv.real, lv.c, rows, device);
    let pos: Vec<usize> = rows.iter().map(|r| r % lv.positions).collect();
    let cond = burn_rows(&lv.condition, CONDITION_DIM, &pos, device);
    let out = decoder.forward(x, cond.clone());
    let nf = match loss.nf {
        NfLoss::Reference => nf_reference(out.logp.clone(), lv.c),
        NfLoss::Paper => nf_paper(out.z.clone(), out.log_jac_det.clone()),
    };
    let Some(objective) = loss.objective else {
        return (values(&nf)[0], None, nf);
    };
    let out_aug = decoder.forward(burn_rows(&lv.aug, lv.c, rows, device), cond);
    let mask: Vec<f32> = rows.iter().map(|&r| lv.defect[r]).collect();
    let pair = PairedFibers {
        z_real: out.z,
        logp_real: out.logp,
        z_aug: out_aug.z,
        logp_aug: out_aug.logp,
        defect: Tensor::from_data(TensorData::new(mask, [rows.len()]), device),
        channels: lv.c,
    };
    let term = objective_term(objective, &pair, loss.margin).expect("a term");
    (values(&nf)[0], Some(values(&term)[0]), nf + term)
}

/// burn's parameter gradients in the CPU flow's layout: per block W1, b1, W2, b2, g, offset
/// (FrEIA's `out x in` weights; burn keeps `in x out`).
fn burn_grads(decoder: &Decoder, grads: &Gradients) -> Vec<f32> {
    let grad = |p: &Param<Tensor<2>>| values(&p.val().grad(grads).expect("a gradient"));
    let grad1 = |p: &Option<Param<Tensor<1>>>| {
        values(
            &p.as_ref()
                .expect("a bias")
                .val()
                .grad(grads)
                .expect("a gradient"),
        )
    };
    let transposed = |v: Vec<f32>, rows: usize, cols: usize| {
        let mut out = vec![0.0; v.len()];
        for i in 0..rows {
            for j in 0..cols {
                out[j * rows + i] = v[i * cols + j];
            }
        }
        out
    };
    let mut out = Vec::new();
    for b in &decoder.blocks {
        let [d, h] = b.hidden.weight.val().dims();
        let [_, o] = b.output.weight.val().dims();
        out.extend(transposed(grad(&b.hidden.weight), d, h));
        out.extend(grad1(&b.hidden.bias));
        out.extend(transposed(grad(&b.output.weight), h, o));
        out.extend(grad1(&b.output.bias));
        out.extend(grad(&b.global_scale));
        out.extend(grad(&b.global_offset));
    }
    out
}

#[test]
fn parameter_gradients_equal_burns_for_every_objective() {
    let device = Device::flex().autodiff();
    for (c, side) in [(12usize, 8usize), (9, 6)] {
        let lv = level(c, side, 3, c as u64);
        let w = BlockWeights::decoder(c, CONDITION_DIM, 3, 40 + c as u64);
        let rows: Vec<usize> = (0..lv.defect.len()).step_by(2).collect();
        let objectives = [
            None,
            Some(Objective::Boundary),
            Some(Objective::Cl),
            Some(Objective::Likelihood),
            Some(Objective::Fusion),
        ];
        for nf in [NfLoss::Reference, NfLoss::Paper] {
            for objective in objectives {
                // A margin the defect's likelihood gap stays under: the hinge is active.
                let loss = StepLoss {
                    nf,
                    objective,
                    margin: 50.0,
                };
                let decoder = Decoder::from_weights(&w, &device);
                let (b_nf, b_term, total) = burn_loss(&decoder, &lv, &rows, &loss, &device);
                let b_grads = burn_grads(&decoder, &total.backward());

                let mut cpu = LevelTrainer::new(&w, rows.len());
                let fibers = lv.fibers();
                // lr 0: the step computes the gradients and leaves the weights as they are.
                let step = cpu.step(&fibers, &rows, &loss, 0.0);
                assert_eq!(cpu.flow.to_weights(), w);
                let what = format!("C={c} {nf:?} {objective:?}");
                // Some augmented fibers are the real ones: their pass was shared.
                assert_eq!(step.shared > 0, objective.is_some(), "{what}: {step:?}");
                assert!(
                    (step.nf as f32 - b_nf).abs() <= 1e-5 * b_nf.abs().max(1.0),
                    "{what}: L_NF {} vs burn {b_nf}",
                    step.nf
                );
                match (step.term, b_term) {
                    (Some(a), Some(b)) => assert!(
                        (a as f32 - b).abs() <= 1e-5 * b.abs().max(1.0),
                        "{what}: term {a} vs burn {b}"
                    ),
                    (None, None) => {}
                    other => panic!("{what}: terms {other:?}"),
                }
                let f64s = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
                let error = common::gradient_error(
                    &f64s(&cpu.flow.grads),
                    &f64s(&b_grads),
                    c,
                    CONDITION_DIM,
                );
                let top = b_grads.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                println!("{what}: gradient worst error per tensor {error:.2e} (largest {top:.3e})");
                assert!(error < 1e-5, "{what}: gradients off by {error:.2e}");
                // And any gradient the loss really has is non-zero in both.
                assert!(top > 0.0, "{what}: no gradient at all");
            }
        }
    }
}

#[test]
fn fifty_seeded_steps_follow_burns_trajectory() {
    follow_burn(&Device::flex().autodiff(), 50);
}

/// burn on a Vulkan device with its SPIR-V kernels. On Mesa's software Vulkan (lavapipe) the
/// first matrix product crashes the driver: cubecl-spirv 0.11.3 declares shared memory as a
/// pointer to a pointer (spirv-val rejects the module; docs/TRAINING.md).
#[cfg(feature = "vulkan")]
#[test]
fn burn_on_vulkan_follows_the_cpu_flow() {
    follow_burn(&Device::vulkan(Default::default()).autodiff(), 12);
}

/// burn on the GPU wgpu finds, WGSL kernels (Mesa's software Vulkan in CI): the GPU code path,
/// run for real.
#[cfg(feature = "wgpu")]
#[test]
fn burn_on_wgpu_follows_the_cpu_flow() {
    follow_burn(&Device::wgpu(Default::default()).autodiff(), 12);
}

/// `steps` seeded Adam steps of the CPU flow and of burn on `device` from the same weights on
/// the same fibers: the same losses at every step, weights that move alike.
fn follow_burn(device: &Device, steps: usize) {
    let (c, side, batch) = (10usize, 8usize, 32usize);
    let lv = level(c, side, 4, 3);
    let w = BlockWeights::decoder(c, CONDITION_DIM, 4, 77);
    let loss = StepLoss {
        nf: NfLoss::Reference,
        objective: Some(Objective::Fusion),
        margin: 0.5,
    };
    let fibers = lv.fibers();
    let mut cpu = LevelTrainer::new(&w, batch);
    let mut decoder = Decoder::from_weights(&w, device);
    let mut optim: ModuleOptimizer = AdamConfig::new().with_epsilon(1e-8).init();
    let mut rng = SplitMix::new(9);
    let n = lv.defect.len();
    let mut worst_nf = 0.0f32;
    for step in 0..steps {
        // Without the term for the first fifth, as a contrastive start epoch would.
        let loss = StepLoss {
            objective: (step >= steps / 5).then_some(Objective::Fusion),
            ..loss
        };
        let rows: Vec<usize> = (0..batch)
            .map(|_| (rng.next_u64() % n as u64) as usize)
            .collect();
        let lr = 2e-3;
        let got = cpu.step(&fibers, &rows, &loss, lr);
        let (b_nf, b_term, total) = burn_loss(&decoder, &lv, &rows, &loss, device);
        let grads = GradientsParams::from_grads(total.backward(), &decoder);
        decoder = optim.step(lr, decoder, grads);
        let error = (got.nf as f32 - b_nf).abs() / b_nf.abs().max(1.0);
        worst_nf = worst_nf.max(error);
        assert!(error < 1e-4, "step {step}: L_NF {} vs burn {b_nf}", got.nf);
        if let (Some(a), Some(b)) = (got.term, b_term) {
            assert!(
                (a as f32 - b).abs() < 1e-4 * b.abs().max(1.0),
                "step {step}: term {a} vs burn {b}"
            );
        }
    }
    println!("{steps} steps on {device:?}: L_NF worst relative difference {worst_nf:.2e}");
    // The weights moved, and moved alike.
    assert_ne!(cpu.flow.to_weights(), w);
    let cpu_w: Vec<f32> = cpu
        .flow
        .to_weights()
        .iter()
        .flat_map(|b| b.hidden_weight.clone())
        .collect();
    let burn_w: Vec<f32> = decoder
        .to_weights()
        .iter()
        .flat_map(|b| b.hidden_weight.clone())
        .collect();
    let moved = cpu_w
        .iter()
        .zip(w.iter().flat_map(|b| b.hidden_weight.iter()))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let apart = cpu_w
        .iter()
        .zip(&burn_w)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("hidden weights: moved up to {moved:.2e}, CPU vs burn up to {apart:.2e}");
    assert!(
        apart < 0.05 * moved,
        "CPU and burn weights drifted apart: {apart} of {moved}"
    );
}
