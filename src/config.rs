//! The daemon's TOML configuration, validated before anything starts.
//!
//! Each table belongs to the part of the daemon it configures, which defines and checks it
//! ([`ModelSettings`], [`SourceSettings`], [`Tiling`], [`AlertsSettings`], [`JournalSettings`],
//! [`EvidenceSettings`], [`GpioSettings`], [`PositionSettings`], [`RecordSettings`]); this module only assembles them, so imports run
//! one way: config -> subsystems -> `settings`. Unknown keys are rejected (a misspelt key must
//! not silently fall back to a default) and every value is range-checked; errors name the file,
//! the key, the value and what is accepted. Relative paths are resolved against the directory
//! of the config file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::alerts::journal::{FsyncMode, JournalSettings};
pub use crate::alerts::settings::{AlertOutput, AlertsSettings, BAUD_RATES};
pub use crate::evidence::EvidenceSettings;
pub use crate::frames::{PixelFormat, SourceSettings};
pub use crate::gpio::{GpioSettings, TriggerEdge, MAX_GPIO_LINE};
pub use crate::position::PositionSettings;
pub use crate::record::RecordSettings;
pub use inspect_core::detector::{ModelSettings, Tiling};
pub use inspect_core::settings::ConfigError;
use inspect_core::settings::{read_text, Checker};

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of this device in every alert: 1-32 characters of `A-Z a-z 0-9 . _ -`.
    pub device_id: String,
    /// The model bundle and how to run it.
    pub model: ModelSettings,
    /// Where frames come from.
    pub source: SourceSettings,
    /// How frames are cut into tiles.
    pub tiling: Tiling,
    /// Where alerts go.
    pub alerts: AlertsSettings,
    /// The alert journal (in memory when absent).
    #[serde(default)]
    pub journal: JournalSettings,
    /// The evidence store (none when absent).
    #[serde(default)]
    pub evidence: Option<EvidenceSettings>,
    /// GPIO trigger and indicators (needs the `gpio` feature and a Raspberry Pi).
    #[serde(default)]
    pub gpio: Option<GpioSettings>,
    /// Where positions come from (none when absent).
    #[serde(default)]
    pub position: Option<PositionSettings>,
    /// Frames saved for enrollment (none when absent).
    #[serde(default)]
    pub record: Option<RecordSettings>,
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
        config.alerts.key = config.alerts.load_key(&Checker { path })?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.model.bundle);
        for path in [
            &mut self.model.fallback_bundle,
            &mut self.model.version_file,
        ]
        .into_iter()
        .flatten()
        {
            resolve(path);
        }
        match &mut self.source {
            SourceSettings::Folder { path, .. } | SourceSettings::Stream { path, .. } => {
                resolve(path)
            }
            SourceSettings::V4l2 { device, .. } => resolve(device),
        }
        if let Some(port) = &mut self.alerts.port {
            resolve(port);
        }
        if let Some(key) = &mut self.alerts.key_file {
            resolve(key);
        }
        if let Some(path) = &mut self.journal.path {
            resolve(path);
        }
        if let Some(e) = &mut self.evidence {
            resolve(&mut e.dir);
        }
        if let Some(p) = &mut self.position {
            p.resolve(base);
        }
        if let Some(r) = &mut self.record {
            resolve(&mut r.dir);
        }
    }

    /// Each table checks its own keys; the config adds the device id.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let c = Checker { path };
        if !inspect_protocol::message::is_plain_id(&self.device_id) {
            return Err(c.fail(
                "device_id",
                format!("{:?}", self.device_id),
                "expected 1 to 32 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        self.model.validate(&c)?;
        self.source.validate(&c)?;
        self.tiling.validate(&c)?;
        self.alerts.validate(&c)?;
        self.journal.validate(&c)?;
        if let Some(e) = &self.evidence {
            e.validate(&c)?;
        }
        if let Some(g) = &self.gpio {
            g.validate(&c)?;
        }
        if let Some(p) = &self.position {
            let has_trigger = self.gpio.as_ref().is_some_and(|g| g.trigger.is_some());
            p.validate(&c, has_trigger)?;
        }
        if let Some(r) = &self.record {
            r.validate(&c)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Framing;

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
        assert_eq!(c.journal.fsync, FsyncMode::Interval);
        assert!(!c.alerts.require_ack);
        assert_eq!(c.alerts.framing, Framing::Json);
        assert_eq!(c.model.bundle, Path::new("/etc/inspectd/bundle"));
        assert_eq!(c.alerts.baud, 115200);
        assert_eq!(c.alerts.port.as_deref(), Some(Path::new("/dev/ttyAMA0")));
        assert!(matches!(
            c.source,
            SourceSettings::Folder { looping: false, .. }
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
    fn the_link_key_file_must_be_private_and_hold_a_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ei-config-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("link.key");
        let with_key = format!("{GOOD}key_file = \"{}\"\nlink_id = 7\n", key.display());
        let write = |content: &str, mode: u32| {
            std::fs::write(&key, content).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(&"ab".repeat(32), 0o600);
        let c = parse(&with_key).unwrap();
        assert!(c.alerts.key.is_some());
        assert_eq!(c.alerts.link_id, 7);
        write(&"ab".repeat(32), 0o644);
        let msg = parse(&with_key).unwrap_err().to_string();
        assert!(
            msg.contains("`alerts.key_file`") && msg.contains("mode 644"),
            "{msg}"
        );
        assert!(msg.contains("chmod 600"), "{msg}");
        write("not a key", 0o600);
        let msg = parse(&with_key).unwrap_err().to_string();
        assert!(msg.contains("64 hexadecimal digits"), "{msg}");
        std::fs::remove_file(&key).unwrap();
        let msg = parse(&with_key).unwrap_err().to_string();
        assert!(msg.contains("a readable file"), "{msg}");
        assert!(parse(GOOD).unwrap().alerts.key.is_none());
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
