//! The model bundle: the contract between the trainer and the daemon.
//!
//! A directory holding `manifest.toml` and the ONNX files it names. [`Bundle::load`] checks the
//! format version, every value of the manifest, the SHA-256 of every file, and that the models'
//! inputs and outputs have the shapes the manifest promises; errors name the file and the fault.

mod manifest;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

pub use manifest::{
    Combine, ExtractorSpec, HeadSpec, InputSpec, LevelSpec, Manifest, ManifestError, ScoreSpec,
    ThresholdSpec, FORMAT_VERSION,
};

/// Name of the manifest inside a bundle directory.
pub const MANIFEST_FILE: &str = "manifest.toml";

pub mod trust;
use trust::Trust;

/// Length of the model id: the hex prefix of the manifest's SHA-256.
pub const MODEL_ID_LEN: usize = 12;

/// Errors met while reading or writing a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The manifest is not valid TOML or does not have the expected keys.
    #[error("{path}: {message}")]
    ManifestSyntax {
        /// The manifest file.
        path: PathBuf,
        /// Parser message (names the key and line).
        message: String,
    },
    /// A manifest value is out of range or inconsistent.
    #[error("{path}: {source}")]
    InvalidManifest {
        /// The manifest file.
        path: PathBuf,
        /// Which field and why.
        source: ManifestError,
    },
    /// A public key is configured and the bundle has no signature.
    #[error("{path}: the bundle is not signed (a public key is configured: sign it with `inspect-train sign`)")]
    Unsigned {
        /// The signature file that is missing.
        path: PathBuf,
    },
    /// The signature does not verify under the configured key.
    #[error("{path}: the signature does not match the manifest under the configured public key (changed, or signed with another key)")]
    BadSignature {
        /// The signature file.
        path: PathBuf,
    },
    /// The bundle is older than the newest accepted.
    #[error("{path}: bundle_version {version} is older than {newest}, the newest this device accepted (rollback refused)")]
    Rollback {
        /// The manifest.
        path: PathBuf,
        /// Its release number.
        version: u64,
        /// The newest accepted.
        newest: u64,
    },
    /// A file's content does not match the SHA-256 recorded in the manifest.
    #[error("{path}: SHA-256 is {actual} but the manifest records {expected}; the file was changed or damaged")]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// Recorded hash.
        expected: String,
        /// Hash of the file on disk.
        actual: String,
    },
    /// tract could not read or type the model.
    #[error("{path}: cannot load the model: {message}")]
    Model {
        /// The ONNX file.
        path: PathBuf,
        /// tract's message.
        message: String,
    },
    /// A model input or output does not have the shape the manifest promises.
    #[error("{path}: {what} has shape {found} but the manifest expects {expected}")]
    Shape {
        /// The ONNX file.
        path: PathBuf,
        /// Which input or output.
        what: String,
        /// Expected shape.
        expected: String,
        /// Shape found in the model.
        found: String,
    },
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn read(path: &Path) -> Result<Vec<u8>, BundleError> {
    std::fs::read(path).map_err(|source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn model_error(path: &Path) -> impl Fn(TractError) -> BundleError + '_ {
    move |e| BundleError::Model {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    }
}

/// A loaded, verified bundle: its manifest and its models parsed by tract (not yet optimized).
#[derive(Debug)]
pub struct Bundle {
    /// The bundle directory.
    pub dir: PathBuf,
    /// The verified manifest.
    pub manifest: Manifest,
    /// Hex prefix of the manifest's SHA-256; it changes whenever any file changes.
    pub model_id: String,
    /// The extractor, typed for one `1 x 3 x H x W` input, outputs restricted to the taps.
    pub extractor: TypedModel,
    /// The head as parsed, outputs restricted to the logp maps; typed per batch size by the engine.
    pub head: InferenceModel,
}

impl Bundle {
    /// Reads and verifies the bundle in `dir`.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        Bundle::load_trusted(dir, None)
    }

    /// Reads and verifies the bundle in `dir`; with `trust`, it must also be signed with the
    /// trusted key and not older than the newest accepted. Every file is read once: the bytes
    /// whose hash is checked are the bytes parsed.
    pub fn load_trusted(dir: &Path, trust: Option<&Trust>) -> Result<Bundle, BundleError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest_bytes = read(&manifest_path)?;
        if let Some(trust) = trust {
            let sig_path = dir.join(trust::SIGNATURE_FILE);
            let signature = trust::read_signature(dir)
                .map_err(|source| BundleError::Io {
                    path: sig_path.clone(),
                    source,
                })?
                .ok_or(BundleError::Unsigned {
                    path: sig_path.clone(),
                })?;
            if !trust.key.verifies(&manifest_bytes, &signature) {
                return Err(BundleError::BadSignature { path: sig_path });
            }
        }
        let text =
            std::str::from_utf8(&manifest_bytes).map_err(|_| BundleError::ManifestSyntax {
                path: manifest_path.clone(),
                message: "not UTF-8 text".into(),
            })?;
        let manifest: Manifest = toml::from_str(text).map_err(|e| BundleError::ManifestSyntax {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
        manifest
            .validate()
            .map_err(|source| BundleError::InvalidManifest {
                path: manifest_path.clone(),
                source,
            })?;
        if let Some(trust) = trust {
            if manifest.bundle_version < trust.min_version {
                return Err(BundleError::Rollback {
                    path: manifest_path,
                    version: manifest.bundle_version,
                    newest: trust.min_version,
                });
            }
        }
        let mut contents = std::collections::BTreeMap::new();
        for (name, expected) in &manifest.files {
            let path = dir.join(name);
            let bytes = read(&path)?;
            let actual = sha256_hex(&bytes);
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(BundleError::HashMismatch {
                    path,
                    expected: expected.clone(),
                    actual,
                });
            }
            contents.insert(name.clone(), bytes);
        }
        // The models are parsed from the bytes just hashed (validation makes sure the manifest
        // lists both files), so a file swapped after the check is never the one run.
        let model_bytes = |name: &str| -> Result<&[u8], BundleError> {
            contents
                .get(name)
                .map(Vec::as_slice)
                .ok_or_else(|| BundleError::InvalidManifest {
                    path: manifest_path.clone(),
                    source: ManifestError {
                        field: "files".into(),
                        message: format!("has no SHA-256 for {name:?}"),
                    },
                })
        };
        let extractor_path = dir.join(&manifest.extractor.file);
        let extractor = load_extractor(
            &extractor_path,
            model_bytes(&manifest.extractor.file)?,
            &manifest,
        )?;
        let head_path = dir.join(&manifest.head.file);
        let head = load_head(&head_path, model_bytes(&manifest.head.file)?, &manifest)?;
        // Type the head once with batch 1 now, so shape faults surface at load, not mid-run.
        type_head(&head, &head_path, &manifest, 1)?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            model_id: sha256_hex(&manifest_bytes)[..MODEL_ID_LEN].to_string(),
            manifest,
            extractor,
            head,
        })
    }

    /// Path of the head ONNX file.
    pub fn head_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.head.file)
    }

    /// The head typed for a batch of `batch` tiles, shapes checked against the manifest.
    pub fn head_for_batch(&self, batch: usize) -> Result<TypedModel, BundleError> {
        type_head(&self.head, &self.head_path(), &self.manifest, batch)
    }
}

fn shape_string(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

fn check_output_shapes(
    model: &TypedModel,
    path: &Path,
    expected: &[(String, Vec<usize>)],
) -> Result<(), BundleError> {
    for (i, (name, dims)) in expected.iter().enumerate() {
        let fact = model
            .output_fact(i)
            .map_err(model_error(path))?
            .shape
            .as_concrete()
            .map(|s| s.to_vec());
        if fact.as_deref() != Some(dims.as_slice()) {
            return Err(BundleError::Shape {
                path: path.to_path_buf(),
                what: format!("output {name:?}"),
                expected: shape_string(dims),
                found: model
                    .output_fact(i)
                    .map(|f| format!("{:?}", f.shape))
                    .unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// Checks the shape an ONNX file declares for an input against the manifest's: every fixed
/// dimension must agree (symbolic ones, such as a batch `N`, are free).
fn check_declared_input(
    model: &InferenceModel,
    outlet: OutletId,
    expected: &[usize],
    path: &Path,
) -> Result<(), BundleError> {
    let fact = model.outlet_fact(outlet).map_err(model_error(path))?;
    let dims: Vec<Option<i64>> = fact
        .shape
        .dims()
        .map(|d| d.concretize().and_then(|d| d.as_i64()))
        .collect();
    let rank_ok = fact.shape.is_open() || dims.len() == expected.len();
    let agree = rank_ok
        && dims
            .iter()
            .zip(expected)
            .all(|(d, &e)| d.is_none_or(|d| d == e as i64));
    if agree {
        return Ok(());
    }
    let found: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
        .collect();
    Err(BundleError::Shape {
        path: path.to_path_buf(),
        what: format!("input {:?}", model.node(outlet.node).name),
        expected: shape_string(expected),
        found: format!("[{}]", found.join(", ")),
    })
}

fn load_extractor(
    path: &Path,
    bytes: &[u8],
    manifest: &Manifest,
) -> Result<TypedModel, BundleError> {
    let taps: Vec<&str> = manifest.levels.iter().map(|l| l.tap.as_str()).collect();
    let model = parse_with_outputs(path, bytes, &taps, "tap")?;
    if model.input_outlets().map_err(model_error(path))?.len() != 1 {
        return Err(BundleError::Model {
            path: path.to_path_buf(),
            message: "the extractor must have exactly one input (the image)".into(),
        });
    }
    let input = [1, 3, manifest.input.height, manifest.input.width];
    let outlet = model.input_outlets().map_err(model_error(path))?[0];
    check_declared_input(&model, outlet, &input, path)?;
    let model = model
        .with_input_fact(0, f32::fact(input).into())
        .and_then(|m| m.into_typed())
        .map_err(model_error(path))?;
    let expected: Vec<(String, Vec<usize>)> = manifest
        .levels
        .iter()
        .map(|l| (l.tap.clone(), vec![1, l.channels, l.height, l.width]))
        .collect();
    check_output_shapes(&model, path, &expected)?;
    Ok(model)
}

fn load_head(
    path: &Path,
    bytes: &[u8],
    manifest: &Manifest,
) -> Result<InferenceModel, BundleError> {
    let outputs: Vec<&str> = manifest.levels.iter().map(|l| l.logp.as_str()).collect();
    parse_with_outputs(path, bytes, &outputs, "logp")
}

/// Parses the ONNX bytes of `path` and makes `outputs` (the manifest's `what` names) its
/// outputs, in order.
fn parse_with_outputs(
    path: &Path,
    bytes: &[u8],
    outputs: &[&str],
    what: &str,
) -> Result<InferenceModel, BundleError> {
    crate::tract_env::avoid_faulty_kernels();
    let mut model = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(bytes))
        .map_err(model_error(path))?;
    model
        .select_outputs_by_name(outputs)
        .map_err(|e| BundleError::Model {
            path: path.to_path_buf(),
            message: format!("{what} outputs {outputs:?} not found: {e:#}"),
        })?;
    Ok(model)
}

fn type_head(
    head: &InferenceModel,
    path: &Path,
    manifest: &Manifest,
    batch: usize,
) -> Result<TypedModel, BundleError> {
    let mut model = head.clone();
    let inputs = model.input_outlets().map_err(model_error(path))?.to_vec();
    if inputs.len() != manifest.levels.len() {
        return Err(BundleError::Model {
            path: path.to_path_buf(),
            message: format!(
                "the head has {} inputs but the manifest lists {} levels",
                inputs.len(),
                manifest.levels.len()
            ),
        });
    }
    for outlet in inputs {
        let name = model.node(outlet.node).name.clone();
        let Some(level) = manifest.levels.iter().find(|l| l.tap == name) else {
            return Err(BundleError::Model {
                path: path.to_path_buf(),
                message: format!("head input {name:?} is not one of the manifest's taps"),
            });
        };
        let shape = [batch, level.channels, level.height, level.width];
        check_declared_input(&model, outlet, &shape, path)?;
        model
            .set_outlet_fact(outlet, f32::fact(shape).into())
            .map_err(model_error(path))?;
    }
    // Feed inputs in manifest level order, whatever order the file declares them in.
    let order: Vec<&str> = manifest.levels.iter().map(|l| l.tap.as_str()).collect();
    model.set_input_names(&order).map_err(model_error(path))?;
    let model = model.into_typed().map_err(model_error(path))?;
    let expected: Vec<(String, Vec<usize>)> = manifest
        .levels
        .iter()
        .map(|l| (l.logp.clone(), vec![batch, l.height, l.width]))
        .collect();
    check_output_shapes(&model, path, &expected)?;
    Ok(model)
}

/// Writes a bundle: the model files, then a manifest recording their SHA-256.
///
/// `manifest.files` is replaced by the hashes of `files`.
pub fn write_bundle(
    dir: &Path,
    manifest: &Manifest,
    files: &[(&str, &[u8])],
) -> Result<(), BundleError> {
    std::fs::create_dir_all(dir).map_err(|source| BundleError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut manifest = manifest.clone();
    manifest.files.clear();
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|source| BundleError::Io { path, source })?;
        manifest.files.insert(name.to_string(), sha256_hex(bytes));
    }
    write_manifest(dir, &manifest)
}

/// Validates `manifest` and writes it as the bundle's `manifest.toml` (a signature of the old
/// manifest no longer matches: sign again).
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), BundleError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    manifest
        .validate()
        .map_err(|source| BundleError::InvalidManifest {
            path: manifest_path.clone(),
            source,
        })?;
    let text = toml::to_string_pretty(&manifest).map_err(|e| BundleError::ManifestSyntax {
        path: manifest_path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&manifest_path, text).map_err(|source| BundleError::Io {
        path: manifest_path,
        source,
    })
}

/// The extractor output (tap) of the level with `stride`, as the trainer names it.
pub fn tap_name(stride: usize) -> String {
    format!("tap{stride}")
}

/// The head output (log-likelihood map) of the level with `stride`, as the trainer names it.
pub fn logp_name(stride: usize) -> String {
    format!("logp{stride}")
}
