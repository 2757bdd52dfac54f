//! EfficientNet-Lite0, Lite1 and Lite2 as ONNX, from their ImageNet weights.
//!
//! The Lite family (TensorFlow `efficientnet_lite_builder`): ReLU6 instead of swish, no
//! squeeze-excitation, TensorFlow `SAME` padding, batch-norm epsilon 1e-3. Weight names follow the
//! lukemelas PyTorch port (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, `_depthwise_conv`,
//! `_project_conv`, `_bn0/1/2`, `_conv_head`, `_bn1`, `_fc`). Batch norm is folded into the
//! preceding convolution, so the graph holds only `Conv`, `Clip`, `Add` (and the classifier's
//! `GlobalAveragePool`, `Flatten`, `Gemm`).
//!
//! Lite1 and Lite2 are Lite0 wider and deeper (TensorFlow's `efficientnet_lite_builder`: width
//! x1.0 / x1.1, depth x1.1 / x1.2, the stem, the head and the first and last stages unscaled).
//!
//! Taps, [`TapPoint::BlockOutput`] (the default; for Lite0):
//!
//! | tap | block | stride | channels |
//! |---|---|---|---|
//! | `tap8` | `_blocks.4` (end of stage 2, 5x5 kernels) | 8 | 40 |
//! | `tap16` | `_blocks.10` (end of stage 4, 5x5 kernels) | 16 | 112 |
//! | `tap32` | `_blocks.15` (stage 6) | 32 | 320 |
//!
//! [`TapPoint::PreResidual`] taps what CFlow-AD's own code hooks (the `bn3` of the last block of
//! timm's stages -5, -3 and -2): the projection's output before the residual add, of the last
//! block of stages 2, 4 and 5 (for Lite0 40, 112 and 192 channels).

use super::weights::{Checkpoint, WeightsError};
use inspect_core::onnx::{Attr, Dim, ModelBuilder, OnnxWriteError, Padding};

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

/// A member of the EfficientNet-Lite family: the same blocks, other widths and depths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// Width x1.0, depth x1.0 (4.7 M parameters with the classifier).
    #[default]
    Lite0,
    /// Width x1.0, depth x1.1.
    Lite1,
    /// Width x1.1, depth x1.2.
    Lite2,
}

impl Variant {
    /// The family name, e.g. `efficientnet-lite0`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Lite0 => "efficientnet-lite0",
            Variant::Lite1 => "efficientnet-lite1",
            Variant::Lite2 => "efficientnet-lite2",
        }
    }

    /// Width and depth multipliers.
    fn multipliers(self) -> (f64, f64) {
        match self {
            Variant::Lite0 => (1.0, 1.0),
            Variant::Lite1 => (1.0, 1.1),
            Variant::Lite2 => (1.1, 1.2),
        }
    }

    /// The stages, scaled from [`LITE0_STAGES`] as TensorFlow's Lite builder scales them:
    /// channels by the width (rounded to a multiple of 8), repeats by the depth (rounded up),
    /// except the first and the last stage, which Lite keeps as they are.
    pub fn stages(self) -> Vec<Stage> {
        let (width, depth) = self.multipliers();
        let last = LITE0_STAGES.len() - 1;
        LITE0_STAGES
            .iter()
            .enumerate()
            .map(|(i, stage)| Stage {
                channels: round_filters(stage.channels, width),
                repeats: if i == 0 || i == last {
                    stage.repeats
                } else {
                    (stage.repeats as f64 * depth).ceil() as usize
                },
                ..*stage
            })
            .collect()
    }

    /// The three taps (strides 8, 16, 32) at `point`.
    pub fn taps(self, point: TapPoint) -> [Tap; 3] {
        let stages = self.stages();
        // The index of the last block of every stage.
        let mut last_block = Vec::with_capacity(stages.len());
        let mut blocks = 0;
        for stage in &stages {
            blocks += stage.repeats;
            last_block.push(blocks - 1);
        }
        let deepest_stage = match point {
            TapPoint::BlockOutput => 6,
            TapPoint::PreResidual => 5,
        };
        let tap = |name, stage: usize, stride| Tap {
            name,
            block: last_block[stage],
            stride,
            channels: stages[stage].channels,
            before_add: point == TapPoint::PreResidual,
        };
        [
            tap("tap8", 2, 8),
            tap("tap16", 4, 16),
            tap("tap32", deepest_stage, 32),
        ]
    }
}

/// TensorFlow's `round_filters`: `channels x width` to the nearest multiple of 8, never more
/// than 10% below.
fn round_filters(channels: usize, width: f64) -> usize {
    let scaled = channels as f64 * width;
    let rounded = (((scaled + 4.0) as usize) / 8 * 8).max(8);
    if (rounded as f64) < 0.9 * scaled {
        rounded + 8
    } else {
        rounded
    }
}

/// Where the taps read a block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TapPoint {
    /// The block's output, after its residual add; the stride-32 tap from stage 6.
    #[default]
    BlockOutput,
    /// The projection before the residual add, as CFlow-AD's code hooks it; the stride-32 tap
    /// from stage 5.
    PreResidual,
}

/// A tap: a block's output (or its projection before the residual add), under a stable name.
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
    /// Read before the block's residual add.
    pub before_add: bool,
}

/// Lite0's three block-output taps, strides 8, 16, 32.
pub const LITE0_TAPS: [Tap; 3] = [
    Tap {
        name: "tap8",
        block: 4,
        stride: 8,
        channels: 40,
        before_add: false,
    },
    Tap {
        name: "tap16",
        block: 10,
        stride: 16,
        channels: 112,
        before_add: false,
    },
    Tap {
        name: "tap32",
        block: 15,
        stride: 32,
        channels: 320,
        before_add: false,
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
    /// The number of levels is not usable.
    #[error("levels {0}: EfficientNet-Lite has 1 to 3 feature levels (strides 8, 16, 32)")]
    Levels(usize),
    /// An int8 build met an activation that calibration did not see.
    #[error("activation {0:?} has no calibration range")]
    Uncalibrated(String),
    /// Calibration failed.
    #[error("calibration: {0}")]
    Calibration(String),
}

/// Numeric precision of the built network.
#[derive(Clone, Copy, Debug)]
pub enum Precision<'a> {
    /// Float everywhere.
    F32,
    /// Post-training static int8 in the QOperator form (`QLinearConv`), which tract runs with
    /// integer kernels: per-channel symmetric int8 weights, per-tensor asymmetric int8
    /// activations from calibration `ranges`; ReLU6 folded into the output range; residual adds
    /// and the taps in float. `int8_depthwise = false` keeps depthwise convolutions in float
    /// (tract's int8 depthwise goes through im2col, see the benchmark).
    Int8 {
        /// Activation ranges from [`calibrate`].
        ranges: &'a ActivationRanges,
        /// Quantize the depthwise convolutions too.
        int8_depthwise: bool,
    },
}

/// What to build.
#[derive(Clone, Copy, Debug)]
pub struct BuildOptions<'a> {
    /// Square input side in pixels, a multiple of 32.
    pub input_size: usize,
    /// Also output the 1000 ImageNet logits (`logits`), for verification (float only).
    pub with_classifier: bool,
    /// Which member of the family.
    pub variant: Variant,
    /// Where the taps read their blocks.
    pub tap_point: TapPoint,
    /// Feature levels: the first `levels` of the variant's taps (1 to 3). Without the
    /// classifier the network ends at the deepest of them, so fewer levels make a smaller,
    /// faster model.
    pub levels: usize,
    /// Float or int8.
    pub precision: Precision<'a>,
}

/// Observed `(min, max)` of every activation of the network, by name, from calibration images.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActivationRanges {
    ranges: std::collections::BTreeMap<String, (f32, f32)>,
    /// Images seen.
    pub images: usize,
}

impl ActivationRanges {
    /// The range of `name`, if calibrated.
    pub fn get(&self, name: &str) -> Option<(f32, f32)> {
        self.ranges.get(name).copied()
    }

    fn observe(&mut self, name: &str, values: impl Iterator<Item = f32>) {
        let (lo, hi) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let entry = self.ranges.entry(name.to_string()).or_insert((lo, hi));
        *entry = (entry.0.min(lo), entry.1.max(hi));
    }
}

/// Per-tensor asymmetric int8 parameters `(scale, zero point)` covering `[lo, hi]` and 0.
pub fn int8_params(lo: f32, hi: f32) -> (f32, i8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = ((hi - lo) / 255.0).max(1e-8);
    let zero = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i8;
    (scale, zero)
}

/// An activation in the graph: its tensor name, and its int8 parameters if it is quantized.
#[derive(Clone, Debug)]
struct Act {
    name: String,
    quant: Option<Quant>,
}

#[derive(Clone, Debug)]
struct Quant {
    scale: f32,
    scale_name: String,
    zero_name: String,
}

/// A convolution layer, batch norm folded in.
struct Layer {
    /// Name of its output activation (calibration key).
    name: String,
    /// Weight prefix of the convolution in the checkpoint.
    conv: String,
    /// Weight prefix of its batch norm.
    bn: String,
    dims: [usize; 4],
    stride: usize,
    group: usize,
    relu6: bool,
}

impl Layer {
    /// A convolution of block `block`: `kind` is `expand`, `depthwise` or `project`, `bn` the
    /// batch norm the lukemelas port pairs with it (`bn0`, `bn1`, `bn2`).
    fn in_block(
        block: usize,
        kind: &str,
        bn: &str,
        dims: [usize; 4],
        stride: usize,
        relu6: bool,
    ) -> Layer {
        Layer {
            name: format!("b{block}_{kind}"),
            conv: format!("_blocks.{block}._{kind}_conv"),
            bn: format!("_blocks.{block}._{bn}"),
            dims,
            stride,
            // Depthwise kernels have one input channel per group.
            group: if dims[1] == 1 { dims[0] } else { 1 },
            relu6,
        }
    }
}

struct Net<'a> {
    b: ModelBuilder,
    ckpt: &'a Checkpoint,
    precision: Precision<'a>,
    // Every named activation, in graph order (the calibration model outputs them all).
    activations: Vec<String>,
}

impl Net<'_> {
    fn folded(&self, layer: &Layer) -> Result<(Vec<f32>, Vec<f32>), BuildError> {
        let (conv, bn, out) = (&layer.conv, &layer.bn, layer.dims[0]);
        let w = self.ckpt.get(&format!("{conv}.weight"), &layer.dims)?;
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
        Ok((folded, bias))
    }

    fn range(&self, name: &str) -> Result<(f32, f32), BuildError> {
        match self.precision {
            Precision::Int8 { ranges, .. } => ranges
                .get(name)
                .ok_or_else(|| BuildError::Uncalibrated(name.to_string())),
            Precision::F32 => Ok((0.0, 0.0)),
        }
    }

    fn quant(&mut self, lo: f32, hi: f32) -> Quant {
        let (scale, zero) = int8_params(lo, hi);
        Quant {
            scale,
            scale_name: self.b.constant("q_scale", &[], &[scale]),
            zero_name: self.b.constant_i8("q_zero", &[], &[zero]),
        }
    }

    fn named(&mut self, name: &str) -> String {
        self.activations.push(name.to_string());
        self.b.name_last_output(name)
    }

    fn dequantized(&mut self, x: &Act) -> String {
        match &x.quant {
            None => x.name.clone(),
            Some(q) => self.b.node(
                "DequantizeLinear",
                &[&x.name, &q.scale_name, &q.zero_name],
                vec![],
            ),
        }
    }

    fn quantized(&mut self, x: &str, name: &str) -> Result<Act, BuildError> {
        let (lo, hi) = self.range(name)?;
        let q = self.quant(lo, hi);
        let y = self
            .b
            .node("QuantizeLinear", &[x, &q.scale_name, &q.zero_name], vec![]);
        Ok(Act {
            name: y,
            quant: Some(q),
        })
    }

    fn int8(&self) -> bool {
        matches!(self.precision, Precision::Int8 { .. })
    }

    /// One convolution (+ ReLU6), in float or as `QLinearConv`.
    fn conv(&mut self, x: &Act, layer: &Layer) -> Result<Act, BuildError> {
        let (w, bias) = self.folded(layer)?;
        let int8_layer = match self.precision {
            Precision::F32 => false,
            Precision::Int8 { int8_depthwise, .. } => layer.group == 1 || int8_depthwise,
        };
        if !int8_layer {
            let xf = self.dequantized(x);
            let y = self.b.conv(
                &xf,
                &w,
                layer.dims,
                Some(&bias),
                layer.stride,
                Padding::SameUpper,
                layer.group,
            );
            if layer.relu6 {
                self.b.clip(&y, 0.0, 6.0);
            }
            let y = self.named(&layer.name);
            return if self.int8() {
                self.quantized(&y, &layer.name)
            } else {
                Ok(Act {
                    name: y,
                    quant: None,
                })
            };
        }
        // int8: the input must be quantized (the caller keeps it so).
        let xq = match &x.quant {
            Some(_) => x.clone(),
            None => {
                let name = x.name.clone();
                self.quantized(&name, &name)?
            }
        };
        let xquant = xq.quant.clone().expect("quantized above");
        let out = layer.dims[0];
        let per_out = w.len() / out;
        let mut wq = Vec::with_capacity(w.len());
        let mut wscale = Vec::with_capacity(out);
        let mut bq = Vec::with_capacity(out);
        for o in 0..out {
            let row = &w[o * per_out..(o + 1) * per_out];
            // A dead channel (all weights 0, seen in the checkpoint) gets scale 1: a tiny scale
            // would blow its bias up past the int32 accumulator.
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 { max / 127.0 } else { 1.0 };
            wq.extend(
                row.iter()
                    .map(|v| (v / s).round().clamp(-127.0, 127.0) as i8),
            );
            wscale.push(s);
            // Keep the bias well inside int32 so accumulations cannot overflow.
            let limit = (1 << 24) as f32;
            let b = (bias[o] / (xquant.scale * s)).round().clamp(-limit, limit);
            bq.push(b as i32);
        }
        let (lo, hi) = self.range(&layer.name)?;
        // ReLU6 folded into the output range: int8 saturation does the clipping.
        let (lo, hi) = if layer.relu6 {
            (0.0, hi.clamp(1e-3, 6.0))
        } else {
            (lo, hi)
        };
        let yq = self.quant(lo, hi);
        let wname = self.b.constant_i8("qw", &layer.dims, &wq);
        let wscale_name = self.b.constant("qw_scale", &[out], &wscale);
        let wzero = self.b.constant_i8("qw_zero", &[out], &vec![0; out]);
        let bname = self.b.constant_i32("qb", &[out], &bq);
        let k = layer.dims[2] as i64;
        let s = layer.stride as i64;
        let y = self.b.node(
            "QLinearConv",
            &[
                &xq.name,
                &xquant.scale_name,
                &xquant.zero_name,
                &wname,
                &wscale_name,
                &wzero,
                &yq.scale_name,
                &yq.zero_name,
                &bname,
            ],
            vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![s, s])),
                ("auto_pad", Attr::String("SAME_UPPER".into())),
                ("group", Attr::Int(layer.group as i64)),
            ],
        );
        Ok(Act {
            name: y,
            quant: Some(yq),
        })
    }

    /// Residual connection, added in float (ONNX has no standard int8 add).
    fn add(&mut self, a: &Act, b: &Act, name: &str) -> Result<Act, BuildError> {
        let (af, bf) = (self.dequantized(a), self.dequantized(b));
        self.b.node("Add", &[&af, &bf], vec![]);
        let y = self.named(name);
        if self.int8() {
            self.quantized(&y, name)
        } else {
            Ok(Act {
                name: y,
                quant: None,
            })
        }
    }
}

/// Writes the network; with `all_activations_as_outputs`, every named activation is an output too
/// (for calibration).
fn write_lite(
    ckpt: &Checkpoint,
    options: &BuildOptions,
    all_activations_as_outputs: bool,
) -> Result<Vec<u8>, BuildError> {
    let size = options.input_size;
    if !size.is_multiple_of(32) || !(32..=2048).contains(&size) {
        return Err(BuildError::InputSize(size));
    }
    let all_taps = options.variant.taps(options.tap_point);
    if !(1..=all_taps.len()).contains(&options.levels) {
        return Err(BuildError::Levels(options.levels));
    }
    let taps_wanted = &all_taps[..options.levels];
    // Blocks after the deepest tap only feed the classifier.
    let last_block = match options.with_classifier {
        true => usize::MAX,
        false => taps_wanted[taps_wanted.len() - 1].block,
    };
    let mut net = Net {
        b: ModelBuilder::new(options.variant.name()),
        ckpt,
        precision: options.precision,
        activations: Vec::new(),
    };
    let image = net
        .b
        .input("image", &[1.into(), 3.into(), size.into(), size.into()]);
    let mut x = Act {
        name: image.clone(),
        quant: None,
    };
    if net.int8() {
        x = net.quantized(&image, "image")?;
    }
    x = net.conv(
        &x,
        &Layer {
            name: "stem".into(),
            conv: "_conv_stem".into(),
            bn: "_bn0".into(),
            dims: [STEM_CHANNELS, 3, 3, 3],
            stride: 2,
            group: 1,
            relu6: true,
        },
    )?;
    let mut channels = STEM_CHANNELS;
    let mut block = 0;
    let mut taps = Vec::new();
    'stages: for stage in options.variant.stages() {
        for r in 0..stage.repeats {
            if block > last_block {
                break 'stages;
            }
            let stride = if r == 0 { stage.stride } else { 1 };
            let mid = channels * stage.expand;
            let k = stage.kernel;
            let mut layers = Vec::with_capacity(3);
            if stage.expand != 1 {
                layers.push(Layer::in_block(
                    block,
                    "expand",
                    "bn0",
                    [mid, channels, 1, 1],
                    1,
                    true,
                ));
            }
            layers.push(Layer::in_block(
                block,
                "depthwise",
                "bn1",
                [mid, 1, k, k],
                stride,
                true,
            ));
            let project = [stage.channels, mid, 1, 1];
            layers.push(Layer::in_block(block, "project", "bn2", project, 1, false));
            let mut h = x.clone();
            for layer in &layers {
                h = net.conv(&h, layer)?;
            }
            let tap = taps_wanted.iter().find(|t| t.block == block);
            // The taps leave the network in float, under stable names.
            let mut emit = |net: &mut Net, h: &Act, tap: &Tap| {
                let f = net.dequantized(h);
                net.b
                    .node_with_outputs("Identity", &[&f], &[tap.name], vec![]);
                taps.push(*tap);
            };
            if let Some(tap) = tap.filter(|t| t.before_add) {
                emit(&mut net, &h, tap);
            }
            if stride == 1 && channels == stage.channels {
                h = net.add(&h, &x, &format!("b{block}_add"))?;
            }
            if let Some(tap) = tap.filter(|t| !t.before_add) {
                emit(&mut net, &h, tap);
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
        let h = net.conv(
            &x,
            &Layer {
                name: "head".into(),
                conv: "_conv_head".into(),
                bn: "_bn1".into(),
                dims: [HEAD_CHANNELS, channels, 1, 1],
                stride: 1,
                group: 1,
                relu6: true,
            },
        )?;
        let h = net.dequantized(&h);
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
    if all_activations_as_outputs {
        for name in net.activations.clone() {
            // Shapes are left to tract: only calibration reads these.
            net.b.output_unshaped(&name);
        }
    }
    Ok(net.b.to_bytes()?)
}

/// Builds the EfficientNet-Lite network `options` describe from `ckpt` and returns the ONNX
/// bytes.
pub fn build_lite(ckpt: &Checkpoint, options: &BuildOptions) -> Result<Vec<u8>, BuildError> {
    write_lite(ckpt, options, false)
}

/// Runs the float network on `images` (each `3 x size x size`, normalized) and records the range
/// of every activation, for [`Precision::Int8`] (with the classifier's, if it will be built).
pub fn calibrate<'i>(
    ckpt: &Checkpoint,
    variant: Variant,
    input_size: usize,
    with_classifier: bool,
    images: impl IntoIterator<Item = &'i [f32]>,
) -> Result<ActivationRanges, BuildError> {
    use tract_onnx::prelude::*;
    // Every activation up to stage 6 (the deepest tap of either point) or the classifier.
    let options = BuildOptions {
        input_size,
        with_classifier,
        variant,
        tap_point: TapPoint::BlockOutput,
        levels: 3,
        precision: Precision::F32,
    };
    let bytes = write_lite(ckpt, &options, true)?;
    let tract = |e: TractError| BuildError::Calibration(format!("{e:#}"));
    inspect_core::tract_env::avoid_faulty_kernels();
    let model = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(&bytes))
        .map_err(tract)?;
    let names: Vec<String> = model
        .output_outlets()
        .map_err(tract)?
        .iter()
        .map(|o| {
            model
                .outlet_label(*o)
                .map(str::to_string)
                .unwrap_or_default()
        })
        .collect();
    let plan = model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(tract)?;
    let mut ranges = ActivationRanges::default();
    for image in images {
        let x = Tensor::from_shape(&[1, 3, input_size, input_size], image).map_err(tract)?;
        ranges.observe("image", image.iter().copied());
        let outputs = plan.run(tvec!(x.into())).map_err(tract)?;
        for (name, value) in names.iter().zip(outputs.iter()) {
            let view = value.to_plain_array_view::<f32>().map_err(tract)?;
            ranges.observe(name, view.iter().copied());
        }
        ranges.images += 1;
    }
    if ranges.images == 0 {
        return Err(BuildError::Calibration("no calibration images".into()));
    }
    Ok(ranges)
}

/// A whole image as the Lite network's input, planar `3 x H x W`: resized to `size x size` and normalized
/// by [`inspect_core::tiler::model_input`], exactly as the trainer and the daemon prepare images.
pub fn lite_input(image: &image::RgbImage, size: usize) -> Vec<f32> {
    let norm = inspect_core::tiler::Normalization {
        mean: INPUT_MEAN,
        std: INPUT_STD,
    };
    let mut out = vec![0.0; 3 * size * size];
    inspect_core::tiler::model_input(image, size, &norm, &mut out);
    out
}

/// Loads up to `count` images of `folder` (PNG/JPEG, evenly spread over the sorted list), each
/// resized whole to `size x size` and normalized for the Lite family, for [`calibrate`]. Unreadable files
/// are skipped with a warning.
pub fn calibration_images(
    folder: &std::path::Path,
    count: usize,
    size: usize,
) -> Result<Vec<Vec<f32>>, BuildError> {
    let files = inspect_core::image_files::list_image_files(folder)
        .map_err(|e| BuildError::Calibration(format!("{}: {e}", folder.display())))?;
    if files.is_empty() {
        return Err(BuildError::Calibration(format!(
            "{}: no PNG or JPEG file",
            folder.display()
        )));
    }
    let step = files.len().div_ceil(count.max(1)).max(1);
    let mut images = Vec::new();
    for path in files.iter().step_by(step).take(count) {
        match image::open(path) {
            Ok(decoded) => images.push(lite_input(&decoded.to_rgb8(), size)),
            Err(e) => log::warn!("{}: skipped for calibration: {e}", path.display()),
        }
    }
    Ok(images)
}
