//! `inspect-train prepare-crops`: the paper's crop protocol with its default split.

use std::path::Path;

use super::WorkflowError;
use crate::dataset::crops::{prepare_crops, CropProtocol, CropSummary, Fold};
use crate::dataset::with_masks;

/// Cuts `images` (with `masks`) into a `grid` x `grid` layout under `out`: the first
/// `train_images` sources (default: half) for training, the next `test_images` (default: the
/// rest) for testing, or with `held_out_fold` that block of the training images as the test
/// set. Returns the split used and what went where.
pub fn prepare_split(
    images: &Path,
    masks: &Path,
    grid: u32,
    train_images: Option<usize>,
    test_images: Option<usize>,
    held_out_fold: Option<Fold>,
    out: &Path,
) -> Result<(CropProtocol, CropSummary), WorkflowError> {
    let total = with_masks(images, masks, "crack")?.len();
    let train = train_images.unwrap_or(total / 2);
    let protocol = CropProtocol {
        grid,
        train_images: train,
        test_images: match held_out_fold {
            Some(_) => 0,
            None => test_images.unwrap_or(total.saturating_sub(train)),
        },
        held_out_fold,
    };
    let summary = prepare_crops(images, masks, &protocol, out)?;
    Ok((protocol, summary))
}
