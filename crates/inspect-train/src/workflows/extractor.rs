//! `inspect-train extractor`: EfficientNet-Lite0/1/2 from ImageNet weights as ONNX, float or int8.

use std::path::PathBuf;

use super::{write_file, WorkflowError};
use crate::extractor::efficientnet::{
    build_lite, calibrate, calibration_images, BuildOptions, Precision, TapPoint, Variant,
};
use crate::extractor::Checkpoint;

/// Post-training int8 quantization: activation ranges observed on defect-free images.
#[derive(Clone, Debug)]
pub struct Int8Calibration {
    /// Folder of defect-free images.
    pub folder: PathBuf,
    /// Images to use, spread evenly over the folder.
    pub images: usize,
    /// Quantize the depthwise convolutions too (default: keep them in float).
    pub depthwise: bool,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct ExtractorJob {
    /// PyTorch checkpoint of the EfficientNet-Lite variant.
    pub weights: PathBuf,
    /// Which variant the weights are.
    pub variant: Variant,
    /// Where the taps read their blocks.
    pub tap_point: TapPoint,
    /// Input side in pixels (a multiple of 32).
    pub size: usize,
    /// Also output the ImageNet logits (for verification).
    pub with_classifier: bool,
    /// Feature levels, 1 to 3.
    pub levels: usize,
    /// Int8 instead of float.
    pub int8: Option<Int8Calibration>,
    /// Output ONNX file.
    pub out: PathBuf,
}

/// What was built.
#[derive(Clone, Debug)]
pub struct ExtractorBuilt {
    /// `float32`, or `int8 (int8|float depthwise)`.
    pub precision: String,
    /// Tensors read from the checkpoint.
    pub tensors: usize,
    /// The taps, as `name (channels ch, stride s)`.
    pub taps: Vec<String>,
}

/// Builds the extractor `job` describes and writes it to `job.out`.
pub fn build_extractor(job: &ExtractorJob) -> Result<ExtractorBuilt, WorkflowError> {
    let ckpt = Checkpoint::read(&job.weights)?;
    let ranges = match &job.int8 {
        Some(int8) => {
            let images = calibration_images(&int8.folder, int8.images, job.size)?;
            log::info!(
                "calibrating on {} images of {}",
                images.len(),
                int8.folder.display()
            );
            Some(calibrate(
                &ckpt,
                job.variant,
                job.size,
                job.with_classifier,
                images.iter().map(|i| i.as_slice()),
            )?)
        }
        None => None,
    };
    let precision = match (&ranges, &job.int8) {
        (Some(ranges), Some(int8)) => Precision::Int8 {
            ranges,
            int8_depthwise: int8.depthwise,
        },
        _ => Precision::F32,
    };
    let bytes = build_lite(
        &ckpt,
        &BuildOptions {
            input_size: job.size,
            with_classifier: job.with_classifier,
            variant: job.variant,
            tap_point: job.tap_point,
            levels: job.levels,
            precision,
        },
    )?;
    write_file(&job.out, bytes)?;
    Ok(ExtractorBuilt {
        precision: match precision {
            Precision::F32 => "float32".to_string(),
            Precision::Int8 { int8_depthwise, .. } => format!(
                "int8 ({} depthwise)",
                if int8_depthwise { "int8" } else { "float" }
            ),
        },
        tensors: ckpt.len(),
        taps: job.variant.taps(job.tap_point)[..job.levels.min(3)]
            .iter()
            .map(|t| format!("{} ({} ch, stride {})", t.name, t.channels, t.stride))
            .collect(),
    })
}
