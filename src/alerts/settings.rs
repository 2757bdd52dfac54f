//! `[alerts]`: where alerts go and how the link behaves, checked here and turned into the link
//! thread's [`LinkSettings`](super::LinkSettings).

use std::path::PathBuf;
#[cfg(target_os = "linux")]
use std::time::Duration;

use serde::Deserialize;

use super::Framing;
#[cfg(target_os = "linux")]
use super::{DeviceId, LinkSettings, LinkTarget};
use inspect_core::settings::{Checker, ConfigError};
use inspect_protocol::secret_file::SecretFileError;
use inspect_protocol::signing::LinkKey;

/// Serial speeds accepted for `alerts.baud` and `position.baud`.
pub const BAUD_RATES: [u32; 10] = [
    9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 921600, 1000000,
];

/// Checks a serial speed (`alerts.baud`, `position.baud`) against [`BAUD_RATES`].
pub fn check_baud(c: &Checker<'_>, key: &str, baud: u32) -> Result<(), ConfigError> {
    if BAUD_RATES.contains(&baud) {
        return Ok(());
    }
    Err(c.fail(key, baud, &format!("expected one of {BAUD_RATES:?}")))
}

/// Where alert lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertOutput {
    /// A serial port (`alerts.port`, `alerts.baud`).
    Serial,
    /// Standard output, for demos and pipes.
    Stdout,
}
/// `[alerts]`
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSettings {
    /// `serial` or `stdout`.
    pub output: AlertOutput,
    /// `json` or `cobs`.
    #[serde(default)]
    pub framing: Framing,
    /// Keep each alert until the peer ACKs its `seq` (serial only), re-sending as needed.
    #[serde(default)]
    pub require_ack: bool,
    /// Re-send unacknowledged alerts after this many milliseconds, 100-600000.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ms: u64,
    /// On stop, keep delivering pending alerts for up to this many milliseconds, 0-60000.
    #[serde(default = "default_drain")]
    pub drain_timeout_ms: u64,
    /// Lowest threshold a peer may set with `set_threshold` (default: half the bundle's).
    #[serde(default)]
    pub threshold_min: Option<f32>,
    /// Highest threshold a peer may set (default: twice the bundle's).
    #[serde(default)]
    pub threshold_max: Option<f32>,
    /// Serial device, required with `output = "serial"`.
    #[serde(default)]
    pub port: Option<PathBuf>,
    /// Serial speed, one of [`BAUD_RATES`].
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Seconds between status lines, 1-3600.
    #[serde(default = "default_status")]
    pub status_interval_s: u64,
    /// A peer's pause ends by itself after this many seconds, 10-86400 (a lost `resume` must
    /// not stop inspection for good).
    #[serde(default = "default_pause_max")]
    pub pause_max_s: u64,
    /// File holding the link key (64 hexadecimal digits, readable by its owner only): every
    /// message is signed, and unsigned, forged or replayed commands are refused.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// This link's id in signatures, 0-255.
    #[serde(default = "default_link_id")]
    pub link_id: u8,
    /// The key read from `key_file` (after validation).
    #[serde(skip)]
    pub key: Option<LinkKey>,
}

fn default_pause_max() -> u64 {
    600
}

fn default_link_id() -> u8 {
    1
}

fn default_baud() -> u32 {
    115200
}
fn default_ack_timeout() -> u64 {
    3000
}
fn default_drain() -> u64 {
    3000
}

fn default_status() -> u64 {
    10
}

impl AlertsSettings {
    /// Checks every value, and that the keys which go together do.
    pub fn validate(&self, c: &Checker<'_>) -> Result<(), ConfigError> {
        check_baud(c, "alerts.baud", self.baud)?;
        c.range("alerts.ack_timeout_ms", self.ack_timeout_ms, 100, 600_000)?;
        c.range("alerts.drain_timeout_ms", self.drain_timeout_ms, 0, 60_000)?;
        for (key, t) in [
            ("alerts.threshold_min", self.threshold_min),
            ("alerts.threshold_max", self.threshold_max),
        ] {
            if t.is_some_and(|t| !t.is_finite()) {
                return Err(c.fail(key, format!("{t:?}"), "expected a finite number"));
            }
        }
        if let (Some(lo), Some(hi)) = (self.threshold_min, self.threshold_max) {
            if lo > hi {
                return Err(c.fail(
                    "alerts.threshold_max",
                    hi,
                    &format!("expected at least alerts.threshold_min ({lo})"),
                ));
            }
        }
        if self.require_ack && self.output != AlertOutput::Serial {
            return Err(c.fail(
                "alerts.require_ack",
                true,
                "ACKs come back over a serial link: needs alerts.output = \"serial\"",
            ));
        }
        c.range("alerts.status_interval_s", self.status_interval_s, 1, 3600)?;
        c.range("alerts.pause_max_s", self.pause_max_s, 10, 86_400)?;
        if self.output == AlertOutput::Serial && self.port.is_none() {
            return Err(c.fail(
                "alerts.port",
                "(missing)",
                "required when alerts.output = \"serial\", e.g. \"/dev/ttyAMA0\"",
            ));
        }
        Ok(())
    }

    /// Reads and checks `key_file`: it must be readable by its owner only and hold a key.
    pub fn load_key(&self, c: &Checker<'_>) -> Result<Option<LinkKey>, ConfigError> {
        let Some(path) = &self.key_file else {
            return Ok(None);
        };
        let shown = path.display();
        let bytes = inspect_protocol::secret_file::read_owner_only(path).map_err(|e| match e {
            SecretFileError::Read(e) => {
                c.fail("alerts.key_file", &shown, &format!("a readable file ({e})"))
            }
            SecretFileError::Exposed { mode } => c.fail(
                "alerts.key_file",
                format!("{shown} (mode {mode:o})"),
                "a key file readable by its owner only (chmod 600)",
            ),
        })?;
        LinkKey::from_file_content(&bytes)
            .map(Some)
            .map_err(|e| c.fail("alerts.key_file", &shown, &e.to_string()))
    }

    /// The link thread's settings: `threshold` in force at start; a peer may move it within
    /// `threshold_min`..`threshold_max`, by default a factor of two either way of `calibrated`.
    #[cfg(target_os = "linux")]
    pub fn link_settings(
        &self,
        device: DeviceId,
        threshold: f32,
        calibrated: f32,
        evidence_dir: Option<PathBuf>,
    ) -> LinkSettings {
        let target = match self.output {
            AlertOutput::Stdout => LinkTarget::Stdout,
            AlertOutput::Serial => LinkTarget::Serial {
                // Validated: `port` is present whenever the output is serial.
                port: self.port.clone().unwrap_or_default(),
                baud: self.baud,
            },
        };
        let spread = calibrated.abs().max(f32::EPSILON);
        LinkSettings {
            target,
            framing: self.framing,
            require_ack: self.require_ack,
            ack_timeout: Duration::from_millis(self.ack_timeout_ms),
            threshold,
            threshold_range: (
                self.threshold_min.unwrap_or(calibrated - spread / 2.0),
                self.threshold_max.unwrap_or(calibrated + spread),
            ),
            device,
            evidence_dir,
            key: self.key.clone(),
            link_id: self.link_id,
            boot: super::link::new_boot_id(),
        }
    }
}
