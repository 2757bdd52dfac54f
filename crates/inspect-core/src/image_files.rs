//! The image files of a folder: what the daemon's folder source plays and what the trainer's
//! datasets read, listed one way so both see the same files in the same order.

use std::path::{Path, PathBuf};

/// Whether `path` names a PNG or JPEG file (by extension, any case).
pub fn is_image(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// The PNG and JPEG files of `dir` (the formats this build decodes), sorted by path.
pub fn list_image_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && is_image(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
