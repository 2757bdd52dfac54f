//! The project's own compute kernels, and the tract ops that run them inside optimized plans.
//!
//! [`depthwise`] (channel planes) and [`channels_last`] hold the depthwise kernels (NEON, AVX2,
//! AVX-512, portable) and [`tract_ops`] the op and the model patch ([`use_project_kernels`])
//! that swaps them in for tract's before optimization;
//! [`int_sum`] replaces the integer sums tract adds while optimizing int8 convolutions
//! ([`use_project_sums`], after optimization).

pub mod channels_last;
pub mod depthwise;
pub mod int_sum;
pub mod tract_ops;

pub use int_sum::use_project_sums;
pub use tract_ops::use_project_kernels;
