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
pub mod config;
#[cfg(target_os = "linux")]
pub mod daemon;
#[cfg(feature = "data")]
pub mod dataset;
#[cfg(feature = "data")]
pub mod eval;
pub mod evidence;
#[cfg(feature = "train")]
pub mod export;
#[cfg(feature = "data")]
pub mod extractor;
#[cfg(feature = "data")]
pub mod features;
#[cfg(feature = "train")]
pub mod flow;
pub mod frames;
pub mod gpio;
#[cfg(feature = "train")]
pub mod losses;
#[cfg(feature = "data")]
pub mod metrics;
#[cfg(feature = "data")]
pub mod plots;
#[cfg(feature = "data")]
mod records;
#[cfg(feature = "data")]
pub mod sweep;
#[cfg(feature = "data")]
pub mod synth;
#[cfg(feature = "train")]
pub mod train;
#[cfg(feature = "train")]
pub mod workflows;
