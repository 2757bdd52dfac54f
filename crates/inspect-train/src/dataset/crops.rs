//! The paper's crop protocol: whole images with masks cut into a k x k grid of sub-images.
//!
//! Source images are taken in file-name order and [`Split`] deals them: `train_images` give the
//! training set: their crack-free crops go to `train/good`, their cracked crops are dropped
//! (training is on defect-free images only). `test_images` give the test set: crack-free crops
//! go to `test/good`, cracked crops to `test/crack` with their mask crops in
//! `ground_truth/crack/<name>_mask.png`. Cells are `floor(W / k) x floor(H / k)` pixels from the
//! top-left corner; the remainder pixels at the right and bottom edges are not used. A crop is
//! cracked when any of its mask pixels is > 127. Output names are `<stem>_r<row>c<col>.png`.
//!
//! With a held-out fold (`k` of `n`), the training images are split into `n` folds (contiguous
//! blocks in file-name order, or dealt in turn with [`Split::Interleaved`]) and fold `k` takes
//! the test role (whole frames: crack-free and cracked crops, masks): a model trained on the
//! other folds is scored on frames it never saw, for a threshold calibrated out of fold. The
//! test images are not used then.
//!
//! The result is an MVTec AD layout that [`super::Dataset::mvtec`] reads.

use std::path::Path;

use image::GenericImageView;

use super::{load_image, load_mask, with_masks, DatasetError};

/// The stem of the image a crop was cut from, read from the crop's name
/// (`<stem>_r<row>c<col>.png`); `None` for a file not named so.
pub fn source_stem(crop: &Path) -> Option<&str> {
    let name = crop.file_stem()?.to_str()?;
    let (stem, cell) = name.rsplit_once("_r")?;
    let (row, col) = cell.split_once('c')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(row) && digits(col) && !stem.is_empty()).then_some(stem)
}

/// The frame of each image: an image cut into the daemon's tiles (`cut`) is a frame, and so is
/// any whole image, except that crops cut from one image (by [`source_stem`]) share one.
/// Frames are numbered from 0 in order of appearance.
pub fn frames_of<P: AsRef<Path>>(images: &[P], cut: bool) -> Vec<usize> {
    if cut {
        return (0..images.len()).collect();
    }
    let mut by_stem: std::collections::HashMap<&str, usize> = Default::default();
    let mut next = 0;
    images
        .iter()
        .map(|image| {
            let fresh = |next: &mut usize| {
                *next += 1;
                *next - 1
            };
            match source_stem(image.as_ref()) {
                Some(stem) => *by_stem.entry(stem).or_insert_with(|| fresh(&mut next)),
                None => fresh(&mut next),
            }
        })
        .collect()
}

/// How the source images, in file-name order, are dealt to the training and test sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Split {
    /// The first `train_images` train, the next `test_images` test; folds are contiguous
    /// blocks. Where files are named by photo series (DeepCrack), this is a change of series.
    #[default]
    Blocks,
    /// Dealt in turn, in proportion (150 + 150: even positions train, odd ones test); folds
    /// deal the training images in turn too. Every run of file names, so every photo series,
    /// lands on both sides.
    Interleaved,
}

/// Parameters of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropProtocol {
    /// Cells per side (the paper: 3).
    pub grid: u32,
    /// Source images for the training set.
    pub train_images: usize,
    /// Source images for the test set.
    pub test_images: usize,
    /// How the first `train_images + test_images` sources are dealt.
    pub split: Split,
    /// A fold of the training images written as the test set instead (the test images are
    /// then not used).
    pub held_out_fold: Option<Fold>,
}

/// Where one source image goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Train,
    Test,
    Unused,
}

impl CropProtocol {
    /// The role of each of `sources` images in file-name order.
    fn roles(&self, sources: usize) -> Vec<Role> {
        let needed = self.train_images + self.test_images;
        let mut training_seen = 0;
        (0..sources)
            .map(|i| {
                if i >= needed {
                    return Role::Unused;
                }
                let training = match self.split {
                    Split::Blocks => i < self.train_images,
                    // Bresenham's dealing: the test count steps up `test_images` times.
                    Split::Interleaved => {
                        (i + 1) * self.test_images / needed == i * self.test_images / needed
                    }
                };
                match (training, self.held_out_fold) {
                    (true, None) => Role::Train,
                    (false, None) => Role::Test,
                    (false, Some(_)) => Role::Unused,
                    (true, Some(fold)) => {
                        training_seen += 1;
                        if fold.holds(training_seen - 1, self.train_images, self.split) {
                            Role::Test
                        } else {
                            Role::Train
                        }
                    }
                }
            })
            .collect()
    }
}

/// Fold `index` (from 0) of `count` folds of the training images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fold {
    /// Which fold, from 0.
    pub index: usize,
    /// How many folds.
    pub count: usize,
}

impl Fold {
    /// Whether training image `image` (its position among the `images` training images) lies
    /// in this fold: a contiguous block for [`Split::Blocks`], every `count`-th image for
    /// [`Split::Interleaved`].
    pub fn holds(&self, image: usize, images: usize, split: Split) -> bool {
        match split {
            Split::Blocks => image * self.count / images.max(1) == self.index,
            Split::Interleaved => image % self.count == self.index,
        }
    }
}

/// How many source images and crops went where.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CropSummary {
    /// Source images whose crack-free crops were written for training.
    pub training_images: usize,
    /// Source images written whole as the test set (the held-out fold's, with one).
    pub test_images: usize,
    /// Crack-free crops of training images.
    pub train_good: usize,
    /// Cracked crops of training images, left out.
    pub train_dropped: usize,
    /// Crack-free crops of test images.
    pub test_good: usize,
    /// Cracked crops of test images (with masks).
    pub test_crack: usize,
}

/// Runs the protocol on `images` with masks of the same stem in `masks`, writing into `out`.
pub fn prepare_crops(
    images: &Path,
    masks: &Path,
    protocol: &CropProtocol,
    out: &Path,
) -> Result<CropSummary, DatasetError> {
    let sources = with_masks(images, masks, "crack")?;
    if let Some(fold) = protocol.held_out_fold {
        if fold.count < 2 || fold.index >= fold.count || fold.count > protocol.train_images {
            return Err(DatasetError::Layout {
                path: images.to_path_buf(),
                message: format!(
                    "held-out fold {} of {}: a fold must be 1..={} of 2..={} blocks of the {} \
                     training images",
                    fold.index + 1,
                    fold.count,
                    fold.count,
                    protocol.train_images,
                    protocol.train_images
                ),
            });
        }
    }
    let needed = protocol.train_images + protocol.test_images;
    if protocol.grid == 0 || needed > sources.len() {
        return Err(DatasetError::Layout {
            path: images.to_path_buf(),
            message: format!(
                "{} images with masks, but the protocol asks for {} training + {} test images \
                 and a grid of {} (at least 1)",
                sources.len(),
                protocol.train_images,
                protocol.test_images,
                protocol.grid
            ),
        });
    }
    let dirs = [
        "train/good",
        "test/good",
        "test/crack",
        "ground_truth/crack",
    ];
    for d in dirs {
        let path = out.join(d);
        std::fs::create_dir_all(&path).map_err(|source| DatasetError::Io { path, source })?;
    }
    let write = |img: &image::DynamicImage, rel: String| -> Result<(), DatasetError> {
        let path = out.join(rel);
        img.save(&path).map_err(|e| DatasetError::Decode {
            path: path.clone(),
            message: e.to_string(),
        })
    };
    let mut summary = CropSummary::default();
    for (sample, role) in sources.iter().zip(protocol.roles(sources.len())) {
        let for_training = match role {
            Role::Train => true,
            Role::Test => false,
            Role::Unused => continue,
        };
        let image = load_image(&sample.image)?;
        let Some(mask_path) = &sample.mask else {
            continue;
        };
        match role {
            Role::Train => summary.training_images += 1,
            _ => summary.test_images += 1,
        }
        let mask = load_mask(mask_path, &sample.image, image.dimensions())?;
        let (cw, ch) = (
            image.width() / protocol.grid,
            image.height() / protocol.grid,
        );
        let stem = sample
            .image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for r in 0..protocol.grid {
            for c in 0..protocol.grid {
                let (x, y) = (c * cw, r * ch);
                let crop = image::DynamicImage::ImageRgb8(image.view(x, y, cw, ch).to_image());
                let mcrop = mask.view(x, y, cw, ch).to_image();
                let cracked = mcrop.pixels().any(|p| p.0[0] > 127);
                let name = format!("{stem}_r{r}c{c}");
                match (for_training, cracked) {
                    (true, false) => {
                        write(&crop, format!("train/good/{name}.png"))?;
                        summary.train_good += 1;
                    }
                    (true, true) => summary.train_dropped += 1,
                    (false, false) => {
                        write(&crop, format!("test/good/{name}.png"))?;
                        summary.test_good += 1;
                    }
                    (false, true) => {
                        write(&crop, format!("test/crack/{name}.png"))?;
                        let m = image::DynamicImage::ImageLuma8(mcrop);
                        write(&m, format!("ground_truth/crack/{name}_mask.png"))?;
                        summary.test_crack += 1;
                    }
                }
            }
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crops_source_is_read_from_its_name_and_other_names_have_none() {
        let stem = |p: &str| source_stem(Path::new(p)).map(str::to_owned);
        assert_eq!(
            stem("test/good/IMG_25-4_r2c0.png").as_deref(),
            Some("IMG_25-4")
        );
        assert_eq!(stem("11203_r10c2.png").as_deref(), Some("11203"));
        for other in [
            "frame.png",
            "a_rxc1.png",
            "a_r1c.png",
            "_r1c1.png",
            "a_r1d1.png",
        ] {
            assert_eq!(stem(other), None, "{other}");
        }
    }

    #[test]
    fn crops_of_one_image_share_a_frame_and_other_images_have_their_own() {
        let images = [
            "good/a_r0c0.png",
            "b.png",
            "crack/a_r1c2.png",
            "good/c_r0c1.png",
            "b.png",
            "crack/c_r2c2.png",
        ];
        assert_eq!(frames_of(&images, false), [0, 1, 0, 2, 3, 2]);
        // Cut into tiles, each image is the frame of its own tiles.
        assert_eq!(frames_of(&images, true), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn folds_are_contiguous_blocks_that_cover_every_image_once() {
        let folds: Vec<Fold> = (0..3).map(|index| Fold { index, count: 3 }).collect();
        for images in [3, 10, 150] {
            let mut sizes = [0; 3];
            for image in 0..images {
                let holding: Vec<usize> = (0..3)
                    .filter(|&f| folds[f].holds(image, images, Split::Blocks))
                    .collect();
                assert_eq!(holding.len(), 1, "image {image} of {images}");
                sizes[holding[0]] += 1;
            }
            assert!(
                sizes
                    .iter()
                    .all(|&n| n >= images / 3 && n <= images / 3 + 1),
                "{sizes:?}"
            );
        }
        // Blocks, not strides: fold 0 of 5 over 150 images holds 0..30.
        let first = Fold { index: 0, count: 5 };
        assert!(first.holds(29, 150, Split::Blocks) && !first.holds(30, 150, Split::Blocks));
        // Interleaved: strides.
        assert!(first.holds(0, 150, Split::Interleaved) && first.holds(5, 150, Split::Interleaved));
        assert!(!first.holds(1, 150, Split::Interleaved));
    }

    #[test]
    fn an_interleaved_split_of_150_and_150_trains_on_even_positions() {
        let protocol = CropProtocol {
            grid: 3,
            train_images: 150,
            test_images: 150,
            split: Split::Interleaved,
            held_out_fold: None,
        };
        let roles = protocol.roles(302);
        for (i, role) in roles.iter().enumerate().take(300) {
            let expected = if i % 2 == 0 { Role::Train } else { Role::Test };
            assert_eq!(*role, expected, "image {i}");
        }
        assert_eq!(roles[300..], [Role::Unused, Role::Unused]);
        // Uneven: every count is kept.
        let uneven = CropProtocol {
            train_images: 200,
            test_images: 37,
            ..protocol
        };
        let roles = uneven.roles(237);
        assert_eq!(roles.iter().filter(|r| **r == Role::Test).count(), 37);
        assert_eq!(roles.iter().filter(|r| **r == Role::Train).count(), 200);
    }
}
