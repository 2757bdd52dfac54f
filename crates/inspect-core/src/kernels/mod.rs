//! The project's own compute kernels, and the tract ops that run them inside optimized plans.
//!
//! [`depthwise`] (channel planes) and [`channels_last`] hold the depthwise kernels (NEON, AVX2,
//! AVX-512, portable) and [`tract_ops`] the op and the model patch ([`use_project_kernels`])
//! that swaps them in for tract's before optimization;
//! [`int_sum`] and [`requantize`] take over what tract adds around its int8 convolutions while
//! optimizing them: the activation sums, the element-wise tail that turns the i32 accumulator
//! back into int8, and the float-to-int8 quantizers (applied after optimization), which
//! [`fuse_depthwise_quantize`] then folds into the depthwise op they follow.

pub mod channels_last;
pub mod depthwise;
pub mod int_sum;
pub mod requantize;
pub mod tract_ops;

pub use int_sum::use_project_sums;
pub use requantize::{skip_zero_corrections, use_project_quantize, use_project_requantize};
pub use tract_ops::{fuse_depthwise_quantize, use_project_kernels};

/// An output tensor of `shape` for an op whose kernel writes every element: left uninitialised,
/// since zeroing it first is a whole extra pass over memory per op per tile.
///
/// # Safety
/// The caller must write every element before the tensor is read.
unsafe fn output_tensor<T: tract_onnx::prelude::Datum + Copy>(
    shape: &[usize],
) -> tract_onnx::prelude::TractResult<tract_onnx::prelude::Tensor> {
    // SAFETY: `T` is a plain number type and the caller overwrites the whole buffer.
    unsafe { tract_onnx::prelude::Tensor::uninitialized::<T>(shape) }
}

/// Inputs and checks the kernels' unit tests share.
#[cfg(test)]
mod test_support {
    /// `n` values in [-1, 1] from a xorshift seeded with `seed`.
    pub(crate) fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Every `got` within 1e-5 relative of `want`; `what` names the case in the failure.
    pub(crate) fn assert_close(got: &[f32], want: &[f32], what: impl Fn() -> String) {
        assert_eq!(got.len(), want.len(), "{}", what());
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{} at {i}: {a} vs {b}",
                what()
            );
        }
    }
}
