//! Each objective on a toy case whose value and gradient direction are known by hand.
#![cfg(feature = "train")]

use burn::tensor::{Device, Tensor, TensorData};
use inspect_train::losses::{
    boundary, contrastive, likelihood, lower_quantile, nf_paper, nf_reference, objective_term,
    Objective, PairedFibers,
};

fn device() -> Device {
    Device::flex().autodiff()
}

fn t1(v: &[f32]) -> Tensor<1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &device())
}

fn t2(rows: &[[f32; 2]]) -> Tensor<2> {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), 2]), &device())
}

fn vals<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-5
}

#[test]
fn nf_losses_in_both_forms() {
    // Reference form: -logsigmoid(logp / C), C = 2: logp 0 gives ln 2, logp 20 almost 0.
    let logp = t1(&[0.0, 20.0]).require_grad();
    let loss = nf_reference(logp.clone(), 2);
    let expected = (2f32.ln() + (1.0 + (-10f32).exp()).ln()) / 2.0;
    assert!(close(vals(&loss)[0], expected), "{:?}", vals(&loss));
    let g = vals(&logp.grad(&loss.backward()).unwrap());
    // d/dlogp = -(1 - sigmoid(logp/C)) / (C N): -0.125 at 0, saturated (~0) at 20.
    assert!(close(g[0], -0.125), "{g:?}");
    assert!(g[1] < 0.0 && g[1].abs() < 1e-4, "{g:?}");

    // Paper form: 0.5 ||z||^2 - log|det J|.
    let z = t2(&[[1.0, 2.0]]).require_grad();
    let ldj = t1(&[0.5]).require_grad();
    let loss = nf_paper(z.clone(), ldj.clone());
    assert!(close(vals(&loss)[0], 2.0));
    let grads = loss.backward();
    assert_eq!(vals(&z.grad(&grads).unwrap()), vec![1.0, 2.0], "dL/dz = z");
    assert_eq!(vals(&ldj.grad(&grads).unwrap()), vec![-1.0]);
}

#[test]
fn boundary_pushes_normal_up_and_defects_down_past_the_margin() {
    assert_eq!(lower_quantile(vec![3.0, 1.0, 2.0], 0.05), Some(1.0));
    assert_eq!(lower_quantile(vec![f32::NAN], 0.05), None);
    // C = 1, so l = logp / 10. Normal l = 0..19: b_n = l sorted [floor(20 * 0.05)] = 1,
    // b_a = 0.9. Defect l = 0.5 (below b_a: no loss), 2.0 (above: 1.1).
    let mut l: Vec<f32> = (0..20).map(|i| i as f32).collect();
    l.extend([0.5, 2.0]);
    let logp = t1(&l.iter().map(|v| v * 10.0).collect::<Vec<_>>()).require_grad();
    let mut defect = vec![0.0; 20];
    defect.extend([1.0, 1.0]);
    let loss = boundary(logp.clone(), t1(&defect), 1);
    // Normal: mean(1 - 0, 1 - 1) = 0.5; defect: 2.0 - 0.9 = 1.1.
    assert!(close(vals(&loss)[0], 1.6), "{:?}", vals(&loss));
    let g = vals(&logp.grad(&loss.backward()).unwrap());
    assert!(
        g[0] < 0.0,
        "the least likely normal fiber is pushed up: {}",
        g[0]
    );
    assert!(close(g[0], -0.05), "{}", g[0]);
    assert_eq!(g[5], 0.0, "normal fibers above the boundary are left alone");
    assert_eq!(g[20], 0.0, "a defect already below b_a is left alone");
    assert!(
        close(g[21], 0.1),
        "the likely defect fiber is pushed down: {}",
        g[21]
    );
}

#[test]
fn cl_separates_on_the_mask_and_aligns_off_it() {
    // Fiber 0 on the mask, orthogonal; fiber 1 off it, identical: -1 (best possible).
    let real = t2(&[[1.0, 0.0], [1.0, 0.0]]);
    let aug = t2(&[[0.0, 1.0], [1.0, 0.0]]).require_grad();
    let loss = contrastive(real, aug.clone(), t1(&[1.0, 0.0]));
    assert!(close(vals(&loss)[0], -1.0));
    let g = vals(&aug.grad(&loss.backward()).unwrap());
    // d cos / d aug0 = real0 - cos * aug0 = (1, 0): descent turns aug0 away from real0.
    assert!(close(g[0], 1.0) && close(g[1], 0.0), "{g:?}");
    // Off the mask, identical fibers sit at the optimum: no gradient.
    assert!(g[2].abs() < 1e-6 && g[3].abs() < 1e-6, "{g:?}");
}

#[test]
fn likelihood_pulls_normal_together_and_pushes_defects_apart_up_to_the_margin() {
    let real = t1(&[0.0, 0.0]);
    let aug = t1(&[0.5, 0.2]).require_grad();
    let defect = t1(&[1.0, 0.0]);
    let loss = likelihood(real.clone(), aug.clone(), defect.clone(), 1, 1.0);
    // off = 0.2, on = 0.5 below the margin 1: 0.2 + (1 - 0.5).
    assert!(close(vals(&loss)[0], 0.7), "{:?}", vals(&loss));
    let g = vals(&aug.grad(&loss.backward()).unwrap());
    assert!(
        close(g[0], -1.0),
        "defect pushed further from the real one: {g:?}"
    );
    assert!(
        close(g[1], 1.0),
        "normal pulled back to the real one: {g:?}"
    );
    // Past the margin, the defect term is spent.
    let far = t1(&[2.0, 0.2]).require_grad();
    let loss = likelihood(real.clone(), far.clone(), defect, 1, 1.0);
    assert!(close(vals(&loss)[0], 0.2));
    assert_eq!(vals(&far.grad(&loss.backward()).unwrap())[0], 0.0);
    // No defect in the batch: the off-mask mean only.
    let loss = likelihood(real, t1(&[0.5, 0.2]), t1(&[0.0, 0.0]), 1, 1.0);
    assert!(close(vals(&loss)[0], 0.35));
}

#[test]
fn fusion_is_boundary_plus_likelihood() {
    let fibers = PairedFibers {
        z_real: t2(&[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]),
        logp_real: t1(&[-1.0, -2.0, -3.0]),
        z_aug: t2(&[[0.0, 1.0], [0.0, 1.0], [0.4, 0.6]]),
        // The defect fiber is as likely as the normal ones: boundary and likelihood both act.
        logp_aug: t1(&[1.0, -2.5, -3.0]),
        defect: t1(&[1.0, 0.0, 0.0]),
        channels: 2,
    };
    let value = |o| vals(&objective_term(o, &fibers, 1.0).unwrap())[0];
    assert!(objective_term(Objective::None, &fibers, 1.0).is_none());
    let (b, l, f) = (
        value(Objective::Boundary),
        value(Objective::Likelihood),
        value(Objective::Fusion),
    );
    assert!(close(f, b + l), "{f} vs {b} + {l}");
    assert!(b > 0.0 && l > 0.0);
    assert!(
        value(Objective::Cl) < 0.0,
        "aligned off the mask, apart on it"
    );
}
