//! `manifest.toml`: what the trainer promises the daemon about a bundle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The bundle format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The whole manifest. Unknown keys are rejected so that a typo never silently changes a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must equal [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Model input size and normalization.
    pub input: InputSpec,
    /// The feature extractor.
    pub extractor: ExtractorSpec,
    /// The flow head.
    pub head: HeadSpec,
    /// One entry per feature level, in the order the scorer combines them.
    pub levels: Vec<LevelSpec>,
    /// How log-likelihoods become an anomaly map.
    pub score: ScoreSpec,
    /// The alert threshold and how it was chosen.
    pub threshold: ThresholdSpec,
    /// Free-form provenance: training data, loss, epochs, seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<toml::Table>,
    /// Free-form evaluation figures (pixel AUROC, AUPRO, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<toml::Table>,
    /// SHA-256 (lower-case hex) of every model file of the bundle, by file name.
    pub files: BTreeMap<String, String>,
    /// Release number, set by `inspect-train sign`: a daemon with a public key refuses a bundle
    /// older than the newest it accepted (0: unversioned).
    #[serde(default, skip_serializing_if = "is_unversioned")]
    pub bundle_version: u64,
}

fn is_unversioned(v: &u64) -> bool {
    *v == 0
}

/// Model input: size in pixels and per-channel normalization `(x / 255 - mean) / std`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input width in pixels.
    pub width: usize,
    /// Input height in pixels.
    pub height: usize,
    /// RGB mean, on the 0..1 scale.
    pub mean: [f32; 3],
    /// RGB standard deviation, on the 0..1 scale.
    pub std: [f32; 3],
}

impl InputSpec {
    /// The normalization the model's input expects.
    pub fn normalization(&self) -> crate::tiler::Normalization {
        crate::tiler::Normalization {
            mean: self.mean,
            std: self.std,
        }
    }
}

/// The feature extractor file and its taps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractorSpec {
    /// ONNX file name inside the bundle.
    pub file: String,
    /// Human name of the network (e.g. `efficientnet-lite0`).
    pub name: String,
}

/// The flow head file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSpec {
    /// ONNX file name inside the bundle.
    pub file: String,
}

/// One feature level: an extractor tap, the head output holding its log-likelihood, its shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelSpec {
    /// Extractor output (and head input) name.
    pub tap: String,
    /// Head output name: log-likelihood map `N x height x width`.
    pub logp: String,
    /// Channels of the tap.
    pub channels: usize,
    /// Feature-map height.
    pub height: usize,
    /// Feature-map width.
    pub width: usize,
    /// Stride of the tap in input pixels.
    pub stride: usize,
}

/// How the per-level maps are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// CFlow: sum of the level likelihoods.
    Sum,
    /// The paper: product of the level likelihoods.
    Product,
}

/// Score definition: `p_l = exp(logp_l / C_l - offset_l)`, upsampled bilinearly to the input size,
/// combined over levels with their weights, `anomaly = reference - combined`, smoothed; the tile
/// score is the maximum (or the mean of the top fraction) of that map, less a share of the mean
/// score of the frame's tiles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreSpec {
    /// Sum or product over levels.
    pub combine: Combine,
    /// Per-level constant subtracted from `logp / C` (fixed at calibration).
    pub level_offsets: Vec<f32>,
    /// The combined likelihood of a perfectly normal pixel (fixed at calibration).
    pub reference: f32,
    /// Weight of each level in the combination (sum: `w_l p_l`; product: `p_l^w_l`); empty
    /// means 1 for every level, 0 leaves a level out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub level_weights: Vec<f32>,
    /// Gaussian smoothing of the anomaly map before the tile is scored: standard deviation in
    /// model-input pixels (0 = none), as scipy's `gaussian_filter` (reflect, truncate 4).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub smoothing_sigma: f32,
    /// The tile score: the mean of this fraction of the tile's highest map pixels; 0 = the
    /// maximum.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub top_fraction: f32,
    /// This share of the mean score of a frame's tiles is subtracted from each of its tiles'
    /// maps and scores (0 = none, 1 = the whole mean): a surface the flows never saw lifts
    /// every tile of the frame, a crack only its own.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frame_weight: f32,
}

impl ScoreSpec {
    /// Summed levels with the given calibration constants, unit weights, no smoothing, the
    /// maximum as tile score.
    pub fn new(combine: Combine, level_offsets: Vec<f32>, reference: f32) -> ScoreSpec {
        ScoreSpec {
            combine,
            level_offsets,
            reference,
            level_weights: Vec::new(),
            smoothing_sigma: 0.0,
            top_fraction: 0.0,
            frame_weight: 0.0,
        }
    }

    /// The post-processing of `other` (weights, smoothing, tile statistic, frame weight) on
    /// these constants.
    pub fn with_post_processing_of(mut self, other: &ScoreSpec) -> ScoreSpec {
        self.level_weights = other.level_weights.clone();
        self.smoothing_sigma = other.smoothing_sigma;
        self.top_fraction = other.top_fraction;
        self.frame_weight = other.frame_weight;
        self
    }

    /// The weight of level `level` (1 when no weights are given).
    pub fn level_weight(&self, level: usize) -> f32 {
        self.level_weights.get(level).copied().unwrap_or(1.0)
    }
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

/// The largest smoothing sigma a manifest may ask for, in model-input pixels.
pub const MAX_SMOOTHING_SIGMA: f32 = 32.0;

/// The alert threshold on the anomaly score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    /// Tiles whose maximum anomaly exceeds this raise an alert.
    pub value: f32,
    /// How it was chosen, e.g. `false-alarm-rate` or `manual`.
    pub method: String,
    /// Target tile false-alarm rate on held-out normal images, when `method = "false-alarm-rate"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_alarm_rate: Option<f64>,
    /// How the rate's threshold was estimated from the held-out scores: `empirical` (the
    /// quantile) or `tail-fit` (a generalized Pareto tail, when the scores were too few).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimator: Option<String>,
}

/// A manifest value that is wrong: which field, and what is accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct ManifestError {
    /// Dotted path of the field, e.g. `levels[1].stride`.
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

fn invalid(field: &str, message: String) -> ManifestError {
    ManifestError {
        field: field.to_string(),
        message,
    }
}

fn check_range(field: &str, value: usize, lo: usize, hi: usize) -> Result<(), ManifestError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(invalid(field, format!("{value} is outside {lo}..={hi}")))
    }
}

fn check_file_name(field: &str, name: &str) -> Result<(), ManifestError> {
    let plain = !name.is_empty()
        && !name.contains(['/', '\\'])
        && name != "."
        && name != ".."
        && name != super::MANIFEST_FILE;
    if plain {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{name:?} must be a plain file name inside the bundle directory"),
        ))
    }
}

impl Manifest {
    /// Checks the map's post-processing: one finite weight >= 0 per level (not all 0), the
    /// smoothing sigma and the top fraction in range.
    fn validate_post_processing(&self) -> Result<(), ManifestError> {
        let score = &self.score;
        if !score.level_weights.is_empty() {
            if score.level_weights.len() != self.levels.len() {
                return Err(invalid(
                    "score.level_weights",
                    format!(
                        "has {} values but there are {} levels (or leave it out for all 1)",
                        score.level_weights.len(),
                        self.levels.len()
                    ),
                ));
            }
            if let Some(bad) = score
                .level_weights
                .iter()
                .find(|w| !(w.is_finite() && **w >= 0.0))
            {
                return Err(invalid(
                    "score.level_weights",
                    format!("{bad} must be a finite number >= 0"),
                ));
            }
            if score.level_weights.iter().all(|w| *w == 0.0) {
                return Err(invalid(
                    "score.level_weights",
                    "are all 0: at least one level must count".into(),
                ));
            }
        }
        if !(0.0..=MAX_SMOOTHING_SIGMA).contains(&score.smoothing_sigma) {
            return Err(invalid(
                "score.smoothing_sigma",
                format!(
                    "{} is outside 0..={MAX_SMOOTHING_SIGMA} (model-input pixels; 0 = no smoothing)",
                    score.smoothing_sigma
                ),
            ));
        }
        if !(0.0..=1.0).contains(&score.top_fraction) {
            return Err(invalid(
                "score.top_fraction",
                format!(
                    "{} is outside 0..=1 (0 = the maximum pixel)",
                    score.top_fraction
                ),
            ));
        }
        if !(0.0..=1.0).contains(&score.frame_weight) {
            return Err(invalid(
                "score.frame_weight",
                format!(
                    "{} is outside 0..=1 (the share of the frame's mean tile score subtracted; \
                     0 = none)",
                    score.frame_weight
                ),
            ));
        }
        Ok(())
    }

    /// Checks every value for consistency; errors name the field and what is accepted.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format_version != FORMAT_VERSION {
            return Err(invalid(
                "format_version",
                format!(
                    "{} is not supported (this build reads format {FORMAT_VERSION})",
                    self.format_version
                ),
            ));
        }
        check_range("input.width", self.input.width, 8, 4096)?;
        check_range("input.height", self.input.height, 8, 4096)?;
        for (i, s) in self.input.std.iter().enumerate() {
            if !(s.is_finite() && *s > 0.0) {
                return Err(invalid(
                    &format!("input.std[{i}]"),
                    format!("{s} must be a finite number > 0"),
                ));
            }
        }
        for (i, m) in self.input.mean.iter().enumerate() {
            if !m.is_finite() {
                return Err(invalid(
                    &format!("input.mean[{i}]"),
                    format!("{m} is not finite"),
                ));
            }
        }
        check_file_name("extractor.file", &self.extractor.file)?;
        check_file_name("head.file", &self.head.file)?;
        check_range("levels (count)", self.levels.len(), 1, 8)?;
        for (i, level) in self.levels.iter().enumerate() {
            let f = |k: &str| format!("levels[{i}].{k}");
            check_range(&f("channels"), level.channels, 1, 8192)?;
            check_range(&f("stride"), level.stride, 1, 256)?;
            let expect_h = self.input.height.div_ceil(level.stride);
            let expect_w = self.input.width.div_ceil(level.stride);
            if level.height != expect_h || level.width != expect_w {
                return Err(invalid(
                    &f("height/width"),
                    format!(
                        "{}x{} does not match input {}x{} at stride {} (expected {}x{})",
                        level.height,
                        level.width,
                        self.input.height,
                        self.input.width,
                        level.stride,
                        expect_h,
                        expect_w
                    ),
                ));
            }
            if level.tap.is_empty() || level.logp.is_empty() {
                return Err(invalid(&f("tap/logp"), "names must not be empty".into()));
            }
        }
        if self.score.level_offsets.len() != self.levels.len() {
            return Err(invalid(
                "score.level_offsets",
                format!(
                    "has {} values but there are {} levels",
                    self.score.level_offsets.len(),
                    self.levels.len()
                ),
            ));
        }
        if let Some(bad) = self.score.level_offsets.iter().find(|v| !v.is_finite()) {
            return Err(invalid(
                "score.level_offsets",
                format!("{bad} is not finite"),
            ));
        }
        self.validate_post_processing()?;
        if !self.score.reference.is_finite() {
            return Err(invalid(
                "score.reference",
                format!("{} is not finite", self.score.reference),
            ));
        }
        if !(self.threshold.value.is_finite()) {
            return Err(invalid(
                "threshold.value",
                format!("{} is not finite", self.threshold.value),
            ));
        }
        if let Some(rate) = self.threshold.false_alarm_rate {
            if !(0.0..=1.0).contains(&rate) {
                return Err(invalid(
                    "threshold.false_alarm_rate",
                    format!("{rate} is outside 0..=1"),
                ));
            }
        }
        for required in [&self.extractor.file, &self.head.file] {
            if !self.files.contains_key(required) {
                return Err(invalid(
                    "files",
                    format!("has no SHA-256 for {required:?}, which the bundle uses"),
                ));
            }
        }
        for (name, hash) in &self.files {
            check_file_name(&format!("files.{name:?}"), name)?;
            let hex = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex {
                return Err(invalid(
                    &format!("files.{name:?}"),
                    format!("{hash:?} is not a 64-digit hex SHA-256"),
                ));
            }
        }
        Ok(())
    }
}
