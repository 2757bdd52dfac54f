//! `inspect-train keygen` and `sign`: the key pair that signs bundles, and a bundle signed for
//! devices that hold its public key (`model.public_key` in the daemon's config).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{read_file, write_file, WorkflowError};
use inspect_core::bundle::trust::{SecretKey, SIGNATURE_FILE};
use inspect_core::bundle::{write_manifest, Bundle, BundleError, MANIFEST_FILE};

/// The public key's file for the secret key file `secret`: the same path with `.pub` added.
pub fn public_key_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> WorkflowError + '_ {
    move |source| WorkflowError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes a key pair: `secret` (the 32-byte seed in hex, created with mode 0600, never
/// overwritten) and `secret.pub` (the public key in hex). Returns the public key.
pub fn keygen(secret: &Path) -> Result<String, WorkflowError> {
    let mut seed = [0u8; 32];
    let urandom = Path::new("/dev/urandom");
    std::fs::File::open(urandom)
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(io(urandom))?;
    let key = SecretKey::from_seed(seed);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(secret)
        .and_then(|mut f| writeln!(f, "{}", key.to_hex()))
        .map_err(io(secret))?;
    let public = key.public().to_hex();
    write_file(&public_key_path(secret), format!("{public}\n"))?;
    Ok(public)
}

/// Signs the bundle in `dir` with the secret key in `secret` as release `version`: its hashes
/// are checked, `bundle_version` is set in the manifest, and `manifest.sig` is written.
pub fn sign_bundle(dir: &Path, secret: &Path, version: u64) -> Result<(), WorkflowError> {
    let bytes = inspect_protocol::secret_file::read_owner_only(secret)
        .map_err(|e| WorkflowError::Usage(format!("{}: {e}", secret.display())))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let key = SecretKey::from_hex(&text)
        .map_err(|e| WorkflowError::Usage(format!("{}: {e}", secret.display())))?;
    let mut manifest = Bundle::load(dir).map_err(bundle_error)?.manifest;
    manifest.bundle_version = version;
    write_manifest(dir, &manifest).map_err(bundle_error)?;
    let bytes = read_file(&dir.join(MANIFEST_FILE))?;
    write_file(&dir.join(SIGNATURE_FILE), format!("{}\n", key.sign(&bytes)))
}

fn bundle_error(e: BundleError) -> WorkflowError {
    WorkflowError::Usage(e.to_string())
}
