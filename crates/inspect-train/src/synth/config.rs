//! The synthesis section of the trainer's configuration: where defects come from and the bounds
//! of their random transform. Same rules as the daemon's config: unknown keys are rejected, every
//! value is range-checked, messages name the file, the key, the value and the accepted range, and
//! relative paths are resolved against the config file's directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::anomaly::{SynthConfig, PASTE_MARGIN};
use inspect_core::settings::{config_table, read_text, Checker, ConfigError};

/// Where the defects to paste are cut from.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefectSource {
    /// Generic layout: a folder of defect images...
    pub images: Option<PathBuf>,
    /// ...and the folder of their masks (same file stems).
    pub masks: Option<PathBuf>,
    /// Or an MVTec AD root: its `test/<defect>` images with their ground-truth masks.
    pub mvtec: Option<PathBuf>,
    /// Keep only sources of these defect classes (MVTec folder names); empty keeps all.
    #[serde(default)]
    pub classes: Vec<String>,
}

/// The `[synthesis]` settings, validated.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthesisSettings {
    /// The defect source.
    pub defects: DefectSource,
    /// Side in source pixels of the window cut around a random defect pixel (0: the whole
    /// defect). Long cracks give many different short pieces this way. 0 or 16-4096.
    #[serde(default = "default_window")]
    pub window: u32,
    /// Pixels of source context kept around the defect, 5-64.
    #[serde(default = "default_margin")]
    pub margin: u32,
    /// Scale range `[low, high]`, each 0.1-4.0, low <= high.
    #[serde(default = "default_scale")]
    pub scale: [f32; 2],
    /// Rotation is uniform in -max..=max degrees, 0-180.
    #[serde(default = "default_rotation")]
    pub max_rotation_deg: f32,
    /// Flip horizontally with probability 1/2.
    #[serde(default = "default_flip")]
    pub flip: bool,
    /// Largest side of the pasted defect as a fraction of the image side, 0.05-0.95 (larger
    /// draws are scaled down to fit).
    #[serde(default = "default_max_extent")]
    pub max_extent: f32,
    /// Augmented versions made of each training image, 1-64.
    #[serde(default = "default_per_image")]
    pub augmentations_per_image: u32,
    /// Base seed: with the image and the augmentation index it fixes every random draw.
    #[serde(default)]
    pub seed: u64,
}

fn default_window() -> u32 {
    128
}
fn default_margin() -> u32 {
    8
}
fn default_scale() -> [f32; 2] {
    [0.5, 1.0]
}
fn default_rotation() -> f32 {
    180.0
}
fn default_flip() -> bool {
    true
}
fn default_max_extent() -> f32 {
    0.5
}
fn default_per_image() -> u32 {
    1
}

impl SynthesisSettings {
    /// Reads the `[synthesis]` table of `path`, validates it and resolves its paths.
    pub fn load(path: &Path) -> Result<SynthesisSettings, ConfigError> {
        SynthesisSettings::parse(&read_text(path)?, path)
    }

    /// Parses config text; `path` is named in messages and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<SynthesisSettings, ConfigError> {
        let mut s: SynthesisSettings =
            config_table(text, path, "synthesis")?.ok_or(ConfigError::Syntax {
                path: path.to_path_buf(),
                message: "no [synthesis] table".into(),
            })?;
        s.validate(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut s.defects.images,
            &mut s.defects.masks,
            &mut s.defects.mvtec,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(s)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let c = Checker { path };
        let d = &self.defects;
        match (&d.images, &d.masks, &d.mvtec) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => {}
            _ => {
                return Err(c.fail(
                    "synthesis.defects",
                    "(images, masks, mvtec)",
                    "expected either `images` and `masks` (generic layout) or `mvtec` alone",
                ))
            }
        }
        if d.mvtec.is_none() && !d.classes.is_empty() {
            return Err(c.fail(
                "synthesis.defects.classes",
                format!("{:?}", d.classes),
                "expected only with `mvtec` (the generic layout has one class)",
            ));
        }
        if self.window != 0 {
            c.range("synthesis.window", self.window, 16, 4096)?;
        }
        c.range("synthesis.margin", self.margin, PASTE_MARGIN + 1, 64)?;
        for (i, s) in self.scale.iter().enumerate() {
            c.range(&format!("synthesis.scale[{i}]"), *s, 0.1, 4.0)?;
        }
        if self.scale[0] > self.scale[1] {
            return Err(c.fail(
                "synthesis.scale",
                format!("{:?}", self.scale),
                "expected [low, high] with low <= high",
            ));
        }
        c.range(
            "synthesis.max_rotation_deg",
            self.max_rotation_deg,
            0.0,
            180.0,
        )?;
        c.range("synthesis.max_extent", self.max_extent, 0.05, 0.95)?;
        c.range(
            "synthesis.augmentations_per_image",
            self.augmentations_per_image,
            1,
            64,
        )?;
        Ok(())
    }

    /// The transform bounds for [`super::anomaly::synthesize`].
    pub fn transform(&self) -> SynthConfig {
        SynthConfig {
            scale: (self.scale[0], self.scale[1]),
            max_rotation_deg: self.max_rotation_deg,
            flip: self.flip,
            max_extent: self.max_extent,
        }
    }
}
