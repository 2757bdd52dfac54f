//! The `[training]` table of a trainer config: loop, objective, schedule and calibration, each
//! key range-checked with the file, key, value and accepted range in the message.

use std::path::Path;

use serde::Deserialize;

use crate::losses::{NfLoss, Objective};
use crate::score_choice::PostProcessing;
use inspect_core::bundle::Combine;
use inspect_core::settings::{config_table, read_text, Checker, ConfigError};

/// Learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The paper's: divided by 10 after 25%, 37.5% and 45% of the epochs (50, 75, 90 of 200).
    Paper,
    /// CFlow-AD's code: linear warm-up, then cosine decay to a thousandth.
    Cosine,
}

/// The `[training]` settings.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// Epochs, 1-1000.
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    /// Images per batch, 1-256.
    #[serde(default = "default_image_batch")]
    pub image_batch: u32,
    /// Fibers per Adam step, 16-65536.
    #[serde(default = "default_fiber_batch")]
    pub fiber_batch: u32,
    /// Learning rate, 1e-6 to 0.1.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// `paper` or `cosine`.
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// Warm-up epochs of the cosine schedule, 0 to epochs.
    #[serde(default = "default_warmup")]
    pub warmup_epochs: u32,
    /// First epoch (0-based) with the contrastive term on, 0-1000.
    #[serde(default = "default_contrastive_start")]
    pub contrastive_start_epoch: u32,
    /// `none`, `boundary`, `cl`, `likelihood` or `fusion`.
    #[serde(default = "default_objective")]
    pub objective: Objective,
    /// Form of L_NF: `reference` or `paper`.
    #[serde(default)]
    pub nf_loss: NfLoss,
    /// Cap of the likelihood term's reward on the mask, on the `logp / C` scale, 0-100.
    #[serde(default = "default_margin")]
    pub likelihood_margin: f32,
    /// Coupling blocks per decoder, 1-32.
    #[serde(default = "default_blocks")]
    pub blocks: u32,
    /// Seed of the weights, shuffles and permutations.
    #[serde(default)]
    pub seed: u64,
    /// How level likelihoods combine into the score: `sum` (CFlow) or `product` (paper).
    #[serde(default = "default_combine")]
    pub combine: Combine,
    /// Share of the defect-free images held out to choose the threshold, 0.02-0.5.
    #[serde(default = "default_holdout")]
    pub holdout_fraction: f64,
    /// Target tile false-alarm rate on the held-out images, 0.0001-0.5.
    #[serde(default = "default_far")]
    pub false_alarm_rate: f64,
    /// Weight of each level in the tile's map, 0-100 each, one per extractor level (empty:
    /// all 1; 0 leaves a level out).
    #[serde(default)]
    pub level_weights: Vec<f32>,
    /// Gaussian smoothing of the anomaly map: sigma in model pixels, 0-32 (0: none).
    #[serde(default)]
    pub smoothing_sigma: f32,
    /// The tile score: the mean of this top fraction of the map's pixels, 0-1 (0: the maximum).
    #[serde(default)]
    pub top_fraction: f32,
    /// Share of the mean score of a frame's tiles subtracted from each, 0-1 (0: none).
    #[serde(default)]
    pub frame_weight: f32,
}

fn default_epochs() -> u32 {
    200
}
fn default_image_batch() -> u32 {
    8
}
fn default_fiber_batch() -> u32 {
    256
}
fn default_lr() -> f64 {
    2e-4
}
fn default_schedule() -> Schedule {
    Schedule::Paper
}
fn default_warmup() -> u32 {
    2
}
fn default_contrastive_start() -> u32 {
    8
}
fn default_objective() -> Objective {
    Objective::None
}
fn default_margin() -> f32 {
    1.0
}
fn default_blocks() -> u32 {
    8
}
fn default_combine() -> Combine {
    Combine::Sum
}
fn default_holdout() -> f64 {
    0.1
}
fn default_far() -> f64 {
    0.01
}

impl Default for TrainSettings {
    fn default() -> Self {
        toml::from_str("").expect("every key has a default")
    }
}

impl TrainSettings {
    /// Reads the `[training]` table of `path` (defaults when absent) and validates it.
    pub fn load(path: &Path) -> Result<TrainSettings, ConfigError> {
        TrainSettings::parse(&read_text(path)?, path)
    }

    /// Parses config text; `path` is named in messages.
    pub fn parse(text: &str, path: &Path) -> Result<TrainSettings, ConfigError> {
        let settings: TrainSettings = config_table(text, path, "training")?.unwrap_or_default();
        settings.validate(path)?;
        Ok(settings)
    }

    /// Checks every value against its range.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let c = Checker { path };
        c.range("training.epochs", self.epochs, 1, 1000)?;
        c.range("training.image_batch", self.image_batch, 1, 256)?;
        c.range("training.fiber_batch", self.fiber_batch, 16, 65536)?;
        c.range("training.lr", self.lr, 1e-6, 0.1)?;
        c.range("training.warmup_epochs", self.warmup_epochs, 0, self.epochs)?;
        c.range(
            "training.contrastive_start_epoch",
            self.contrastive_start_epoch,
            0,
            1000,
        )?;
        c.range(
            "training.likelihood_margin",
            self.likelihood_margin,
            0.0,
            100.0,
        )?;
        c.range("training.blocks", self.blocks, 1, 32)?;
        c.range(
            "training.holdout_fraction",
            self.holdout_fraction,
            0.02,
            0.5,
        )?;
        c.range(
            "training.false_alarm_rate",
            self.false_alarm_rate,
            1e-4,
            0.5,
        )?;
        for w in &self.level_weights {
            c.range("training.level_weights", *w, 0.0, 100.0)?;
        }
        if !self.level_weights.is_empty() && self.level_weights.iter().all(|w| *w == 0.0) {
            return Err(c.fail(
                "training.level_weights",
                0.0,
                "at least one level must have a weight above 0",
            ));
        }
        c.range("training.smoothing_sigma", self.smoothing_sigma, 0.0, 32.0)?;
        c.range("training.top_fraction", self.top_fraction, 0.0, 1.0)?;
        c.range("training.frame_weight", self.frame_weight, 0.0, 1.0)?;
        Ok(())
    }

    /// How the bundle will turn maps into tile scores.
    pub fn post_processing(&self) -> PostProcessing {
        PostProcessing {
            level_weights: self.level_weights.clone(),
            smoothing_sigma: self.smoothing_sigma,
            top_fraction: self.top_fraction,
            frame_weight: self.frame_weight,
        }
    }

    /// The learning rate of `epoch` (0-based).
    pub fn lr_at(&self, epoch: u32) -> f64 {
        let e = self.epochs as f64;
        match self.schedule {
            Schedule::Paper => {
                let passed = [0.25, 0.375, 0.45]
                    .iter()
                    .filter(|&&m| epoch as f64 >= m * e)
                    .count();
                self.lr * 0.1f64.powi(passed as i32)
            }
            Schedule::Cosine => {
                let floor = self.lr * 1e-3;
                if epoch < self.warmup_epochs {
                    // From a hundredth of the rate up to it.
                    let t = (epoch + 1) as f64 / self.warmup_epochs as f64;
                    self.lr * (0.01 + 0.99 * t)
                } else {
                    let span = (self.epochs - self.warmup_epochs).max(1) as f64;
                    let t = (epoch - self.warmup_epochs) as f64 / span;
                    floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
                }
            }
        }
    }

    /// Whether the contrastive term is on at `epoch`.
    pub fn contrastive_on(&self, epoch: u32) -> bool {
        self.objective != Objective::None && epoch >= self.contrastive_start_epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_schedule_divides_by_ten_at_50_75_90_of_200() {
        let s = TrainSettings::default();
        assert_eq!((s.epochs, s.image_batch, s.fiber_batch), (200, 8, 256));
        let lr = |e| s.lr_at(e) / s.lr;
        assert_eq!(lr(0), 1.0);
        assert_eq!(lr(49), 1.0);
        assert!((lr(50) - 0.1).abs() < 1e-12);
        assert!((lr(75) - 0.01).abs() < 1e-12);
        assert!((lr(89) - 0.01).abs() < 1e-12);
        assert!((lr(90) - 0.001).abs() < 1e-12);
        assert!((lr(199) - 0.001).abs() < 1e-12);
        // Short runs keep the full rate until a milestone is really passed.
        let short = TrainSettings {
            epochs: 2,
            ..Default::default()
        };
        assert_eq!(short.lr_at(0), short.lr);
        assert!((short.lr_at(1) / short.lr - 0.001).abs() < 1e-12);
    }

    #[test]
    fn the_cosine_schedule_warms_up_then_decays() {
        let s = TrainSettings {
            schedule: Schedule::Cosine,
            epochs: 10,
            warmup_epochs: 2,
            ..Default::default()
        };
        let lr: Vec<f64> = (0..10).map(|e| s.lr_at(e) / s.lr).collect();
        assert!(lr[0] < lr[1] && (lr[1] - 1.0).abs() < 1e-12, "{lr:?}");
        assert!((lr[2] - 1.0).abs() < 1e-12);
        assert!(lr[2..].windows(2).all(|w| w[1] < w[0]), "{lr:?}");
        assert!(lr[9] > 1e-3);
    }

    #[test]
    fn values_out_of_range_are_named() {
        let p = Path::new("t.toml");
        let err = TrainSettings::parse("[training]\nfiber_batch = 8\n", p).unwrap_err();
        assert!(
            err.to_string().contains("`training.fiber_batch` = 8"),
            "{err}"
        );
        let err = TrainSettings::parse("[training]\nobjective = \"bgad\"\n", p).unwrap_err();
        assert!(err.to_string().contains("bgad"), "{err}");
        let err = TrainSettings::parse("[training]\nlr = 1.0\n", p).unwrap_err();
        assert!(
            err.to_string().contains("1e-6 to 0.1") || err.to_string().contains("0.000001"),
            "{err}"
        );
        let err = TrainSettings::parse("[training]\nsmoothing_sigma = 40\n", p).unwrap_err();
        assert!(
            err.to_string().contains("training.smoothing_sigma"),
            "{err}"
        );
        let err = TrainSettings::parse("[training]\nlevel_weights = [0, 0]\n", p).unwrap_err();
        assert!(err.to_string().contains("above 0"), "{err}");
        let ok = TrainSettings::parse(
            "[training]\nlevel_weights = [1, 0.5]\nsmoothing_sigma = 4\ntop_fraction = 0.01\n",
            p,
        )
        .unwrap();
        assert_eq!(ok.post_processing().level_weights, vec![1.0, 0.5]);
        let ok = TrainSettings::parse("[synthesis]\nwindow = 3\n", p).unwrap();
        assert_eq!(ok, TrainSettings::default(), "other tables are not ours");
    }
}
