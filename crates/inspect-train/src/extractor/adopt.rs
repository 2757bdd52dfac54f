//! Any ONNX network as an extractor: expose named intermediate tensors as the graph's outputs.
//!
//! For networks exported elsewhere (e.g. EfficientNet-B6, as in the paper): the user names the
//! tensors to tap (as `onnx` or Netron show them), and the model's outputs become exactly those,
//! in that order, so tract prunes everything after the last tap.

use std::path::{Path, PathBuf};

use prost::Message;
use tract_onnx::pb;

/// Errors of adopting a model.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not an ONNX model.
    #[error("{path}: not an ONNX model: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Decoder message.
        message: String,
    },
    /// A requested tap is not a tensor of the graph.
    #[error("{path}: no tensor named {name:?} in the graph (some tensors: {examples})")]
    UnknownTap {
        /// The file.
        path: PathBuf,
        /// The missing name.
        name: String,
        /// A few existing names, to help.
        examples: String,
    },
    /// No taps were given.
    #[error("at least one tap name is needed")]
    NoTaps,
}

/// Reads `input`, makes `taps` its only outputs, writes `output`.
pub fn adopt(input: &Path, taps: &[String], output: &Path) -> Result<(), AdoptError> {
    if taps.is_empty() {
        return Err(AdoptError::NoTaps);
    }
    let bytes = std::fs::read(input).map_err(|source| AdoptError::Io {
        path: input.to_path_buf(),
        source,
    })?;
    let mut model = pb::ModelProto::decode(bytes.as_slice()).map_err(|e| AdoptError::Decode {
        path: input.to_path_buf(),
        message: e.to_string(),
    })?;
    let graph = model.graph.as_mut().ok_or_else(|| AdoptError::Decode {
        path: input.to_path_buf(),
        message: "the model has no graph".into(),
    })?;
    let produced: Vec<&String> = graph.node.iter().flat_map(|n| n.output.iter()).collect();
    let mut outputs = Vec::new();
    for tap in taps {
        if !produced.contains(&tap) {
            let examples: Vec<&str> = produced.iter().rev().take(5).map(|s| s.as_str()).collect();
            return Err(AdoptError::UnknownTap {
                path: input.to_path_buf(),
                name: tap.clone(),
                examples: examples.join(", "),
            });
        }
        // Keep a declared type if the file has one; else a float tensor of unknown shape.
        let known = graph
            .value_info
            .iter()
            .chain(graph.output.iter())
            .find(|v| &v.name == tap)
            .cloned();
        outputs.push(known.unwrap_or_else(|| pb::ValueInfoProto {
            name: tap.clone(),
            r#type: Some(pb::TypeProto {
                denotation: String::new(),
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: pb::tensor_proto::DataType::Float as i32,
                    shape: None,
                })),
            }),
            doc_string: String::new(),
        }));
    }
    graph.output = outputs;
    std::fs::write(output, model.encode_to_vec()).map_err(|source| AdoptError::Io {
        path: output.to_path_buf(),
        source,
    })
}
