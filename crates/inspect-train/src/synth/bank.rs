//! The defects of a source dataset, cut once, and the seeded augmentation of training images
//! with them: augmentation `k` of an image is fixed by the base seed, the image's content hash
//! and `k`, so it is the same whatever the file is called or in which order images come.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::anomaly::{synthesize, Augmented, Defect, SynthError};
use super::config::SynthesisSettings;
use crate::dataset::{load_image, load_mask, with_masks, Dataset, DatasetError};
use inspect_core::random::SplitMix;

/// Errors of loading a defect source or of one augmentation.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The source dataset could not be read.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// No source image had a defect pixel.
    #[error("{path}: no defect with a non-empty mask (of {files} files)")]
    Empty {
        /// The source folder.
        path: PathBuf,
        /// Files looked at.
        files: usize,
    },
    /// One augmentation failed.
    #[error("pasting a defect of {defect}: {source}")]
    Synth {
        /// The defect's image file.
        defect: PathBuf,
        /// The cause.
        source: SynthError,
    },
}

/// Defects cut from a source dataset by their masks.
#[derive(Debug)]
pub struct DefectBank {
    defects: Vec<(PathBuf, Defect)>,
    skipped: usize,
}

impl DefectBank {
    /// Reads every defect image of the configured source and cuts it by its mask (with the
    /// configured margin). Images whose mask is empty are skipped and counted.
    pub fn load(settings: &SynthesisSettings) -> Result<DefectBank, BankError> {
        let d = &settings.defects;
        let (root, samples) = match (&d.mvtec, &d.images, &d.masks) {
            (Some(root), _, _) => {
                let test = Dataset::mvtec(root)?.test;
                let keep = |class: &str| {
                    class != "good"
                        && (d.classes.is_empty() || d.classes.iter().any(|c| c == class))
                };
                (
                    root.clone(),
                    test.into_iter().filter(|s| keep(&s.class)).collect(),
                )
            }
            (None, Some(images), Some(masks)) => {
                (images.clone(), with_masks(images, masks, "defect")?)
            }
            // SynthesisSettings::parse rejects any other combination.
            _ => (PathBuf::new(), Vec::new()),
        };
        let mut bank = DefectBank {
            defects: Vec::new(),
            skipped: 0,
        };
        for sample in &samples {
            let Some(mask_path) = &sample.mask else {
                continue;
            };
            let image = load_image(&sample.image)?;
            let mask = load_mask(mask_path, &sample.image, image.dimensions())?;
            match Defect::cut(&image, &mask, settings.margin) {
                Ok(defect) => bank.defects.push((sample.image.clone(), defect)),
                Err(SynthError::EmptyMask) => bank.skipped += 1,
                Err(source) => {
                    return Err(BankError::Synth {
                        defect: sample.image.clone(),
                        source,
                    })
                }
            }
        }
        if bank.defects.is_empty() {
            return Err(BankError::Empty {
                path: root,
                files: samples.len(),
            });
        }
        Ok(bank)
    }

    /// Defects held.
    pub fn len(&self) -> usize {
        self.defects.len()
    }

    /// Whether no defect is held (never true after a successful [`DefectBank::load`]).
    pub fn is_empty(&self) -> bool {
        self.defects.is_empty()
    }

    /// Source images left out because their mask was empty.
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

/// Makes the augmented versions of training images.
#[derive(Debug)]
pub struct Synthesizer {
    settings: SynthesisSettings,
    bank: DefectBank,
    fingerprint: [u8; 32],
}

/// One augmentation and where its defect came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Augmentation {
    /// The image and its mask `M`.
    pub augmented: Augmented,
    /// The source image the defect was cut from.
    pub defect: PathBuf,
    /// The seed that fixed every draw.
    pub seed: u64,
}

impl Synthesizer {
    /// Loads the defect bank of `settings`.
    pub fn new(settings: SynthesisSettings) -> Result<Synthesizer, BankError> {
        let bank = DefectBank::load(&settings)?;
        // Everything that changes the output of an augmentation: the settings and the defect
        // files (names and sizes), but not where the config file lives.
        let mut h = Sha256::new();
        let mut s = settings.clone();
        s.defects.images = None;
        s.defects.masks = None;
        s.defects.mvtec = None;
        h.update(format!("{s:?}"));
        for (path, d) in &bank.defects {
            h.update(
                path.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or(b""),
            );
            h.update(d.image.as_raw());
            h.update(d.mask.as_raw());
        }
        Ok(Synthesizer {
            settings,
            bank,
            fingerprint: h.finalize().into(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &SynthesisSettings {
        &self.settings
    }

    /// The defects.
    pub fn bank(&self) -> &DefectBank {
        &self.bank
    }

    /// A hash of everything an augmentation depends on besides its seed and target: the
    /// settings and the defect pixels. Part of the feature-cache key.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// The seed of augmentation `k` of the image whose content hash is `image_hash`.
    pub fn seed_for(&self, image_hash: &[u8; 32], k: u32) -> u64 {
        let mut head = [0u8; 8];
        head.copy_from_slice(&image_hash[..8]);
        let mut rng =
            SplitMix::new(self.settings.seed ^ u64::from_le_bytes(head) ^ (u64::from(k) << 48));
        rng.next_u64()
    }

    /// Augments `target` with the draws of `seed`: a defect of the bank, a window of it, its
    /// transform and its place.
    pub fn augment(&self, target: &image::RgbImage, seed: u64) -> Result<Augmentation, BankError> {
        let mut rng = SplitMix::new(seed);
        let (path, whole) = &self.bank.defects[(rng.next_u64() % self.bank.len() as u64) as usize];
        let fail = |source| BankError::Synth {
            defect: path.clone(),
            source,
        };
        let windowed;
        let defect = if self.settings.window > 0 {
            windowed = whole
                .window(
                    rng.next_u64() as usize,
                    self.settings.window,
                    self.settings.margin,
                )
                .map_err(fail)?;
            &windowed
        } else {
            whole
        };
        let augmented =
            synthesize(target, defect, &self.settings.transform(), rng.next_u64()).map_err(fail)?;
        Ok(Augmentation {
            augmented,
            defect: path.clone(),
            seed,
        })
    }
}

/// SHA-256 of a file's bytes: an image's identity in seeds and cache keys.
pub fn file_hash(path: &Path) -> Result<[u8; 32], DatasetError> {
    let bytes = std::fs::read(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Sha256::digest(&bytes).into())
}
