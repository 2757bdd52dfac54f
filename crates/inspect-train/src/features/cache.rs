//! The feature cache on disk: one record per image and augmentation, under a folder named by
//! the extractor's hash, so a changed model or normalization never reads stale features.
//!
//! Layout: `ROOT/<extractor 16 hex>/<image hash, 2 hex>/<image hash 64 hex>.feat` for the
//! image itself and `...<image hash>-<synthesis fingerprint 16 hex>-<seed 16 hex>.feat` for an
//! augmentation. A record is, little-endian: magic `EIFEAT01`, level count, per level its name
//! (length + UTF-8) and `C H W` (u32), mask count (0 or the level count), the f32 values of each
//! level, the `H x W` mask bytes (1 = pasted defect) of each level, and the SHA-256 of all of
//! that. Records are written to a temporary file and renamed, so a crash leaves no half record
//! under a real name; a record that fails its checksum is reported and recomputed.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Level;
use crate::records::Reader;

const MAGIC: &[u8; 8] = b"EIFEAT01";

/// Errors of the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record is damaged (truncated, wrong checksum, impossible sizes).
    #[error("{path}: damaged feature record ({reason})")]
    Corrupt {
        /// The record.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The features of one image or augmentation.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureRecord {
    /// The extractor's taps.
    pub levels: Vec<Level>,
    /// For an augmentation, the pasted mask `M` at each level (`H x W`, 1 = defect); empty for
    /// a real image.
    pub masks: Vec<Vec<u8>>,
}

/// What a record holds features of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKey {
    /// The image itself.
    Image {
        /// SHA-256 of the image file.
        image: [u8; 32],
    },
    /// An augmentation of the image.
    Augmented {
        /// SHA-256 of the image file.
        image: [u8; 32],
        /// The synthesizer's fingerprint (settings and defect pixels).
        synthesis: [u8; 32],
        /// The augmentation seed.
        seed: u64,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A feature cache for one extractor.
#[derive(Clone, Debug)]
pub struct FeatureCache {
    dir: PathBuf,
}

impl FeatureCache {
    /// Opens (creating it if needed) the cache of the extractor with `extractor_hash` under
    /// `root`.
    pub fn open(root: &Path, extractor_hash: &[u8; 32]) -> Result<FeatureCache, CacheError> {
        let dir = root.join(hex(&extractor_hash[..8]));
        std::fs::create_dir_all(&dir).map_err(|source| CacheError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(FeatureCache { dir })
    }

    /// The folder of this extractor's records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the record of `key` lives.
    pub fn path(&self, key: &RecordKey) -> PathBuf {
        let (image, suffix) = match key {
            RecordKey::Image { image } => (image, String::new()),
            RecordKey::Augmented {
                image,
                synthesis,
                seed,
            } => (image, format!("-{}-{seed:016x}", hex(&synthesis[..8]))),
        };
        self.dir
            .join(hex(&image[..1]))
            .join(format!("{}{suffix}.feat", hex(image)))
    }

    /// Reads the record of `key`: `Ok(None)` if there is none, an error if it is damaged.
    pub fn load(&self, key: &RecordKey) -> Result<Option<FeatureRecord>, CacheError> {
        let path = self.path(key);
        match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes)
                .map(Some)
                .map_err(|reason| CacheError::Corrupt {
                    path,
                    reason: reason.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CacheError::Io { path, source }),
        }
    }

    /// Writes the record of `key` (atomically: temporary file, then rename).
    pub fn store(&self, key: &RecordKey, record: &FeatureRecord) -> Result<(), CacheError> {
        let path = self.path(key);
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| CacheError::Io { path: p, source }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        // Unique per thread and process, so parallel writers never share a temporary file.
        let tmp = path.with_extension(format!(
            "tmp{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(&encode(record)).map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }
}

/// The bytes of a record.
pub fn encode(record: &FeatureRecord) -> Vec<u8> {
    let values: usize = record.levels.iter().map(|l| l.data.len()).sum();
    let mut out = Vec::with_capacity(64 + 4 * values);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(record.levels.len() as u32).to_le_bytes());
    for l in &record.levels {
        out.extend_from_slice(&(l.name.len() as u32).to_le_bytes());
        out.extend_from_slice(l.name.as_bytes());
        for d in [l.channels, l.height, l.width] {
            out.extend_from_slice(&d.to_le_bytes());
        }
    }
    out.extend_from_slice(&(record.masks.len() as u32).to_le_bytes());
    for l in &record.levels {
        for v in &l.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    for m in &record.masks {
        out.extend_from_slice(m);
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Reads a record's bytes, checking the checksum and every size.
pub fn decode(bytes: &[u8]) -> Result<FeatureRecord, &'static str> {
    if bytes.len() < MAGIC.len() + 32 {
        return Err("shorter than a header");
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err("checksum mismatch");
    }
    let mut r = Reader::new(body);
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not a feature record");
    }
    let count = r.u32()? as usize;
    if count > 64 {
        return Err("too many levels");
    }
    let mut levels = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.u32()? as usize;
        let name = std::str::from_utf8(r.take(len)?)
            .map_err(|_| "level name is not UTF-8")?
            .to_string();
        let (channels, height, width) = (r.u32()?, r.u32()?, r.u32()?);
        levels.push(Level {
            name,
            channels,
            height,
            width,
            data: Vec::new(),
        });
    }
    let masks = r.u32()? as usize;
    if masks != 0 && masks != count {
        return Err("mask count is neither 0 nor the level count");
    }
    for l in &mut levels {
        let n = (l.channels as usize)
            .checked_mul(l.height as usize * l.width as usize)
            .ok_or("level too large")?;
        l.data = r.f32s(n)?;
    }
    let mut mask_maps = Vec::with_capacity(masks);
    for l in levels.iter().take(masks) {
        mask_maps.push(r.take(l.height as usize * l.width as usize)?.to_vec());
    }
    if !r.at_end() {
        return Err("trailing bytes");
    }
    Ok(FeatureRecord {
        levels,
        masks: mask_maps,
    })
}
