//! edge-inspector: on-device defect detection for tunnels, bridges and pavement.
//!
//! The daemon's data flow, one module per stage: [`frames`] -> [`tiler`] -> [`engine`] (tract
//! runs the [`bundle`]'s extractor and flow head) -> [`scorer`] -> [`alerts`] over a serial link,
//! driven by [`daemon`] with a validated [`config`]. [`onnx`] writes ONNX models (extractor
//! builder, flow export, test fixtures); [`fixtures`] holds known-function models and frames.

#![warn(missing_docs)]

pub mod alerts;
pub mod bundle;
pub mod config;
#[cfg(target_os = "linux")]
pub mod daemon;
#[cfg(feature = "data")]
pub mod dataset;
pub mod engine;
#[cfg(feature = "data")]
pub mod eval;
pub mod evidence;
#[cfg(feature = "train")]
pub mod export;
#[cfg(feature = "data")]
pub mod extractor;
#[cfg(feature = "data")]
pub mod features;
pub mod fixtures;
#[cfg(feature = "train")]
pub mod flow;
pub mod frames;
pub mod gpio;
pub mod kernels;
#[cfg(feature = "train")]
pub mod losses;
#[cfg(feature = "data")]
pub mod metrics;
pub mod monitor;
pub mod onnx;
#[cfg(feature = "data")]
pub mod plots;
#[cfg(feature = "data")]
mod records;
pub mod scorer;
#[cfg(feature = "data")]
pub mod sweep;
#[cfg(feature = "data")]
pub mod synth;
pub mod tiler;
#[cfg(feature = "train")]
pub mod train;
