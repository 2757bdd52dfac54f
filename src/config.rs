//! The daemon's TOML configuration, validated before anything starts.
//!
//! Unknown keys are rejected (a misspelt key must not silently fall back to a default) and every
//! value is range-checked; errors name the file, the key, the value and what is accepted.
//! Relative paths are resolved against the directory of the config file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::alerts::Framing;
use crate::detector::Tiling;
use crate::engine::ExtractorPrecision;

/// Serial speeds accepted for `alerts.baud`.
pub const BAUD_RATES: [u32; 10] = [
    9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 921600, 1000000,
];

/// Highest BCM GPIO line on a Raspberry Pi header.
pub const MAX_GPIO_LINE: u8 = 27;

/// Errors of loading or validating a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The config file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not valid TOML, a wrong type, a missing or an unknown key.
    #[error("{path}: {message}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// The parser's message (it names the key and the line).
        message: String,
    },
    /// A value outside its accepted range.
    #[error("{path}: `{key}` = {value} is not accepted: {expected}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Dotted key.
        key: String,
        /// The value as written.
        value: String,
        /// What is accepted.
        expected: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of this device in every alert: 1-32 characters of `A-Z a-z 0-9 . _ -`.
    pub device_id: String,
    /// The model bundle and how to run it.
    pub model: ModelConfig,
    /// Where frames come from.
    pub source: SourceConfig,
    /// How frames are cut into tiles.
    pub tiling: Tiling,
    /// Where alerts go.
    pub alerts: AlertsConfig,
    /// The alert journal (in memory when absent).
    #[serde(default)]
    pub journal: JournalConfig,
    /// The evidence store (none when absent).
    #[serde(default)]
    pub evidence: Option<EvidenceConfig>,
    /// GPIO trigger and indicators (needs the `gpio` feature and a Raspberry Pi).
    #[serde(default)]
    pub gpio: Option<GpioConfig>,
}

/// `[model]`
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Threads for tract's matrix products, 1-16.
    #[serde(default = "one")]
    pub threads: usize,
    /// Inference workers, 1-16: the tiles of a frame are spread over this many threads, each
    /// with its own extractor state (a 4-core Pi: e.g. `workers = 4`, `threads = 1`).
    #[serde(default = "one")]
    pub workers: usize,
    /// Overrides the bundle's calibrated threshold (use with care: it changes the false-alarm rate).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Extractor arithmetic: `f32`, or `f16` on boards with fp16 arithmetic (Raspberry Pi 5).
    #[serde(default)]
    pub precision: ExtractorPrecision,
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

/// `[source]`: one of the frame sources, chosen by `kind`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// A folder of PNG/JPEG frames, read in name order.
    Folder {
        /// The folder.
        path: PathBuf,
        /// Start again at the first file after the last.
        #[serde(default, rename = "loop")]
        looping: bool,
        /// Pause between frames in milliseconds (0-60000), to play a folder at camera speed.
        #[serde(default)]
        frame_interval_ms: u64,
    },
    /// An MJPEG byte stream: a recording, a FIFO fed by a camera pipeline, a character device.
    Stream {
        /// The file, FIFO or device.
        path: PathBuf,
        /// A camera (default): frames go stale, and the end of the stream means it went away:
        /// reopen it with backoff. `false`: a recording, read to its end.
        #[serde(default = "yes")]
        live: bool,
    },
    /// A V4L2 camera.
    V4l2 {
        /// Device node, e.g. `/dev/video0`.
        device: PathBuf,
        /// Capture width, 160-4096.
        width: u32,
        /// Capture height, 120-4096.
        height: u32,
        /// Frames per second, 1-120.
        fps: u32,
        /// Pixel format.
        format: PixelFormat,
    },
}

/// Camera pixel formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Motion JPEG.
    Mjpeg,
    /// YUYV 4:2:2.
    Yuyv,
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
pub struct AlertsConfig {
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

/// When the journal forces writes to storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncConfig {
    /// After every alert.
    Always,
    /// At most `fsync_interval_ms` after a write.
    #[default]
    Interval,
    /// Leave it to the kernel.
    Never,
}

/// `[journal]`: where alerts wait for their ACK.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Journal file; absent keeps alerts in memory only (lost on restart).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Size bound of the file (and of the alerts kept in memory), 4096 to 1073741824 bytes.
    #[serde(default = "default_journal_bytes")]
    pub max_bytes: u64,
    /// `always`, `interval` or `never`.
    #[serde(default)]
    pub fsync: FsyncConfig,
    /// With `fsync = "interval"`: milliseconds, 10-60000.
    #[serde(default = "default_fsync_interval")]
    pub fsync_interval_ms: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            path: None,
            max_bytes: default_journal_bytes(),
            fsync: FsyncConfig::default(),
            fsync_interval_ms: default_fsync_interval(),
        }
    }
}

fn default_journal_bytes() -> u64 {
    1 << 20
}
fn default_fsync_interval() -> u64 {
    1000
}

/// `[evidence]`: flagged tiles and heatmaps kept on disk for the peer to fetch.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    /// Folder (created if missing).
    pub dir: PathBuf,
    /// Size bound of the folder, 65536 to 68719476736 bytes; the oldest go first.
    #[serde(default = "default_evidence_bytes")]
    pub max_bytes: u64,
}

fn default_evidence_bytes() -> u64 {
    64 << 20
}
fn default_status() -> u64 {
    10
}

/// `[gpio]`: BCM line numbers, 0-27.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    /// Refuse to start when GPIO is unavailable (otherwise log it and go on).
    #[serde(default)]
    pub required: bool,
    /// LED lit for `alert_pulse_ms` on every alert.
    #[serde(default)]
    pub alert_led: Option<u8>,
    /// Buzzer sounded with the alert LED.
    #[serde(default)]
    pub buzzer: Option<u8>,
    /// LED toggled once per processed frame.
    #[serde(default)]
    pub heartbeat_led: Option<u8>,
    /// Length of the alert pulse in milliseconds, 10-10000.
    #[serde(default = "default_pulse")]
    pub alert_pulse_ms: u64,
    /// Input line that triggers inspection (e.g. an odometry pulse every few cm); absent:
    /// inspect every frame (free-run).
    #[serde(default)]
    pub trigger: Option<u8>,
    /// Which edge of the trigger counts: `rising` (default), `falling` or `both`.
    #[serde(default)]
    pub trigger_edge: TriggerEdge,
    /// Inspect one frame every this many trigger pulses, 1-10000.
    #[serde(default = "default_every")]
    pub trigger_every: u32,
}

/// Trigger edges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerEdge {
    /// Low to high.
    #[default]
    Rising,
    /// High to low.
    Falling,
    /// Either.
    Both,
}

fn default_every() -> u32 {
    1
}

fn default_pulse() -> u64 {
    200
}

/// Builds [`ConfigError::Invalid`] messages for one file (shared with the trainer's configs).
pub(crate) struct Checker<'a> {
    /// The config file named in every message.
    pub(crate) path: &'a Path,
}

impl Checker<'_> {
    pub(crate) fn fail(
        &self,
        key: &str,
        value: impl std::fmt::Display,
        expected: &str,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    pub(crate) fn range<T: PartialOrd + std::fmt::Display + Copy>(
        &self,
        key: &str,
        value: T,
        lo: T,
        hi: T,
    ) -> Result<(), ConfigError> {
        if value >= lo && value <= hi {
            Ok(())
        } else {
            Err(self.fail(key, value, &format!("expected {lo} to {hi}")))
        }
    }
}

/// The text of a config file, the file named in the error.
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The `[name]` table of a trainer config, deserialized strictly (`None` when absent). The
/// file's other tables belong to other parts of the trainer and are left alone.
#[cfg(feature = "data")]
pub(crate) fn config_table<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
    name: &str,
) -> Result<Option<T>, ConfigError> {
    let syntax = |message: String| ConfigError::Syntax {
        path: path.to_path_buf(),
        message,
    };
    let table: toml::Table = toml::from_str(text).map_err(|e| syntax(e.to_string()))?;
    table
        .get(name)
        .cloned()
        .map(|value| {
            value
                .try_into()
                .map_err(|e| syntax(format!("in [{name}]: {e}")))
        })
        .transpose()
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&read_text(path)?, path)
    }

    /// Parses and validates config text; `path` is used in messages and to resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.model.bundle);
        match &mut self.source {
            SourceConfig::Folder { path, .. } | SourceConfig::Stream { path, .. } => resolve(path),
            SourceConfig::V4l2 { device, .. } => resolve(device),
        }
        if let Some(port) = &mut self.alerts.port {
            resolve(port);
        }
        if let Some(path) = &mut self.journal.path {
            resolve(path);
        }
        if let Some(e) = &mut self.evidence {
            resolve(&mut e.dir);
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let c = Checker { path };
        let id_ok = (1..=32).contains(&self.device_id.len())
            && self
                .device_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !id_ok {
            return Err(c.fail(
                "device_id",
                format!("{:?}", self.device_id),
                "expected 1 to 32 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        c.range("model.threads", self.model.threads, 1, 16)?;
        c.range("model.workers", self.model.workers, 1, 16)?;
        if let Some(t) = self.model.threshold {
            if !t.is_finite() {
                return Err(c.fail("model.threshold", t, "expected a finite number"));
            }
        }
        match &self.source {
            SourceConfig::Folder {
                frame_interval_ms, ..
            } => c.range("source.frame_interval_ms", *frame_interval_ms, 0, 60_000)?,
            SourceConfig::Stream { .. } => {}
            SourceConfig::V4l2 {
                width, height, fps, ..
            } => {
                c.range("source.width", *width, 160, 4096)?;
                c.range("source.height", *height, 120, 4096)?;
                c.range("source.fps", *fps, 1, 120)?;
            }
        }
        c.range("tiling.tile_size", self.tiling.tile_size, 32, 4096)?;
        c.range(
            "tiling.overlap",
            self.tiling.overlap,
            0,
            self.tiling.tile_size / 2,
        )?;
        let a = &self.alerts;
        if !BAUD_RATES.contains(&a.baud) {
            return Err(c.fail(
                "alerts.baud",
                a.baud,
                &format!("expected one of {BAUD_RATES:?}"),
            ));
        }
        c.range("alerts.ack_timeout_ms", a.ack_timeout_ms, 100, 600_000)?;
        c.range("alerts.drain_timeout_ms", a.drain_timeout_ms, 0, 60_000)?;
        for (key, t) in [
            ("alerts.threshold_min", a.threshold_min),
            ("alerts.threshold_max", a.threshold_max),
        ] {
            if t.is_some_and(|t| !t.is_finite()) {
                return Err(c.fail(key, format!("{t:?}"), "expected a finite number"));
            }
        }
        if let (Some(lo), Some(hi)) = (a.threshold_min, a.threshold_max) {
            if lo > hi {
                return Err(c.fail(
                    "alerts.threshold_max",
                    hi,
                    &format!("expected at least alerts.threshold_min ({lo})"),
                ));
            }
        }
        if a.require_ack && a.output != AlertOutput::Serial {
            return Err(c.fail(
                "alerts.require_ack",
                true,
                "ACKs come back over a serial link: needs alerts.output = \"serial\"",
            ));
        }
        let j = &self.journal;
        c.range("journal.max_bytes", j.max_bytes, 4096, 1 << 30)?;
        c.range("journal.fsync_interval_ms", j.fsync_interval_ms, 10, 60_000)?;
        if let Some(e) = &self.evidence {
            c.range("evidence.max_bytes", e.max_bytes, 1 << 16, 1 << 36)?;
        }
        c.range("alerts.status_interval_s", a.status_interval_s, 1, 3600)?;
        if a.output == AlertOutput::Serial && a.port.is_none() {
            return Err(c.fail(
                "alerts.port",
                "(missing)",
                "required when alerts.output = \"serial\", e.g. \"/dev/ttyAMA0\"",
            ));
        }
        if let Some(g) = &self.gpio {
            let lines = [
                ("gpio.alert_led", g.alert_led),
                ("gpio.buzzer", g.buzzer),
                ("gpio.heartbeat_led", g.heartbeat_led),
                ("gpio.trigger", g.trigger),
            ];
            let mut used = Vec::new();
            for (key, line) in lines {
                if let Some(line) = line {
                    c.range(key, line, 0, MAX_GPIO_LINE)?;
                    if used.contains(&line) {
                        return Err(c.fail(key, line, "each GPIO line may be used once"));
                    }
                    used.push(line);
                }
            }
            c.range("gpio.alert_pulse_ms", g.alert_pulse_ms, 10, 10_000)?;
            c.range("gpio.trigger_every", g.trigger_every, 1, 10_000)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
device_id = "robot-7"
[model]
bundle = "bundle"
threads = 2
[source]
kind = "folder"
path = "frames"
[tiling]
tile_size = 256
overlap = 32
[alerts]
output = "serial"
port = "/dev/ttyAMA0"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/inspectd/robot.toml"))
    }

    #[test]
    fn good_config_resolves_relative_paths_and_defaults() {
        let c = parse(&format!(
            "{GOOD}\n[journal]\npath = \"state/alerts.journal\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.journal.path.as_deref(),
            Some(Path::new("/etc/inspectd/state/alerts.journal"))
        );
        assert_eq!(c.journal.fsync, FsyncConfig::Interval);
        assert!(!c.alerts.require_ack);
        assert_eq!(c.alerts.framing, Framing::Json);
        assert_eq!(c.model.bundle, Path::new("/etc/inspectd/bundle"));
        assert_eq!(c.alerts.baud, 115200);
        assert_eq!(c.alerts.port.as_deref(), Some(Path::new("/dev/ttyAMA0")));
        assert!(matches!(
            c.source,
            SourceConfig::Folder { looping: false, .. }
        ));
    }

    #[test]
    fn errors_name_key_value_and_range() {
        let cases = [
            (
                GOOD.replace("overlap = 32", "overlap = 200"),
                "`tiling.overlap` = 200",
                "0 to 128",
            ),
            (
                GOOD.replace("threads = 2", "threads = 0"),
                "`model.threads` = 0",
                "1 to 16",
            ),
            (
                GOOD.replace("threads = 2", "threads = 2\nworkers = 17"),
                "`model.workers` = 17",
                "1 to 16",
            ),
            (
                GOOD.replace("robot-7", "robot 7!"),
                "`device_id` = \"robot 7!\"",
                "A-Z a-z",
            ),
            (
                GOOD.replace("output = \"serial\"", "output = \"serial\"\nbaud = 12345"),
                "`alerts.baud` = 12345",
                "115200",
            ),
            (
                GOOD.replace("port = \"/dev/ttyAMA0\"", ""),
                "`alerts.port`",
                "required",
            ),
            (
                format!("{GOOD}ack_timeout_ms = 10\n"),
                "`alerts.ack_timeout_ms` = 10",
                "100 to 600000",
            ),
            (
                format!("{GOOD}threshold_min = 3.0\nthreshold_max = 2.0\n"),
                "`alerts.threshold_max` = 2",
                "at least alerts.threshold_min (3)",
            ),
            (
                format!("{GOOD}\n[journal]\nmax_bytes = 100\n"),
                "`journal.max_bytes` = 100",
                "4096 to 1073741824",
            ),
            (
                format!("{GOOD}\n[evidence]\ndir = \"ev\"\nmax_bytes = 1\n"),
                "`evidence.max_bytes` = 1",
                "65536 to",
            ),
            (
                GOOD.replace(
                    "output = \"serial\"",
                    "output = \"stdout\"\nrequire_ack = true",
                ),
                "`alerts.require_ack` = true",
                "needs alerts.output = \"serial\"",
            ),
        ];
        for (text, key, range) in cases {
            let msg = parse(&text).unwrap_err().to_string();
            assert!(msg.contains("/etc/inspectd/robot.toml"), "{msg}");
            assert!(msg.contains(key), "{msg}");
            assert!(msg.contains(range), "{msg}");
        }
    }

    #[test]
    fn unknown_and_misspelt_keys_are_rejected() {
        let msg = parse(&GOOD.replace("threads = 2", "thread = 2"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unknown field `thread`"), "{msg}");
        let msg = parse(&format!("{GOOD}\n[extra]\nx = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unknown field `extra`"), "{msg}");
    }

    #[test]
    fn gpio_lines_are_checked() {
        let bad = format!("{GOOD}\n[gpio]\nalert_led = 40\n");
        let msg = parse(&bad).unwrap_err().to_string();
        assert!(
            msg.contains("`gpio.alert_led` = 40") && msg.contains("0 to 27"),
            "{msg}"
        );
        let dup = format!("{GOOD}\n[gpio]\nalert_led = 17\nbuzzer = 17\n");
        assert!(parse(&dup).unwrap_err().to_string().contains("once"));
    }
}
