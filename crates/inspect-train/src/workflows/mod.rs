//! What `inspect-train`'s subcommands do, as library calls (feature `train`): build an
//! extractor, fill the feature cache, fit a bundle, sweep the objectives, draw synthetic
//! anomalies, cut crops. Each takes a plain job description and returns what it made; the
//! binary only parses its arguments into a job, calls, and prints the result, so tests and
//! other tools can drive the same steps.

pub mod crops;
pub mod enroll;
pub mod extractor;
pub mod features;
pub mod fit;
pub mod sign;
pub mod sweep;
pub mod synth;

use std::path::PathBuf;

use crate::dataset::DatasetError;
use crate::eval::EvalError;
use crate::extractor::adopt::AdoptError;
use crate::extractor::weights::WeightsError;
use crate::features::cache::CacheError;
use crate::features::ExtractError;
use crate::sweep::SweepError;
use crate::synth::bank::BankError;
use crate::synth::poisson::BlendError;
use crate::train::TrainError;
use inspect_core::settings::ConfigError;

pub use fit::TrainDevice;

/// Errors of the trainer's workflows; each names the file or option involved.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// A config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An objective other than `none` was asked for without a `[synthesis]` table.
    #[error("--loss {objective} needs synthetic anomalies: {source}")]
    NeedsSynthesis {
        /// The objective.
        objective: String,
        /// Why the synthesis settings could not be read.
        source: ConfigError,
    },
    /// A dataset folder or image is unusable.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Evaluation failed.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// Sweep results could not be read or written.
    #[error(transparent)]
    Sweep(#[from] SweepError),
    /// Building the EfficientNet-Lite0 extractor failed.
    #[error("building the extractor: {0}")]
    Extractor(#[from] crate::extractor::efficientnet::BuildError),
    /// The ImageNet checkpoint is unreadable.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// An ONNX model could not be tapped.
    #[error(transparent)]
    Adopt(#[from] AdoptError),
    /// Filling the feature cache failed.
    #[error("filling the feature cache: {0}")]
    Features(#[from] crate::features::build::BuildError),
    /// The feature cache cannot be opened.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The extractor cannot be loaded.
    #[error("{path}: {source}")]
    Extract {
        /// The extractor file.
        path: PathBuf,
        /// The cause.
        source: ExtractError,
    },
    /// The defect bank or an augmentation failed.
    #[error(transparent)]
    Synthesis(#[from] BankError),
    /// Poisson blending failed.
    #[error("blending {source_image} into {target}: {error}")]
    Blend {
        /// Image cut from.
        source_image: PathBuf,
        /// Image pasted into.
        target: PathBuf,
        /// The cause.
        error: BlendError,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An image could not be read or written.
    #[error("{path}: {source}")]
    Image {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: image::ImageError,
    },
    /// A figure could not be drawn.
    #[error("drawing the figure: {0}")]
    Figure(String),
    /// Options that do not go together.
    #[error("{0}")]
    Usage(String),
}

/// `count` threads, or every core when not given.
pub fn threads_or_cores(count: Option<u32>) -> usize {
    count.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |c| c as usize,
    )
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>, WorkflowError> {
    std::fs::read(path).map_err(|source| WorkflowError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a whole file, naming it in the error.
pub(crate) fn write_file(
    path: &std::path::Path,
    bytes: impl AsRef<[u8]>,
) -> Result<(), WorkflowError> {
    std::fs::write(path, bytes).map_err(|source| WorkflowError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Saves an image, naming the file in the error.
pub(crate) fn save_image<P, C>(
    image: &image::ImageBuffer<P, C>,
    path: &std::path::Path,
) -> Result<(), WorkflowError>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    image.save(path).map_err(|source| WorkflowError::Image {
        path: path.to_path_buf(),
        source,
    })
}
