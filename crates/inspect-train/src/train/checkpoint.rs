//! Checkpoints: everything needed to go on training after a stop — the epoch to start from,
//! every decoder's weights with the ids burn gave their parameters, and each level's Adam state
//! (burn's own record bytes, keyed by those ids). Written atomically after each epoch.
//!
//! Format (little-endian): magic `EICKPT01`; next epoch (u32); level count (u32); per level:
//! block count (u32), per block `C`, `D` (u32), six parameter ids (u64: hidden weight and bias,
//! output weight and bias, global scale, global offset), then seven float vectors (u64 length +
//! f32 values: the [`BlockWeights`] fields in declaration order), then the Adam record (u64
//! length + bytes); the SHA-256 of all of it.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::flow::BlockWeights;
use crate::records::Reader;

/// A length-prefixed float vector.
fn floats(r: &mut Reader) -> Result<Vec<f32>, &'static str> {
    let n = r.u64()? as usize;
    r.f32s(n)
}

const MAGIC: &[u8; 8] = b"EICKPT01";

/// Errors of reading or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The checkpoint.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is damaged or not a checkpoint.
    #[error("{path}: not a usable checkpoint ({reason})")]
    Corrupt {
        /// The checkpoint.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint was made for other decoders.
    #[error("{path}: made for {found}, but this run trains {expected}")]
    Mismatch {
        /// The checkpoint.
        path: PathBuf,
        /// Its decoders.
        found: String,
        /// This run's.
        expected: String,
    },
}

/// One block with the ids of its six trainable parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedBlock {
    /// The weights.
    pub weights: BlockWeights,
    /// Parameter ids, in the order of the format.
    pub ids: [u64; 6],
}

/// One level: its blocks and its optimizer state.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedLevel {
    /// The blocks.
    pub blocks: Vec<SavedBlock>,
    /// burn's Adam record bytes.
    pub adam: Vec<u8>,
}

/// A whole checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The epoch to train next (0-based).
    pub next_epoch: u32,
    /// Per level.
    pub levels: Vec<SavedLevel>,
}

impl Checkpoint {
    /// `C x blocks` per level, for messages.
    pub fn describe(&self) -> String {
        describe(self.levels.iter().map(|l| {
            (
                l.blocks.first().map_or(0, |b| b.weights.channels),
                l.blocks.len(),
            )
        }))
    }

    /// Writes the checkpoint to `path` (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.next_epoch.to_le_bytes());
        out.extend_from_slice(&(self.levels.len() as u32).to_le_bytes());
        for level in &self.levels {
            out.extend_from_slice(&(level.blocks.len() as u32).to_le_bytes());
            for b in &level.blocks {
                let w = &b.weights;
                out.extend_from_slice(&(w.channels as u32).to_le_bytes());
                out.extend_from_slice(&(w.condition as u32).to_le_bytes());
                for id in b.ids {
                    out.extend_from_slice(&id.to_le_bytes());
                }
                for v in [
                    &w.hidden_weight,
                    &w.hidden_bias,
                    &w.output_weight,
                    &w.output_bias,
                    &w.global_scale,
                    &w.global_offset,
                    &w.rotation,
                ] {
                    out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                    v.iter()
                        .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
                }
            }
            out.extend_from_slice(&(level.adam.len() as u64).to_le_bytes());
            out.extend_from_slice(&level.adam);
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| CheckpointError::Io { path: p, source }
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &out).map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    }

    /// Reads a checkpoint, checking its checksum and every length.
    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        parse(&bytes).map_err(|reason| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        })
    }
}

/// `C=40 x 8 blocks, ...` for `(channels, blocks)` pairs.
pub fn describe(levels: impl Iterator<Item = (usize, usize)>) -> String {
    levels
        .map(|(c, b)| format!("C={c} x {b} blocks"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse(bytes: &[u8]) -> Result<Checkpoint, &'static str> {
    if bytes.len() < MAGIC.len() + 32 {
        return Err("too short");
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err("checksum mismatch");
    }
    let mut r = Reader::new(body);
    if r.take(8)? != MAGIC {
        return Err("not a checkpoint");
    }
    let next_epoch = r.u32()?;
    let count = r.u32()? as usize;
    let mut levels = Vec::new();
    for _ in 0..count.min(64) {
        let blocks = r.u32()? as usize;
        let mut saved = Vec::new();
        for _ in 0..blocks.min(1024) {
            let (channels, condition) = (r.u32()? as usize, r.u32()? as usize);
            let mut ids = [0u64; 6];
            for id in &mut ids {
                *id = r.u64()?;
            }
            let weights = BlockWeights {
                channels,
                condition,
                hidden_weight: floats(&mut r)?,
                hidden_bias: floats(&mut r)?,
                output_weight: floats(&mut r)?,
                output_bias: floats(&mut r)?,
                global_scale: floats(&mut r)?,
                global_offset: floats(&mut r)?,
                rotation: floats(&mut r)?,
            };
            let d = weights.subnet_input();
            let sizes_ok = channels >= 2
                && weights.hidden_weight.len() == 2 * d * d
                && weights.hidden_bias.len() == 2 * d
                && weights.output_weight.len() == 2 * (channels / 2) * 2 * d
                && weights.output_bias.len() == 2 * (channels / 2)
                && weights.global_scale.len() == channels
                && weights.global_offset.len() == channels
                && weights.rotation.len() == channels * channels;
            if !sizes_ok {
                return Err("block sizes do not agree with its channels");
            }
            saved.push(SavedBlock { weights, ids });
        }
        let n = r.u64()? as usize;
        let adam = r.take(n)?.to_vec();
        levels.push(SavedLevel {
            blocks: saved,
            adam,
        });
    }
    if !r.at_end() {
        return Err("trailing bytes");
    }
    Ok(Checkpoint { next_epoch, levels })
}
