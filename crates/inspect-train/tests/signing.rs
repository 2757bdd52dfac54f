//! `keygen` and `sign`: a key pair whose secret only its owner can read, and a bundle signed as
//! a release that a daemon holding the public key accepts.
#![cfg(feature = "train")]

mod common;

use common::Scratch;
use inspect_core::bundle::trust::{PublicKey, Trust};
use inspect_core::bundle::Bundle;
use inspect_train::workflows::sign::{keygen, public_key_path, sign_bundle};

#[test]
fn a_bundle_signed_with_a_new_key_loads_under_its_public_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("signing");
    let bundle = common::bundle(&dir.0);
    let secret = dir.path("release.key");
    let public = keygen(&secret).unwrap();
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let written = std::fs::read_to_string(public_key_path(&secret)).unwrap();
    assert_eq!(written.trim(), public);
    assert!(
        keygen(&secret).is_err(),
        "an existing key is never overwritten"
    );

    sign_bundle(&bundle, &secret, 12).unwrap();
    let trust = Trust {
        key: PublicKey::from_hex(&public).unwrap(),
        min_version: 12,
    };
    let loaded = Bundle::load_trusted(&bundle, Some(&trust)).unwrap();
    assert_eq!(loaded.manifest.bundle_version, 12);
    let newer = Trust {
        min_version: 13,
        ..trust.clone()
    };
    assert!(Bundle::load_trusted(&bundle, Some(&newer)).is_err());

    // A secret others can read is refused.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = sign_bundle(&bundle, &secret, 13).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
}
