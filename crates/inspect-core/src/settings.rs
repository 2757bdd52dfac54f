//! The vocabulary every part of the project validates its own settings with: the error that
//! names the file, the key, the value and what is accepted, and the checker that builds it.
//! Imports nothing of the project, so each subsystem can own its table of the config (`config`
//! only assembles them) and the trainer's configs use the same messages.

use std::path::{Path, PathBuf};

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

/// Builds [`ConfigError::Invalid`] messages for one file (shared with the trainer's configs).
pub struct Checker<'a> {
    /// The config file named in every message.
    pub path: &'a Path,
}

impl Checker<'_> {
    /// The error for `key` = `value`, with what is accepted.
    pub fn fail(&self, key: &str, value: impl std::fmt::Display, expected: &str) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    /// Checks `lo <= value <= hi`.
    pub fn range<T: PartialOrd + std::fmt::Display + Copy>(
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
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The `[name]` table of a trainer config, deserialized strictly (`None` when absent). The
/// file's other tables belong to other parts of the trainer and are left alone.
pub fn config_table<T: serde::de::DeserializeOwned>(
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
