//! EfficientNet-Lite0 as ONNX, from its ImageNet weights.
//!
//! The Lite variant (TensorFlow `efficientnet_lite_builder`): ReLU6 instead of swish, no
//! squeeze-excitation, TensorFlow `SAME` padding, batch-norm epsilon 1e-3. Weight names follow the
//! lukemelas PyTorch port (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, `_depthwise_conv`,
//! `_project_conv`, `_bn0/1/2`, `_conv_head`, `_bn1`, `_fc`). Batch norm is folded into the
//! preceding convolution, so the graph holds only `Conv`, `Clip`, `Add` (and the classifier's
//! `GlobalAveragePool`, `Flatten`, `Gemm`).
//!
//! Taps (the block outputs CFlow-AD uses for EfficientNet, last block of stages 2, 4 and 6):
//!
//! | tap | block | stride | channels |
//! |---|---|---|---|
//! | `tap8` | `_blocks.4` (end of stage 2, 5x5 kernels) | 8 | 40 |
//! | `tap16` | `_blocks.10` (end of stage 4, 5x5 kernels) | 16 | 112 |
//! | `tap32` | `_blocks.15` (stage 6) | 32 | 320 |

use super::weights::{Checkpoint, WeightsError};
use crate::onnx::{Attr, Dim, ModelBuilder, OnnxWriteError, Padding};

/// Batch-norm epsilon of the TensorFlow EfficientNet family.
pub const BN_EPSILON: f32 = 1e-3;

/// Input normalization of EfficientNet-Lite (TensorFlow: `(x - 127) / 128` on 0..255), expressed
/// on the 0..1 scale as the bundle manifest wants it.
pub const INPUT_MEAN: [f32; 3] = [127.0 / 255.0; 3];
/// See [`INPUT_MEAN`].
pub const INPUT_STD: [f32; 3] = [128.0 / 255.0; 3];

/// One stage of MBConv blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage {
    /// Blocks in the stage.
    pub repeats: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Stride of the first block.
    pub stride: usize,
    /// Expansion ratio of the inverted bottleneck.
    pub expand: usize,
    /// Output channels.
    pub channels: usize,
}

/// EfficientNet-B0/Lite0 stages (width and depth multipliers 1.0).
pub const LITE0_STAGES: [Stage; 7] = [
    Stage {
        repeats: 1,
        kernel: 3,
        stride: 1,
        expand: 1,
        channels: 16,
    },
    Stage {
        repeats: 2,
        kernel: 3,
        stride: 2,
        expand: 6,
        channels: 24,
    },
    Stage {
        repeats: 2,
        kernel: 5,
        stride: 2,
        expand: 6,
        channels: 40,
    },
    Stage {
        repeats: 3,
        kernel: 3,
        stride: 2,
        expand: 6,
        channels: 80,
    },
    Stage {
        repeats: 3,
        kernel: 5,
        stride: 1,
        expand: 6,
        channels: 112,
    },
    Stage {
        repeats: 4,
        kernel: 5,
        stride: 2,
        expand: 6,
        channels: 192,
    },
    Stage {
        repeats: 1,
        kernel: 3,
        stride: 1,
        expand: 6,
        channels: 320,
    },
];

/// Stem output channels.
pub const STEM_CHANNELS: usize = 32;
/// Head (last 1x1 conv) channels.
pub const HEAD_CHANNELS: usize = 1280;
/// ImageNet classes of the classifier.
pub const CLASSES: usize = 1000;

/// A tap: the output of a block, exposed under a stable name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tap {
    /// Output name.
    pub name: &'static str,
    /// Block index (`_blocks.N`).
    pub block: usize,
    /// Stride relative to the input.
    pub stride: usize,
    /// Channels.
    pub channels: usize,
}

/// The three taps, strides 8, 16, 32.
pub const LITE0_TAPS: [Tap; 3] = [
    Tap {
        name: "tap8",
        block: 4,
        stride: 8,
        channels: 40,
    },
    Tap {
        name: "tap16",
        block: 10,
        stride: 16,
        channels: 112,
    },
    Tap {
        name: "tap32",
        block: 15,
        stride: 32,
        channels: 320,
    },
];

/// Name of the classifier output.
pub const LOGITS: &str = "logits";

/// Errors of building the network.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A weight is missing or misshapen.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The graph could not be written.
    #[error(transparent)]
    Onnx(#[from] OnnxWriteError),
    /// The input size is not usable.
    #[error("input size {0} must be a multiple of 32 between 32 and 2048")]
    InputSize(usize),
}

/// What to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    /// Square input side in pixels, a multiple of 32.
    pub input_size: usize,
    /// Also output the 1000 ImageNet logits (`logits`), for verification.
    pub with_classifier: bool,
}

struct Net<'a> {
    b: ModelBuilder,
    ckpt: &'a Checkpoint,
}

impl Net<'_> {
    /// `conv(x) -> batch norm` folded into one `Conv`, optionally followed by ReLU6.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        x: &str,
        conv: &str,
        bn: &str,
        dims: [usize; 4],
        stride: usize,
        group: usize,
        relu6: bool,
    ) -> Result<String, BuildError> {
        let out = dims[0];
        let w = self.ckpt.get(&format!("{conv}.weight"), &dims)?;
        let gamma = self.ckpt.get(&format!("{bn}.weight"), &[out])?;
        let beta = self.ckpt.get(&format!("{bn}.bias"), &[out])?;
        let mean = self.ckpt.get(&format!("{bn}.running_mean"), &[out])?;
        let var = self.ckpt.get(&format!("{bn}.running_var"), &[out])?;
        let per_out = w.len() / out;
        let mut folded = Vec::with_capacity(w.len());
        let mut bias = Vec::with_capacity(out);
        for o in 0..out {
            let scale = gamma[o] / (var[o] + BN_EPSILON).sqrt();
            folded.extend(w[o * per_out..(o + 1) * per_out].iter().map(|v| v * scale));
            bias.push(beta[o] - mean[o] * scale);
        }
        let y = self.b.conv(
            x,
            &folded,
            dims,
            Some(&bias),
            stride,
            Padding::SameUpper,
            group,
        );
        Ok(if relu6 { self.b.clip(&y, 0.0, 6.0) } else { y })
    }
}

/// Builds EfficientNet-Lite0 from `ckpt` and returns the ONNX bytes.
pub fn build_lite0(ckpt: &Checkpoint, options: &BuildOptions) -> Result<Vec<u8>, BuildError> {
    let size = options.input_size;
    if !size.is_multiple_of(32) || !(32..=2048).contains(&size) {
        return Err(BuildError::InputSize(size));
    }
    let mut net = Net {
        b: ModelBuilder::new("efficientnet-lite0"),
        ckpt,
    };
    let image = net
        .b
        .input("image", &[1.into(), 3.into(), size.into(), size.into()]);
    let mut x = net.conv_bn(
        &image,
        "_conv_stem",
        "_bn0",
        [STEM_CHANNELS, 3, 3, 3],
        2,
        1,
        true,
    )?;
    let mut channels = STEM_CHANNELS;
    let mut block = 0;
    let mut taps = Vec::new();
    for stage in LITE0_STAGES {
        for r in 0..stage.repeats {
            let stride = if r == 0 { stage.stride } else { 1 };
            let p = format!("_blocks.{block}");
            let mid = channels * stage.expand;
            let mut h = x.clone();
            if stage.expand != 1 {
                h = net.conv_bn(
                    &h,
                    &format!("{p}._expand_conv"),
                    &format!("{p}._bn0"),
                    [mid, channels, 1, 1],
                    1,
                    1,
                    true,
                )?;
            }
            let k = stage.kernel;
            h = net.conv_bn(
                &h,
                &format!("{p}._depthwise_conv"),
                &format!("{p}._bn1"),
                [mid, 1, k, k],
                stride,
                mid,
                true,
            )?;
            h = net.conv_bn(
                &h,
                &format!("{p}._project_conv"),
                &format!("{p}._bn2"),
                [stage.channels, mid, 1, 1],
                1,
                1,
                false,
            )?;
            if stride == 1 && channels == stage.channels {
                h = net.b.node("Add", &[&h, &x], vec![]);
            }
            if let Some(tap) = LITE0_TAPS.iter().find(|t| t.block == block) {
                // Identity gives the tap a stable name without renaming internal values.
                net.b
                    .node_with_outputs("Identity", &[&h], &[tap.name], vec![]);
                taps.push(*tap);
            }
            x = h;
            channels = stage.channels;
            block += 1;
        }
    }
    for tap in &taps {
        let side = size / tap.stride;
        net.b.output(
            tap.name,
            &[1.into(), tap.channels.into(), side.into(), side.into()],
        );
    }
    if options.with_classifier {
        let h = net.conv_bn(
            &x,
            "_conv_head",
            "_bn1",
            [HEAD_CHANNELS, channels, 1, 1],
            1,
            1,
            true,
        )?;
        let pooled = net.b.node("GlobalAveragePool", &[&h], vec![]);
        let flat = net
            .b
            .node("Flatten", &[&pooled], vec![("axis", Attr::Int(1))]);
        let w = ckpt.get("_fc.weight", &[CLASSES, HEAD_CHANNELS])?;
        let bias = ckpt.get("_fc.bias", &[CLASSES])?;
        let w = net.b.constant("fc_w", &[CLASSES, HEAD_CHANNELS], w);
        let bias = net.b.constant("fc_b", &[CLASSES], bias);
        net.b.node_with_outputs(
            "Gemm",
            &[&flat, &w, &bias],
            &[LOGITS],
            vec![("transB", Attr::Int(1))],
        );
        net.b.output(LOGITS, &[Dim::Fixed(1), Dim::Fixed(CLASSES)]);
    }
    Ok(net.b.to_bytes()?)
}
