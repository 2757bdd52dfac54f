//! `inspect-train features`: the extractor run once over a folder and its augmentations, the
//! taps cached for every later fit.

use std::path::PathBuf;

use super::{read_file, WorkflowError};
use crate::dataset::list_images;
use crate::extractor::efficientnet::{INPUT_MEAN, INPUT_STD};
use crate::features::build::{BuildSummary, CacheBuild};
use crate::features::cache::FeatureCache;
use crate::features::FeatureExtractor;
use crate::synth::bank::Synthesizer;
use crate::synth::config::SynthesisSettings;
use inspect_core::tiler::Normalization;

/// What to cache.
#[derive(Clone, Debug)]
pub struct FeaturesJob {
    /// Extractor ONNX (every output is a tap).
    pub extractor: PathBuf,
    /// Folder of defect-free images.
    pub images: PathBuf,
    /// Trainer config with a `[synthesis]` table, for the augmentations (none: images alone).
    pub synthesis: Option<PathBuf>,
    /// Cache root.
    pub cache: PathBuf,
    /// Worker threads.
    pub workers: usize,
}

/// Fills the cache; returns its folder (the extractor's part of the root) and what was done.
pub fn fill_feature_cache(job: &FeaturesJob) -> Result<(PathBuf, BuildSummary), WorkflowError> {
    let onnx = read_file(&job.extractor)?;
    let normalization = Normalization {
        mean: INPUT_MEAN,
        std: INPUT_STD,
    };
    let fx =
        FeatureExtractor::new(&onnx, normalization).map_err(|source| WorkflowError::Extract {
            path: job.extractor.clone(),
            source,
        })?;
    let synth = match &job.synthesis {
        Some(path) => Some(Synthesizer::new(SynthesisSettings::load(path)?)?),
        None => None,
    };
    let store = FeatureCache::open(&job.cache, fx.hash())?;
    let files = list_images(&job.images)?;
    log::info!(
        "{} images of {}, {} workers, cache {}",
        files.len(),
        job.images.display(),
        job.workers,
        store.dir().display()
    );
    let summary = CacheBuild {
        extractor: &fx,
        synthesizer: synth.as_ref(),
        cache: &store,
        workers: job.workers,
        progress: true,
    }
    .run(&files)?;
    Ok((store.dir().to_path_buf(), summary))
}
