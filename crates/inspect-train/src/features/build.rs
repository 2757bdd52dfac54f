//! Fills the feature cache: every training image and its augmentations through the extractor,
//! on all cores (one image per worker at a time), records already cached and intact are kept.
//! Unreadable images and failed augmentations are skipped with a warning and counted; a damaged
//! record is recomputed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::ProgressBar;

use super::cache::{CacheError, FeatureCache, FeatureRecord, RecordKey};
use super::{ExtractError, FeatureExtractor, Level};
use crate::records::progress_bar;
use crate::synth::anomaly::downsample_mask;
use crate::synth::bank::{file_hash, Synthesizer};
use inspect_core::tiler::resize_rgb;

/// Errors that stop the pass (anything about one image only is counted instead).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The cache could not be written.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The extractor failed on a valid image.
    #[error("{image}: {source}")]
    Extract {
        /// The image.
        image: PathBuf,
        /// The cause.
        source: ExtractError,
    },
    /// Not one image could be read.
    #[error("none of the {0} images could be read")]
    NoImages(usize),
}

/// The records of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedImage {
    /// The image file.
    pub image: PathBuf,
    /// Its record, then those of its augmentations that succeeded.
    pub keys: Vec<RecordKey>,
}

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuildSummary {
    /// Images with their records, in input order (unreadable images left out).
    pub images: Vec<CachedImage>,
    /// Records found intact in the cache.
    pub hits: usize,
    /// Records computed by this pass.
    pub computed: usize,
    /// Damaged records found and recomputed.
    pub repaired: usize,
    /// Images that could not be read.
    pub unreadable: usize,
    /// Augmentations that could not be made.
    pub failed_augmentations: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// A pass over `images`.
pub struct CacheBuild<'a> {
    /// The extractor.
    pub extractor: &'a FeatureExtractor,
    /// The augmentations to make (`None`: the images only).
    pub synthesizer: Option<&'a Synthesizer>,
    /// Where records go.
    pub cache: &'a FeatureCache,
    /// Worker threads (each runs one image at a time).
    pub workers: usize,
    /// Draw a progress bar on standard error (hidden anyway when it is not a terminal).
    pub progress: bool,
}

#[derive(Default)]
struct Counters {
    hits: AtomicUsize,
    computed: AtomicUsize,
    repaired: AtomicUsize,
    unreadable: AtomicUsize,
    failed: AtomicUsize,
}

impl CacheBuild<'_> {
    /// Runs the pass.
    pub fn run(&self, images: &[PathBuf]) -> Result<BuildSummary, BuildError> {
        let start = Instant::now();
        let per_image = self.records_per_image();
        let bar = progress_bar(
            self.progress,
            images.len() * per_image,
            "features {bar:40} {pos}/{len} records, {per_sec}, {eta} left",
        );
        let counters = Counters::default();
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<CachedImage>>> = Mutex::new(vec![None; images.len()]);
        let first_error: Mutex<Option<BuildError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..self.workers.max(1) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= images.len() || lock(&first_error).is_some() {
                        break;
                    }
                    match self.one_image(&images[i], &counters, &bar) {
                        Ok(entry) => lock(&results)[i] = entry,
                        Err(e) => {
                            lock(&first_error).get_or_insert(e);
                        }
                    }
                });
            }
        });
        bar.finish_and_clear();
        if let Some(e) = lock(&first_error).take() {
            return Err(e);
        }
        let images_done: Vec<CachedImage> = std::mem::take(&mut *lock(&results))
            .into_iter()
            .flatten()
            .collect();
        if images_done.is_empty() && !images.is_empty() {
            return Err(BuildError::NoImages(images.len()));
        }
        Ok(BuildSummary {
            images: images_done,
            hits: counters.hits.into_inner(),
            computed: counters.computed.into_inner(),
            repaired: counters.repaired.into_inner(),
            unreadable: counters.unreadable.into_inner(),
            failed_augmentations: counters.failed.into_inner(),
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Records per image: the image and each of its augmentations.
    fn records_per_image(&self) -> usize {
        1 + self
            .synthesizer
            .map_or(0, |s| s.settings().augmentations_per_image as usize)
    }

    /// Checks and fills the records of one image; `None` if it cannot be read.
    fn one_image(
        &self,
        path: &Path,
        counters: &Counters,
        bar: &ProgressBar,
    ) -> Result<Option<CachedImage>, BuildError> {
        let per_image = self.records_per_image();
        let unreadable = |message: String| {
            log::warn!("{message}; image skipped");
            counters.unreadable.fetch_add(1, Ordering::Relaxed);
            bar.inc(per_image as u64);
            Ok(None)
        };
        let hash = match file_hash(path) {
            Ok(h) => h,
            Err(e) => return unreadable(e.to_string()),
        };
        let mut keys = vec![RecordKey::Image { image: hash }];
        if let Some(s) = self.synthesizer {
            for k in 0..s.settings().augmentations_per_image {
                keys.push(RecordKey::Augmented {
                    image: hash,
                    synthesis: *s.fingerprint(),
                    seed: s.seed_for(&hash, k),
                });
            }
        }
        let mut missing = Vec::new();
        for key in &keys {
            match self.cache.load(key) {
                Ok(Some(_)) => {
                    counters.hits.fetch_add(1, Ordering::Relaxed);
                    bar.inc(1);
                }
                Ok(None) => missing.push(*key),
                Err(e @ CacheError::Corrupt { .. }) => {
                    log::warn!("{e}; recomputing it");
                    counters.repaired.fetch_add(1, Ordering::Relaxed);
                    missing.push(*key);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if missing.is_empty() {
            return Ok(Some(CachedImage {
                image: path.to_path_buf(),
                keys,
            }));
        }
        let image = match crate::dataset::load_image(path) {
            Ok(i) => i,
            Err(e) => {
                // Already counted hits stay in the cache; the image is left out all the same.
                return unreadable(e.to_string());
            }
        };
        let side = self.extractor.input_size();
        let resized = resize_rgb(&image, side, side);
        let extract = |img: &image::RgbImage| {
            self.extractor
                .extract(img)
                .map_err(|source| BuildError::Extract {
                    image: path.to_path_buf(),
                    source,
                })
        };
        let mut failed = Vec::new();
        for key in &missing {
            let record = match (key, self.synthesizer) {
                (RecordKey::Augmented { seed, .. }, Some(synth)) => {
                    match synth.augment(&resized, *seed) {
                        Ok(aug) => {
                            let levels = extract(&aug.augmented.image)?;
                            let masks =
                                level_masks(&aug.augmented.mask, &levels).map_err(|source| {
                                    BuildError::Extract {
                                        image: path.to_path_buf(),
                                        source,
                                    }
                                })?;
                            FeatureRecord { levels, masks }
                        }
                        Err(e) => {
                            log::warn!("{}: augmentation seed {seed:016x}: {e}", path.display());
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                            bar.inc(1);
                            failed.push(*key);
                            continue;
                        }
                    }
                }
                // Keys of augmentations exist only with a synthesizer: this is the image.
                _ => FeatureRecord {
                    levels: extract(&resized)?,
                    masks: Vec::new(),
                },
            };
            self.cache.store(key, &record)?;
            counters.computed.fetch_add(1, Ordering::Relaxed);
            bar.inc(1);
        }
        keys.retain(|k| !failed.contains(k));
        Ok(Some(CachedImage {
            image: path.to_path_buf(),
            keys,
        }))
    }
}

/// `M` at each level: nearest sampling at the level's stride, which must divide the input side.
fn level_masks(mask: &image::GrayImage, levels: &[Level]) -> Result<Vec<Vec<u8>>, ExtractError> {
    let side = mask.width();
    levels
        .iter()
        .map(|l| {
            let stride = side / l.height.max(1);
            let m = downsample_mask(mask, stride.max(1));
            if l.height != l.width || stride * l.height != side {
                return Err(ExtractError::OutputShape {
                    name: l.name.clone(),
                    shape: vec![1, l.channels as usize, l.height as usize, l.width as usize],
                });
            }
            Ok(m)
        })
        .collect()
}

/// Locks a mutex, going on with the data if a worker panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
