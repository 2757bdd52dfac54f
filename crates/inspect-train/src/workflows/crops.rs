//! `inspect-train prepare-crops`: the paper's crop protocol with its default split.

use std::path::Path;

use super::WorkflowError;
use crate::dataset::crops::{prepare_crops, CropProtocol, CropSummary, Fold, Split};
use crate::dataset::with_masks;

/// What `prepare-crops` is asked; counts left out take their defaults.
#[derive(Clone, Copy, Debug)]
pub struct CropRequest {
    /// Cells per side.
    pub grid: u32,
    /// Source images for training (default: half).
    pub train_images: Option<usize>,
    /// Source images for testing (default: the rest).
    pub test_images: Option<usize>,
    /// How the sources are dealt.
    pub split: Split,
    /// A fold of the training images written as the test set instead.
    pub held_out_fold: Option<Fold>,
}

/// Cuts `images` (with `masks`) into a `grid` x `grid` layout under `out` as `request` asks.
/// Returns what went where.
pub fn prepare_split(
    images: &Path,
    masks: &Path,
    request: &CropRequest,
    out: &Path,
) -> Result<CropSummary, WorkflowError> {
    let total = with_masks(images, masks, "crack")?.len();
    let train = request.train_images.unwrap_or(total / 2);
    let protocol = CropProtocol {
        grid: request.grid,
        train_images: train,
        test_images: request.test_images.unwrap_or(total.saturating_sub(train)),
        split: request.split,
        held_out_fold: request.held_out_fold,
    };
    Ok(prepare_crops(images, masks, &protocol, out)?)
}
