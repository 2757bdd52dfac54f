//! `inspect-train blend` and `synth-sheet`: Poisson image editing on files, and a contact sheet
//! of the synthetic anomalies the trainer would make.

use std::path::{Path, PathBuf};

use super::{save_image, WorkflowError};
use crate::dataset::{list_images, load_image};
use crate::synth::bank::{file_hash, Synthesizer};
use crate::synth::config::SynthesisSettings;
use crate::synth::poisson::seamless_clone;
use crate::synth::sheet::contact_sheet;
use inspect_core::tiler::resize_rgb;

/// Pastes the part of `source` under `mask` (> 127) into `target` centred at `at`, with Poisson
/// blending, and writes the result to `out`.
pub fn blend_files(
    target: &Path,
    source: &Path,
    mask: &Path,
    at: (i64, i64),
    out: &Path,
) -> Result<(), WorkflowError> {
    let t = load_image(target)?;
    let s = load_image(source)?;
    let m = image::open(mask)
        .map_err(|e| WorkflowError::Image {
            path: mask.to_path_buf(),
            source: e,
        })?
        .into_luma8();
    let blended = seamless_clone(&s, &t, &m, at).map_err(|error| WorkflowError::Blend {
        source_image: source.to_path_buf(),
        target: target.to_path_buf(),
        error,
    })?;
    save_image(&blended, out)
}

/// A contact sheet of synthetic anomalies.
#[derive(Clone, Debug)]
pub struct SheetJob {
    /// Trainer config with a `[synthesis]` table.
    pub synthesis: PathBuf,
    /// Folder of defect-free images.
    pub images: PathBuf,
    /// Samples on the sheet.
    pub count: usize,
    /// Side the images are resized to before pasting (the extractor's input).
    pub size: u32,
    /// Side of each picture on the sheet.
    pub cell: u32,
    /// Output PNG.
    pub out: PathBuf,
}

/// Images spread evenly over `folder`, `count` at most.
fn spread(folder: &Path, count: usize) -> Result<Vec<PathBuf>, WorkflowError> {
    let all = list_images(folder)?;
    if all.is_empty() {
        return Err(WorkflowError::Usage(format!(
            "{}: no PNG or JPEG image",
            folder.display()
        )));
    }
    let step = all.len().div_ceil(count).max(1);
    Ok(all.into_iter().step_by(step).take(count).collect())
}

/// Draws the sheet: per image, the image, its first augmentation (what the feature cache
/// holds) and that with the mask's outline. Returns the samples drawn.
pub fn synth_sheet(job: &SheetJob) -> Result<usize, WorkflowError> {
    let synth = Synthesizer::new(SynthesisSettings::load(&job.synthesis)?)?;
    log::info!(
        "{} defects loaded ({} sources with empty masks skipped)",
        synth.bank().len(),
        synth.bank().skipped()
    );
    let mut samples = Vec::new();
    for path in spread(&job.images, job.count)? {
        let image = resize_rgb(&load_image(&path)?, job.size, job.size);
        let seed = synth.seed_for(&file_hash(&path)?, 0);
        let aug = synth.augment(&image, seed)?;
        log::info!(
            "{}: defect from {}, seed {seed:016x}",
            path.display(),
            aug.defect.display()
        );
        samples.push((image, aug.augmented));
    }
    save_image(&contact_sheet(&samples, 2, job.cell), &job.out)?;
    Ok(samples.len())
}
