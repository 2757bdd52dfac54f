//! Feature extractors for the flows (trainer side, feature `train`).
//!
//! [`weights`] reads PyTorch checkpoints; [`efficientnet`] writes EfficientNet-Lite0 as ONNX with
//! the project's ONNX writer (batch-norm folded, ReLU6 as `Clip`, three named taps at strides 8,
//! 16 and 32); [`adopt`] turns any ONNX network into an extractor by exposing named intermediate
//! tensors as outputs.

pub mod adopt;
pub mod efficientnet;
pub mod weights;

pub use weights::{Checkpoint, WeightsError};
