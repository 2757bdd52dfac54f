//! The exported head run by tract equals burn's decoders on the same fibers, and the daemon's
//! engine loads it from a bundle.
#![cfg(feature = "train")]

use burn::tensor::{Device, Tensor, TensorData};
use inspect_core::engine::{optimized_plan, run_plan};
use inspect_core::random::SplitMix;
use inspect_train::export::{head_onnx, LevelHead};
use inspect_train::flow::positional::{positional_fibers, CONDITION_DIM};
use inspect_train::flow::{BlockWeights, Decoder};

/// Weights as after some training: scales and offsets away from their start.
fn trained_like(channels: usize, blocks: usize, seed: u64) -> Vec<BlockWeights> {
    let mut rng = SplitMix::new(seed ^ 0xabc);
    (0..blocks)
        .map(|i| {
            let mut w = BlockWeights::init(channels, CONDITION_DIM, seed + i as u64);
            for g in &mut w.global_scale {
                *g += rng.unit() * 2.0 - 1.0;
            }
            for o in &mut w.global_offset {
                *o = (rng.unit() - 0.5) * 0.4;
            }
            w
        })
        .collect()
}

/// burn's log p of every fiber of `maps` (N x C x h x w), as `N x h x w`.
fn burn_logp(decoder: &Decoder, maps: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let device = Device::flex();
    let hw = h * w;
    // Fibers: row (image, position) holds the C values at that position.
    let mut fibers = vec![0.0f32; n * hw * c];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                fibers[(i * hw + p) * c + ch] = maps[(i * c + ch) * hw + p];
            }
        }
    }
    let pe = positional_fibers(CONDITION_DIM, h, w);
    let cond: Vec<f32> = (0..n).flat_map(|_| pe.iter().copied()).collect();
    let x = Tensor::<2>::from_data(TensorData::new(fibers, [n * hw, c]), &device);
    let cond = Tensor::<2>::from_data(TensorData::new(cond, [n * hw, CONDITION_DIM]), &device);
    decoder
        .forward(x, cond)
        .logp
        .to_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn tract_runs_the_exported_head_as_burn_runs_the_decoders() {
    // Two levels: odd and even channel counts, non-square maps, 8 and 3 blocks.
    let specs = [(8usize, 7usize, 4usize, 6usize, 8usize), (16, 10, 2, 3, 3)];
    let weights: Vec<Vec<BlockWeights>> = specs
        .iter()
        .map(|&(stride, c, _, _, blocks)| trained_like(c, blocks, stride as u64 * 100))
        .collect();
    let levels: Vec<LevelHead> = specs
        .iter()
        .zip(&weights)
        .map(|(&(stride, _, h, w, _), blocks)| LevelHead::named(stride, h, w, blocks))
        .collect();
    let onnx = head_onnx(&levels).unwrap();
    let n = 3;
    let mut rng = SplitMix::new(9);
    let inputs: Vec<(Vec<usize>, Vec<f32>)> = specs
        .iter()
        .map(|&(_, c, h, w, _)| {
            let values = (0..n * c * h * w).map(|_| rng.unit() * 4.0 - 2.0).collect();
            (vec![n, c, h, w], values)
        })
        .collect();
    let plan = optimized_plan(&onnx).unwrap();
    let feed: Vec<(&[usize], &[f32])> = inputs
        .iter()
        .map(|(s, v)| (s.as_slice(), v.as_slice()))
        .collect();
    let outputs = run_plan(&plan, &feed).unwrap();
    for (level, ((spec, blocks), (got, input))) in specs
        .iter()
        .zip(&weights)
        .zip(outputs.iter().zip(&inputs))
        .enumerate()
    {
        let &(_, c, h, w, _) = spec;
        let decoder = Decoder::from_weights(blocks, &Device::flex());
        let want = burn_logp(&decoder, &input.1, n, c, h, w);
        assert_eq!(got.len(), n * h * w);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let spread = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        println!("level {level}: max |tract - burn| = {worst:.2e} (|logp| up to {spread:.1})");
        assert!(worst <= 1e-4, "level {level}: {worst:.2e}");
    }
}
