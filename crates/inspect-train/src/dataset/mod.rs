//! Image datasets for training and evaluation (trainer side, feature `train`).
//!
//! Two layouts: MVTec AD (`train/good`, `test/<defect>`, `ground_truth/<defect>/<name>_mask.png`)
//! and a generic one (a folder of normal images; a folder of defect images with a parallel folder
//! of masks of the same file stem). Images may be grey, RGB or RGBA (all read as RGB8); masks
//! are binarized (> 127 is defect). A defect image without its mask, or a mask of another size,
//! is an error that names the files. [`crops`] implements the paper's crop protocol.

pub mod crops;

use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};

/// Errors of reading a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A folder could not be listed.
    #[error("{path}: {source}")]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An image or mask could not be decoded.
    #[error("{path}: cannot decode: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Decoder message.
        message: String,
    },
    /// A defect image has no mask.
    #[error("{image}: no mask (expected {expected})")]
    MissingMask {
        /// The defect image.
        image: PathBuf,
        /// Where the mask was looked for.
        expected: PathBuf,
    },
    /// A mask does not have its image's size.
    #[error("{mask} is {mask_w}x{mask_h} but its image {image} is {image_w}x{image_h}")]
    MaskSize {
        /// The mask.
        mask: PathBuf,
        /// The image.
        image: PathBuf,
        /// Mask width.
        mask_w: u32,
        /// Mask height.
        mask_h: u32,
        /// Image width.
        image_w: u32,
        /// Image height.
        image_h: u32,
    },
    /// The layout is not what it should be.
    #[error("{path}: {message}")]
    Layout {
        /// The folder.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
}

/// One image of a dataset, with its mask if it shows a defect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The image file.
    pub image: PathBuf,
    /// The mask file (defect images only).
    pub mask: Option<PathBuf>,
    /// `good`, or the defect class (MVTec folder name, `defect` in the generic layout).
    pub class: String,
}

/// A dataset: defect-free training images and a labelled test set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dataset {
    /// Defect-free training images.
    pub train: Vec<Sample>,
    /// Test images, defect-free (`class == "good"`) and defective (with masks).
    pub test: Vec<Sample>,
}

/// The image files (PNG, JPEG) of `dir`, sorted.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    inspect_core::image_files::list_image_files(dir).map_err(|source| DatasetError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads an image as RGB8 (grey and RGBA are converted).
pub fn load_image(path: &Path) -> Result<RgbImage, DatasetError> {
    image::open(path)
        .map(|i| i.into_rgb8())
        .map_err(|e| DatasetError::Decode {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Reads a mask as binary (0 or 255), checked against its image's size.
pub fn load_mask(mask: &Path, image: &Path, size: (u32, u32)) -> Result<GrayImage, DatasetError> {
    let mut m = image::open(mask)
        .map(|i| i.into_luma8())
        .map_err(|e| DatasetError::Decode {
            path: mask.to_path_buf(),
            message: e.to_string(),
        })?;
    if m.dimensions() != size {
        return Err(DatasetError::MaskSize {
            mask: mask.to_path_buf(),
            image: image.to_path_buf(),
            mask_w: m.width(),
            mask_h: m.height(),
            image_w: size.0,
            image_h: size.1,
        });
    }
    for p in m.pixels_mut() {
        p.0[0] = if p.0[0] > 127 { 255 } else { 0 };
    }
    Ok(m)
}

impl Dataset {
    /// Reads an MVTec AD layout rooted at `root`.
    pub fn mvtec(root: &Path) -> Result<Dataset, DatasetError> {
        let train_dir = root.join("train").join("good");
        if !train_dir.is_dir() {
            return Err(DatasetError::Layout {
                path: root.to_path_buf(),
                message: "no train/good folder (MVTec AD layout expected)".into(),
            });
        }
        let train = good_samples(&train_dir)?;
        let test_dir = root.join("test");
        let io = |source| DatasetError::Io {
            path: test_dir.clone(),
            source,
        };
        let mut classes = Vec::new();
        for entry in std::fs::read_dir(&test_dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.is_dir() {
                classes.push(path);
            }
        }
        classes.sort();
        let mut test = Vec::new();
        for dir in classes {
            let class = dir
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            for image in list_images(&dir)? {
                let mask = if class == "good" {
                    None
                } else {
                    let expected = root
                        .join("ground_truth")
                        .join(&class)
                        .join(format!("{}_mask.png", stem(&image)));
                    if !expected.is_file() {
                        return Err(DatasetError::MissingMask { image, expected });
                    }
                    Some(expected)
                };
                test.push(Sample {
                    image,
                    mask,
                    class: class.clone(),
                });
            }
        }
        Ok(Dataset { train, test })
    }

    /// Reads the generic layout: defect-free images in `normal`, defect images in `defects`
    /// with masks of the same file stem (any image extension) in `masks`. Every normal image is
    /// a training image; the test set holds the defect images.
    pub fn generic(normal: &Path, defects: &Path, masks: &Path) -> Result<Dataset, DatasetError> {
        let train = good_samples(normal)?;
        let test = with_masks(defects, masks, "defect")?;
        Ok(Dataset { train, test })
    }
}

/// The images of `dir` as defect-free samples.
fn good_samples(dir: &Path) -> Result<Vec<Sample>, DatasetError> {
    Ok(list_images(dir)?
        .into_iter()
        .map(|image| Sample {
            image,
            mask: None,
            class: "good".into(),
        })
        .collect())
}

/// The images of `images`, each paired with the mask of the same file stem in `masks`.
pub fn with_masks(images: &Path, masks: &Path, class: &str) -> Result<Vec<Sample>, DatasetError> {
    let mask_files = list_images(masks)?;
    let mut samples = Vec::new();
    for image in list_images(images)? {
        let s = stem(&image);
        let Some(mask) = mask_files.iter().find(|m| stem(m) == s) else {
            return Err(DatasetError::MissingMask {
                expected: masks.join(format!("{s}.png")),
                image,
            });
        };
        samples.push(Sample {
            image,
            mask: Some(mask.clone()),
            class: class.to_string(),
        });
    }
    Ok(samples)
}
