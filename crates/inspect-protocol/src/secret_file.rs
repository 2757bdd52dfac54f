//! Reading a secret key file (a link key, a bundle signing key) that must be readable by its
//! owner only: one check for the daemon, the monitor and the trainer.

use std::path::Path;

/// Why a secret file was not read.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// It could not be read.
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
    /// Others than its owner may read or write it.
    #[error("mode {mode:o}: a key file must be readable by its owner only (chmod 600)")]
    Exposed {
        /// Its permission bits.
        mode: u32,
    },
}

/// The bytes of the secret file at `path`, refused (on Unix) when its group or others have any
/// permission on it.
pub fn read_owner_only(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let bytes = std::fs::read(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretFileError::Exposed { mode });
        }
    }
    Ok(bytes)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_owner_only_files_are_read() {
        let path = std::env::temp_dir().join(format!("ei-secret-{}", std::process::id()));
        std::fs::write(&path, b"secret").unwrap();
        for (mode, readable) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match read_owner_only(&path) {
                Ok(bytes) => assert!(readable && bytes == b"secret", "{mode:o}"),
                Err(SecretFileError::Exposed { mode: m }) => {
                    assert!(!readable && m == mode, "{mode:o}")
                }
                Err(e) => panic!("{mode:o}: {e}"),
            }
        }
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            read_owner_only(&path),
            Err(SecretFileError::Read(_))
        ));
    }
}
