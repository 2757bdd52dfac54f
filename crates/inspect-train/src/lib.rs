//! inspect-train: the offline trainer of edge-inspector's model bundles.
//!
//! From defect-free images only: [`dataset`]s of crops, synthetic anomalies by Poisson image
//! editing ([`synth`]), the EfficientNet-Lite0 [`extractor`] built as ONNX (fp32 or int8) and
//! its cached [`features`], CFlow-AD's conditional normalizing [`flow`]s trained ([`train`],
//! feature `train`) with the paper's objectives ([`losses`]), evaluated through the same
//! detector the daemon runs ([`eval`], [`metrics`], [`plots`], [`sweep`]; tile decisions by
//! measurement: [`decisions`], [`score_choice`]) and [`export`]ed as
//! the bundle `inspectd` loads. [`workflows`] are the `inspect-train` subcommands as library
//! calls: each takes a job and returns what it made. Without the `train` feature the crate is
//! everything but the flows (light enough to test under qemu for the boards).

#![warn(missing_docs)]

pub mod dataset;
pub mod decisions;
pub mod eval;
#[cfg(feature = "train")]
pub mod export;
pub mod extractor;
pub mod features;
#[cfg(feature = "train")]
pub mod flow;
pub mod ladder;
#[cfg(feature = "train")]
pub mod losses;
pub mod metrics;
pub mod plots;
mod records;
pub mod score_choice;
pub mod sweep;
pub mod synth;
#[cfg(feature = "train")]
mod tensors;
#[cfg(feature = "train")]
pub mod train;
#[cfg(feature = "train")]
pub mod workflows;
