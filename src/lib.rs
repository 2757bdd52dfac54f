//! edge-inspector: on-device defect detection for tunnels, bridges and pavement.
//!
//! The daemon's data flow, one module per stage: [`frames`] -> [`tiler`] -> [`engine`] (tract
//! runs the [`bundle`]'s extractor and flow head) -> [`scorer`] -> [`alerts`] over a serial link,
//! driven by [`daemon`] with a validated [`config`]. [`detector`] is tiler -> engine -> scorer
//! as one type, which the daemon, `eval` and calibration share. [`onnx`] writes ONNX models
//! (extractor builder, flow export, test fixtures); `fixtures` (feature `fixtures`, enabled for
//! tests, benches and examples only) holds known-function models and frames. Each table of the
//! daemon's [`config`] is defined and checked by the module it configures, with the vocabulary
//! of [`settings`]; `workflows` (feature `train`) is what `inspect-train`'s subcommands call. The
//! wire protocol is the `inspect-protocol` crate (ARCHITECTURE.md).

#![warn(missing_docs)]

pub mod alerts;
pub mod bundle;
pub mod config;
#[cfg(target_os = "linux")]
pub mod daemon;
#[cfg(feature = "data")]
pub mod dataset;
pub mod detector;
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
#[cfg(any(test, feature = "fixtures"))]
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
pub mod onnx;
#[cfg(feature = "data")]
pub mod plots;
pub mod random;
#[cfg(feature = "data")]
mod records;
pub mod scorer;
pub mod settings;
#[cfg(feature = "data")]
pub mod sweep;
#[cfg(feature = "data")]
pub mod synth;
pub mod tiler;
pub mod tract_env;
#[cfg(feature = "train")]
pub mod train;
#[cfg(feature = "train")]
pub mod workflows;
