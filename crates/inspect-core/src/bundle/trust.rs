//! Signed bundles: an ed25519 signature over the manifest's exact bytes, which record every
//! model file's SHA-256 and the bundle's release number. A daemon that holds the public key
//! loads only bundles signed with the matching secret key, and none older than the newest it
//! accepted (no rollback to a bundle with a known flaw).

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// The signature file next to `manifest.toml`: 128 hexadecimal digits.
pub const SIGNATURE_FILE: &str = "manifest.sig";

/// Why a key or signature is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not the expected number of hexadecimal digits.
    #[error("expected {expected} hexadecimal digits, found {found} characters")]
    Length {
        /// Digits expected.
        expected: usize,
        /// Characters found.
        found: usize,
    },
    /// A character that is not a hexadecimal digit.
    #[error("not hexadecimal")]
    NotHex,
    /// The bytes are not a valid ed25519 public key.
    #[error("not an ed25519 public key")]
    NotAKey,
}

fn from_hex<const N: usize>(text: &str) -> Result<[u8; N], KeyError> {
    let text = text.trim();
    if text.len() != 2 * N {
        return Err(KeyError::Length {
            expected: 2 * N,
            found: text.len(),
        });
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).ok_or(KeyError::NotHex)?, 16)
            .map_err(|_| KeyError::NotHex)?;
    }
    Ok(out)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key a daemon checks bundles with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// A public key from 64 hexadecimal digits (as `inspect-train keygen` writes it).
    pub fn from_hex(text: &str) -> Result<PublicKey, KeyError> {
        VerifyingKey::from_bytes(&from_hex::<32>(text)?)
            .map(PublicKey)
            .map_err(|_| KeyError::NotAKey)
    }

    /// The key as 64 hexadecimal digits.
    pub fn to_hex(&self) -> String {
        to_hex(self.0.as_bytes())
    }

    /// Whether `signature_hex` is this key's signature of `manifest`.
    pub fn verifies(&self, manifest: &[u8], signature_hex: &str) -> bool {
        from_hex::<64>(signature_hex)
            .map(|bytes| Signature::from_bytes(&bytes))
            .is_ok_and(|sig| self.0.verify(manifest, &sig).is_ok())
    }
}

/// The key `inspect-train sign` signs bundles with (its 32-byte seed). Never printed.
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A secret key from its 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// A secret key from 64 hexadecimal digits (as `inspect-train keygen` writes it).
    pub fn from_hex(text: &str) -> Result<SecretKey, KeyError> {
        from_hex::<32>(text).map(SecretKey::from_seed)
    }

    /// The seed as 64 hexadecimal digits.
    pub fn to_hex(&self) -> String {
        to_hex(self.0.as_bytes())
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The signature of `manifest`, as 128 hexadecimal digits.
    pub fn sign(&self, manifest: &[u8]) -> String {
        to_hex(&self.0.sign(manifest).to_bytes())
    }
}

/// What a daemon requires of a bundle: signed by `key`, release number at least `min_version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    /// The public key of the bundles' signer.
    pub key: PublicKey,
    /// The newest release number accepted so far (older ones are refused).
    pub min_version: u64,
}

/// Reads the signature file of the bundle in `dir`, if there is one.
pub fn read_signature(dir: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(dir.join(SIGNATURE_FILE)) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_its_manifest_under_its_key() {
        let secret = SecretKey::from_seed([7; 32]);
        let public = PublicKey::from_hex(&secret.public().to_hex()).unwrap();
        let sig = secret.sign(b"format_version = 1\n");
        assert_eq!(sig.len(), 128);
        assert!(public.verifies(b"format_version = 1\n", &sig));
        assert!(!public.verifies(b"format_version = 2\n", &sig));
        let other = SecretKey::from_seed([8; 32]).public();
        assert!(!other.verifies(b"format_version = 1\n", &sig));
        assert!(!public.verifies(b"format_version = 1\n", "00"));
        let again = SecretKey::from_hex(&secret.to_hex()).unwrap();
        assert_eq!(again.public(), public);
        assert_eq!(
            PublicKey::from_hex("abc").unwrap_err(),
            KeyError::Length {
                expected: 64,
                found: 3
            }
        );
        assert_eq!(format!("{secret:?}"), "SecretKey(..)");
    }
}
