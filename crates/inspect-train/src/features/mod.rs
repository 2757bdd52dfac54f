//! Features for training (feature `train`): the extractor run by tract on whole images
//! ([`FeatureExtractor`]), an on-disk cache of its taps ([`cache`]) and the parallel pass that
//! fills it ([`build`]), so that training epochs never wait for the extractor.

pub mod build;
pub mod cache;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use inspect_core::engine::{optimized_plan, EngineError};
use inspect_core::tiler::{sample_tile, Normalization, PixelBox};

/// One feature map: `channels x height x width`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Level {
    /// The extractor output it came from.
    pub name: String,
    /// Channels.
    pub channels: u32,
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
    /// Values.
    pub data: Vec<f32>,
}

/// Errors of running the extractor.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// tract refused the model or failed to run it.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The model's input is not `1 x 3 x S x S` with a fixed `S`.
    #[error("the extractor's input must be 1 x 3 x S x S with a fixed S, found {0}")]
    InputShape(String),
    /// An output is not `1 x C x H x W`.
    #[error("extractor output {name} must be 1 x C x H x W, found {shape:?}")]
    OutputShape {
        /// The output.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// The image does not have the extractor's input size.
    #[error("a {width}x{height} image given to a {size}x{size} extractor")]
    ImageSize {
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
        /// The input side.
        size: u32,
    },
}

fn tract_error(e: TractError) -> ExtractError {
    ExtractError::Engine(EngineError::Tract {
        model: "extractor",
        message: format!("{e:#}"),
    })
}

/// The feature extractor, optimized once and shared by worker threads.
pub struct FeatureExtractor {
    plan: Arc<TypedSimplePlan>,
    names: Vec<String>,
    size: u32,
    normalization: Normalization,
    hash: [u8; 32],
}

impl FeatureExtractor {
    /// Loads an extractor from ONNX bytes; every output is a tap. `normalization` is what the
    /// bundle's manifest will declare.
    pub fn new(
        onnx: &[u8],
        normalization: Normalization,
    ) -> Result<FeatureExtractor, ExtractError> {
        let plan = optimized_plan(onnx)?;
        let model = plan.model();
        let input = model
            .input_fact(0)
            .map_err(|e| ExtractError::InputShape(e.to_string()))?;
        let dims: Option<Vec<usize>> = input.shape.as_concrete().map(|d| d.to_vec());
        let size = match dims.as_deref() {
            Some([1, 3, h, w]) if h == w => *h as u32,
            _ => return Err(ExtractError::InputShape(format!("{:?}", input.shape))),
        };
        let names = model
            .output_outlets()
            .map_err(|e| ExtractError::InputShape(e.to_string()))?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        // The cache key: the model bytes and the input normalization (the same model fed
        // differently normalized pixels gives other features).
        let mut h = Sha256::new();
        h.update(onnx);
        for v in normalization.mean.iter().chain(&normalization.std) {
            h.update(v.to_le_bytes());
        }
        Ok(FeatureExtractor {
            plan,
            names,
            size,
            normalization,
            hash: h.finalize().into(),
        })
    }

    /// The side of the square input.
    pub fn input_size(&self) -> u32 {
        self.size
    }

    /// The tap names, in output order.
    pub fn tap_names(&self) -> &[String] {
        &self.names
    }

    /// SHA-256 of the model bytes and the normalization.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// Runs the extractor on an image of exactly the input size.
    pub fn extract(&self, image: &image::RgbImage) -> Result<Vec<Level>, ExtractError> {
        let size = self.size as usize;
        if image.dimensions() != (self.size, self.size) {
            return Err(ExtractError::ImageSize {
                width: image.width(),
                height: image.height(),
                size: self.size,
            });
        }
        let mut input = vec![0.0; 3 * size * size];
        let whole = PixelBox {
            x: 0,
            y: 0,
            width: self.size,
            height: self.size,
        };
        sample_tile(image, &whole, size, size, &self.normalization, &mut input);
        let tensor = Tensor::from_shape(&[1, 3, size, size], &input).map_err(tract_error)?;
        let outputs = self.plan.run(tvec!(tensor.into())).map_err(tract_error)?;
        let mut levels = Vec::with_capacity(outputs.len());
        for (name, t) in self.names.iter().zip(outputs.iter()) {
            let view = t.to_plain_array_view::<f32>().map_err(tract_error)?;
            let shape = view.shape().to_vec();
            let [1, c, h, w] = shape[..] else {
                return Err(ExtractError::OutputShape {
                    name: name.clone(),
                    shape,
                });
            };
            levels.push(Level {
                name: name.clone(),
                channels: c as u32,
                height: h as u32,
                width: w as u32,
                data: view.iter().copied().collect(),
            });
        }
        Ok(levels)
    }
}
