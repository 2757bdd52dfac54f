//! inspect-core: the detector that runs on the device and in the trainer's evaluation.
//!
//! A frame goes [`tiler`] -> [`engine`] (tract runs the [`bundle`]'s extractor and flow head,
//! with the project's [`kernels`] for the ops tract runs slowly) -> [`scorer`]; [`detector`] is
//! those three as one type, so the daemon, `eval` and calibration run the same code. [`onnx`]
//! writes ONNX models (the extractor builder, the flow export, test fixtures); [`tract_env`]
//! holds tract's process-wide settings and imports nothing of the crate; [`settings`] is the
//! vocabulary every config table is validated with; [`smoothing`] is the anomaly map's Gaussian
//! filter; [`image_files`] lists the images of a folder; [`random`] is the seeded generator.
//! `fixtures` (feature `fixtures`, for tests, benches and examples only) holds known-function
//! models and frames. ARCHITECTURE.md says what may import what.

#![warn(missing_docs)]

pub mod bundle;
pub mod detector;
pub mod engine;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod image_files;
pub mod kernels;
pub mod onnx;
pub mod random;
pub mod scorer;
pub mod settings;
pub mod smoothing;
pub mod tiler;
pub mod tract_env;
