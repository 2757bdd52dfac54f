//! Frames read from a folder of PNG/JPEG files, in file-name order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use inspect_core::image_files::list_image_files;

use crate::position::{replay, Position};

use super::{Frame, FrameError, FrameSource};

/// Reads the PNG and JPEG files of a folder in sorted order, optionally looping.
///
/// Files that fail to decode are logged, counted and skipped.
#[derive(Debug)]
pub struct FolderSource {
    folder: PathBuf,
    files: Vec<PathBuf>,
    next: usize,
    looping: bool,
    delivered: u64,
    skipped: u64,
    // Frames delivered since the last pass started, to stop a loop over a folder of bad files.
    delivered_this_pass: u64,
    // The folder's `positions.csv`, by file name (empty without one).
    positions: HashMap<String, Position>,
}

impl FolderSource {
    /// Lists `folder` and reads its `positions.csv` if it has one; fails if it cannot be read,
    /// holds no PNG/JPEG file, or its positions do not read.
    pub fn open(folder: &Path, looping: bool) -> Result<FolderSource, FrameError> {
        let files = list_image_files(folder).map_err(|source| FrameError::Io {
            path: folder.to_path_buf(),
            source,
        })?;
        if files.is_empty() {
            return Err(FrameError::NoFrames {
                path: folder.to_path_buf(),
                skipped: 0,
            });
        }
        let positions = replay::load(folder).map_err(|e| FrameError::Io {
            path: e.path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })?;
        if !positions.is_empty() {
            log::info!(
                "{}: positions of {} frames from {}",
                folder.display(),
                positions.len(),
                replay::POSITIONS_FILE
            );
        }
        Ok(FolderSource {
            positions,
            folder: folder.to_path_buf(),
            files,
            next: 0,
            looping,
            delivered: 0,
            skipped: 0,
            delivered_this_pass: 0,
        })
    }

    /// Number of image files found in the folder.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether the folder held no image file (never true for an opened source).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl FrameSource for FolderSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if self.next == self.files.len() {
                // A whole pass without one decodable file is a fault of the folder, not a frame.
                if self.delivered_this_pass == 0 {
                    return Err(FrameError::NoFrames {
                        path: self.folder.clone(),
                        skipped: self.skipped,
                    });
                }
                if !self.looping {
                    return Ok(None);
                }
                self.next = 0;
                self.delivered_this_pass = 0;
            }
            let path = &self.files[self.next];
            self.next += 1;
            match image::open(path) {
                Ok(img) => {
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                    let frame = Frame {
                        position: name.and_then(|n| self.positions.get(&n).copied()),
                        number: self.delivered,
                        image: img.into_rgb8(),
                        timestamp: SystemTime::now(),
                        origin: path.display().to_string(),
                    };
                    self.delivered += 1;
                    self.delivered_this_pass += 1;
                    return Ok(Some(frame));
                }
                Err(e) => {
                    self.skipped += 1;
                    log::warn!("skipping frame {}: {e}", path.display());
                }
            }
        }
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }

    fn is_live(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ei-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_sorted_skips_corrupt_and_loops() {
        let dir = temp_dir("sorted");
        image::RgbImage::from_pixel(4, 3, image::Rgb([1, 2, 3]))
            .save(dir.join("b.png"))
            .unwrap();
        image::RgbImage::from_pixel(5, 2, image::Rgb([9, 9, 9]))
            .save(dir.join("a.jpg"))
            .unwrap();
        std::fs::write(dir.join("c.png"), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
        std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();

        let mut src = FolderSource::open(&dir, true).unwrap();
        assert_eq!(src.len(), 3);
        let sizes: Vec<(u32, u32, u64)> = (0..4)
            .map(|_| {
                let f = src.next_frame().unwrap().unwrap();
                (f.image.width(), f.image.height(), f.number)
            })
            .collect();
        assert_eq!(sizes, vec![(5, 2, 0), (4, 3, 1), (5, 2, 2), (4, 3, 3)]);
        assert_eq!(src.skipped(), 1);

        let mut once = FolderSource::open(&dir, false).unwrap();
        assert!(once.next_frame().unwrap().is_some());
        assert!(once.next_frame().unwrap().is_some());
        assert!(once.next_frame().unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn folder_of_only_bad_files_is_an_error_not_a_spin() {
        let dir = temp_dir("bad");
        std::fs::write(dir.join("x.png"), b"not a png").unwrap();
        let mut src = FolderSource::open(&dir, true).unwrap();
        let err = src.next_frame().unwrap_err();
        assert!(err.to_string().contains("no readable"), "{err}");
        let empty = temp_dir("empty");
        assert!(FolderSource::open(&empty, false).is_err());
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(empty).unwrap();
    }
}
