//! Writing ONNX models from Rust.
//!
//! The daemon only reads ONNX, but the project also *makes* ONNX: the extractor builder, the flow
//! export of the trainer and the known-function models of the tests. They all go through
//! [`ModelBuilder`], which fills the prost types that `tract_onnx::pb` exposes and writes IR 8,
//! opset 17 files that tract and onnxruntime both read.

mod builder;

pub use builder::{Attr, Dim, ModelBuilder, OnnxWriteError, Padding, IR_VERSION, OPSET_VERSION};
