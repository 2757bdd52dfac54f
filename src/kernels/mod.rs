//! The project's own compute kernels, and the tract ops that run them inside optimized plans.
//!
//! [`depthwise`] (channel planes) and [`channels_last`] hold the depthwise kernels (NEON, AVX2,
//! AVX-512, portable) and [`tract_ops`] the op and the model patch ([`use_project_kernels`])
//! that swaps them in for tract's before optimization;
//! [`int_sum`] and [`requantize`] take over what tract adds around its int8 convolutions while
//! optimizing them: the activation sums, and the element-wise tail that turns the i32
//! accumulator back into int8 (applied after optimization).

pub mod channels_last;
pub mod depthwise;
pub mod int_sum;
pub mod requantize;
pub mod tract_ops;

pub use int_sum::use_project_sums;
pub use requantize::{skip_zero_corrections, use_project_requantize};
pub use tract_ops::use_project_kernels;
