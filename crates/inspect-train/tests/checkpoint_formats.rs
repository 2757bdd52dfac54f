//! PyTorch checkpoints in the zip format of torch >= 1.6, strided and offset views included
//! (the legacy format is covered by the EfficientNet-Lite0 tests).

mod common;

use std::process::Command;

use common::Scratch;
use inspect_train::extractor::Checkpoint;

#[test]
fn zip_checkpoint_with_strided_and_offset_tensors() {
    let dir = Scratch::new("zip-ckpt");
    let path = dir.path("small.pth");
    let script = common::repo_root().join("tests/reference/write_torch_zip.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let ckpt = Checkpoint::read(&path).unwrap();
    assert_eq!(ckpt.len(), 2);
    // Stored transposed: the reader must gather it back to row-major.
    assert_eq!(
        ckpt.get("w", &[2, 3]).unwrap(),
        &[0.0, 1.0, 2.0, 10.0, 11.0, 12.0]
    );
    // A view starting one element into its storage.
    assert_eq!(ckpt.get("b", &[3]).unwrap(), &[0.5, 1.5, 2.5]);
    let err = ckpt.get("b", &[4]).unwrap_err().to_string();
    assert!(err.contains("small.pth") && err.contains("\"b\""), "{err}");

    let junk = dir.path("junk.pth");
    std::fs::write(&junk, b"PK\x03\x04 not really a zip").unwrap();
    let err = Checkpoint::read(&junk).unwrap_err().to_string();
    assert!(
        err.contains("junk.pth") && err.contains("cannot read"),
        "{err}"
    );
}
