//! A small, checked builder over the ONNX protobuf types.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use prost::Message;
use tract_onnx::pb;

/// ONNX IR version written into every model.
pub const IR_VERSION: i64 = 8;
/// Default-domain opset written into every model.
pub const OPSET_VERSION: i64 = 17;

/// Errors of the ONNX writer.
#[derive(Debug, thiserror::Error)]
pub enum OnnxWriteError {
    /// Two values of the graph were given the same name.
    #[error("ONNX graph: the name {0:?} is already used by another value")]
    DuplicateName(String),
    /// A node or output refers to a value that does not exist.
    #[error("ONNX graph: {user} refers to {name:?}, which no input, constant or node defines")]
    UnknownValue {
        /// What referred to it (node or output).
        user: String,
        /// The missing value.
        name: String,
    },
    /// A constant's data does not fill its shape.
    #[error("ONNX constant {name:?}: shape {dims:?} holds {expected} values but {got} were given")]
    ConstantSize {
        /// Constant name.
        name: String,
        /// Its shape.
        dims: Vec<usize>,
        /// Element count of the shape.
        expected: usize,
        /// Element count given.
        got: usize,
    },
    /// Writing the file failed.
    #[error("cannot write ONNX model {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One dimension of a graph input or output.
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named symbolic size (e.g. the batch `N`).
    Symbol(String),
}

impl From<usize> for Dim {
    fn from(v: usize) -> Self {
        Dim::Fixed(v)
    }
}

impl From<&str> for Dim {
    fn from(v: &str) -> Self {
        Dim::Symbol(v.to_string())
    }
}

/// Spatial padding of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// The same number of pixels on every side.
    Symmetric(usize),
    /// TensorFlow's `SAME`: output size `ceil(input / stride)`, the odd pixel padded at the end
    /// (ONNX `auto_pad = SAME_UPPER`). Needed for weights trained in TensorFlow.
    SameUpper,
}

/// A node attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// `INT`
    Int(i64),
    /// `INTS`
    Ints(Vec<i64>),
    /// `FLOAT`
    Float(f32),
    /// `FLOATS`
    Floats(Vec<f32>),
    /// `STRING`
    String(String),
}

fn attribute(name: &str, value: Attr) -> pb::AttributeProto {
    use pb::attribute_proto::AttributeType as T;
    let mut a = pb::AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => {
            a.r#type = T::Int as i32;
            a.i = i;
        }
        Attr::Ints(v) => {
            a.r#type = T::Ints as i32;
            a.ints = v;
        }
        Attr::Float(f) => {
            a.r#type = T::Float as i32;
            a.f = f;
        }
        Attr::Floats(v) => {
            a.r#type = T::Floats as i32;
            a.floats = v;
        }
        Attr::String(s) => {
            a.r#type = T::String as i32;
            a.s = s.into_bytes();
        }
    }
    a
}

fn float_value_info(name: &str, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                Dim::Fixed(v) => Value::DimValue(*v as i64),
                Dim::Symbol(s) => Value::DimParam(s.clone()),
            }),
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

/// Builds one ONNX model: inputs, constants (initializers), nodes and outputs, checked as they
/// are added (unique names, known inputs, constant sizes).
#[derive(Debug)]
pub struct ModelBuilder {
    graph: pb::GraphProto,
    defined: HashSet<String>,
    next_id: usize,
    error: Option<OnnxWriteError>,
}

impl ModelBuilder {
    /// Starts an empty graph called `name`.
    pub fn new(name: &str) -> Self {
        ModelBuilder {
            graph: pb::GraphProto {
                name: name.to_string(),
                ..Default::default()
            },
            defined: HashSet::new(),
            next_id: 0,
            error: None,
        }
    }

    // Errors are kept until `finish` so that graph code reads as a straight list of ops.
    fn fail(&mut self, e: OnnxWriteError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn define(&mut self, name: &str) {
        if !self.defined.insert(name.to_string()) {
            self.fail(OnnxWriteError::DuplicateName(name.to_string()));
        }
    }

    fn fresh(&mut self, hint: &str) -> String {
        loop {
            self.next_id += 1;
            let name = format!("{hint}_{}", self.next_id);
            if !self.defined.contains(&name) {
                return name;
            }
        }
    }

    /// Declares a float graph input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        self.define(name);
        self.graph.input.push(float_value_info(name, dims));
        name.to_string()
    }

    /// Declares an existing value as a float graph output.
    pub fn output(&mut self, name: &str, dims: &[Dim]) {
        if !self.defined.contains(name) {
            self.fail(OnnxWriteError::UnknownValue {
                user: "graph output".into(),
                name: name.to_string(),
            });
        }
        self.graph.output.push(float_value_info(name, dims));
    }

    fn raw_constant(
        &mut self,
        hint: &str,
        dims: &[usize],
        data_type: pb::tensor_proto::DataType,
        count: usize,
        raw_data: Vec<u8>,
    ) -> String {
        let name = self.fresh(hint);
        let expected: usize = dims.iter().product();
        if expected != count {
            self.fail(OnnxWriteError::ConstantSize {
                name: name.clone(),
                dims: dims.to_vec(),
                expected,
                got: count,
            });
        }
        self.define(&name);
        self.graph.initializer.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type as i32,
            raw_data,
            ..Default::default()
        });
        name
    }

    /// Declares an existing value as a float graph output of unspecified shape.
    pub fn output_unshaped(&mut self, name: &str) {
        if !self.defined.contains(name) {
            self.fail(OnnxWriteError::UnknownValue {
                user: "graph output".into(),
                name: name.to_string(),
            });
        }
        let mut info = float_value_info(name, &[]);
        if let Some(pb::type_proto::Value::TensorType(t)) =
            info.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape = None;
        }
        self.graph.output.push(info);
    }

    /// Adds a float constant (initializer) and returns its name.
    pub fn constant(&mut self, hint: &str, dims: &[usize], data: &[f32]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_constant(
            hint,
            dims,
            pb::tensor_proto::DataType::Float,
            data.len(),
            raw,
        )
    }

    /// Adds an int64 constant (shapes, axes) and returns its name.
    pub fn constant_i64(&mut self, hint: &str, dims: &[usize], data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_constant(
            hint,
            dims,
            pb::tensor_proto::DataType::Int64,
            data.len(),
            raw,
        )
    }

    /// Adds an int32 constant (quantized biases) and returns its name.
    pub fn constant_i32(&mut self, hint: &str, dims: &[usize], data: &[i32]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_constant(
            hint,
            dims,
            pb::tensor_proto::DataType::Int32,
            data.len(),
            raw,
        )
    }

    /// Adds an int8 constant (quantized weights, zero points) and returns its name.
    pub fn constant_i8(&mut self, hint: &str, dims: &[usize], data: &[i8]) -> String {
        let raw = data.iter().map(|&v| v as u8).collect();
        self.raw_constant(
            hint,
            dims,
            pb::tensor_proto::DataType::Int8,
            data.len(),
            raw,
        )
    }

    /// Adds a node with explicitly named outputs.
    pub fn node_with_outputs(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) {
        for i in inputs {
            // ONNX marks an omitted optional input by the empty name.
            if !i.is_empty() && !self.defined.contains(*i) {
                self.fail(OnnxWriteError::UnknownValue {
                    user: format!("{op_type} node"),
                    name: i.to_string(),
                });
            }
        }
        for o in outputs {
            self.define(o);
        }
        let name = self.fresh(op_type);
        self.graph.node.push(pb::NodeProto {
            name,
            op_type: op_type.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs.into_iter().map(|(n, v)| attribute(n, v)).collect(),
            ..Default::default()
        });
    }

    /// Adds a single-output node and returns the name of its output.
    pub fn node(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.fresh(&op_type.to_lowercase());
        self.node_with_outputs(op_type, inputs, &[&out], attrs);
        out
    }

    /// Renames the output of the last node (to give a tap or head output a stable name).
    pub fn name_last_output(&mut self, name: &str) -> String {
        let Some(old) = self
            .graph
            .node
            .last()
            .and_then(|n| n.output.first())
            .cloned()
        else {
            self.fail(OnnxWriteError::UnknownValue {
                user: "name_last_output".into(),
                name: name.to_string(),
            });
            return name.to_string();
        };
        self.defined.remove(&old);
        self.define(name);
        if let Some(n) = self.graph.node.last_mut() {
            n.output[0] = name.to_string();
        }
        name.to_string()
    }

    /// `Conv` with weights `[out, in/group, kh, kw]`, optional bias, square stride.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: &str,
        weights: &[f32],
        weight_dims: [usize; 4],
        bias: Option<&[f32]>,
        stride: usize,
        padding: Padding,
        group: usize,
    ) -> String {
        let w = self.constant("conv_w", &weight_dims, weights);
        let b = bias.map(|b| self.constant("conv_b", &[weight_dims[0]], b));
        let mut inputs = vec![x, w.as_str()];
        if let Some(b) = &b {
            inputs.push(b.as_str());
        }
        let s = stride as i64;
        let pad = match padding {
            Padding::Symmetric(p) => ("pads", Attr::Ints(vec![p as i64; 4])),
            Padding::SameUpper => ("auto_pad", Attr::String("SAME_UPPER".into())),
        };
        self.node(
            "Conv",
            &inputs,
            vec![
                (
                    "kernel_shape",
                    Attr::Ints(vec![weight_dims[2] as i64, weight_dims[3] as i64]),
                ),
                ("strides", Attr::Ints(vec![s, s])),
                pad,
                ("group", Attr::Int(group as i64)),
            ],
        )
    }

    /// `AveragePool` with a square kernel equal to its stride (non-overlapping cells).
    pub fn average_pool(&mut self, x: &str, cell: usize) -> String {
        let c = cell as i64;
        self.node(
            "AveragePool",
            &[x],
            vec![
                ("kernel_shape", Attr::Ints(vec![c, c])),
                ("strides", Attr::Ints(vec![c, c])),
            ],
        )
    }

    /// `Clip(x, lo, hi)` (opset 11+ form, bounds as inputs).
    pub fn clip(&mut self, x: &str, lo: f32, hi: f32) -> String {
        let lo = self.constant("clip_lo", &[], &[lo]);
        let hi = self.constant("clip_hi", &[], &[hi]);
        self.node("Clip", &[x, &lo, &hi], vec![])
    }

    /// `x + c`, `x * c`, ... with a float constant broadcast from `dims`.
    pub fn binary_const(&mut self, op_type: &str, x: &str, dims: &[usize], c: &[f32]) -> String {
        let c = self.constant("k", dims, c);
        self.node(op_type, &[x, &c], vec![])
    }

    /// `Squeeze` of the given axes (opset 13+ form, axes as input).
    pub fn squeeze(&mut self, x: &str, axes: &[i64]) -> String {
        let axes = self.constant_i64("axes", &[axes.len()], axes);
        self.node("Squeeze", &[x, &axes], vec![])
    }

    /// `Reshape` to a fixed shape (`-1` and `0` as in ONNX).
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let shape = self.constant_i64("shape", &[shape.len()], shape);
        self.node("Reshape", &[x, &shape], vec![])
    }

    /// Returns the finished model, or the first error met while building it.
    pub fn finish(self) -> Result<pb::ModelProto, OnnxWriteError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        Ok(pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET_VERSION,
            }],
            // The project, not this crate: a model's bytes (and the bundle hashes over them) stay
            // the same whichever crate writes it.
            producer_name: "edge-inspector".to_string(),
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            graph: Some(self.graph),
            ..Default::default()
        })
    }

    /// Serialises the model to ONNX bytes.
    pub fn to_bytes(self) -> Result<Vec<u8>, OnnxWriteError> {
        Ok(self.finish()?.encode_to_vec())
    }

    /// Writes the model to `path`.
    pub fn write(self, path: &Path) -> Result<(), OnnxWriteError> {
        let bytes = self.to_bytes()?;
        std::fs::write(path, bytes).map_err(|source| OnnxWriteError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
