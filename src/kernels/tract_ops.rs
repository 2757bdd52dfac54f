//! The project's kernels as tract ops, and the model patch that puts them in place of tract's.
//!
//! [`use_project_kernels`] runs on a typed model before `into_optimized`: every float depthwise
//! `Conv` (one group per channel, no dilation, kernel up to 7x7) becomes a [`DepthwiseConv`]
//! running [`super::depthwise::plane`] on channel planes (NCHW / CHW) or
//! [`super::channels_last::image`] on channels-last tensors (NHWC / HWC, as tract lays the
//! extractor out on aarch64), and a `Clip`/ReLU6 right after it is fused into it. tract's
//! optimizer leaves these ops alone and optimizes everything else as usual.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::channels_last;
use super::depthwise::{plane, Geometry, Isa, Padded, MAX_KERNEL};

/// How the op's input and output lie in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Layout {
    /// Channel planes (NCHW / CHW), taps `C x kh x kw` (OIHW): [`plane`] per channel.
    Planes,
    /// Channels-last (NHWC / HWC), taps OIHW or, with `taps_hwio`, `kh x kw x 1 x C`:
    /// [`channels_last::image`] per image.
    ChannelsLast { taps_hwio: bool },
}

/// A float depthwise convolution, bias and clamp fused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepthwiseConv {
    geometry: Geometry,
    batch: usize,
    channels: usize,
    layout: Layout,
    /// Whether the tensors carry a batch axis (tract removes a batch of 1 while decluttering).
    with_batch_axis: bool,
    /// Clamp bounds as bits (ops must be `Eq`); infinite when nothing is fused.
    clamp: (u32, u32),
    isa: Isa,
}

impl DepthwiseConv {
    /// The op for `conv` applied to an input of `input_shape`, or `None` when the kernels do
    /// not cover it (tract's own op stays then).
    fn for_conv(conv: &Conv, input: &TypedFact, isa: Isa) -> Option<DepthwiseConv> {
        let spec = &conv.pool_spec;
        let shape = input.shape.as_concrete()?;
        let depthwise = conv.group == spec.input_channels && conv.group == spec.output_channels;
        let undilated = spec
            .dilations
            .as_ref()
            .is_none_or(|d| d.iter().all(|&d| d == 1));
        let channels_last = matches!(spec.data_format, DataFormat::NHWC | DataFormat::HWC);
        let layout = match (channels_last, conv.kernel_fmt) {
            (false, KernelFormat::OIHW) => Layout::Planes,
            (true, KernelFormat::OIHW) => Layout::ChannelsLast { taps_hwio: false },
            (true, KernelFormat::HWIO) => Layout::ChannelsLast { taps_hwio: true },
            _ => return None,
        };
        if !depthwise
            || !undilated
            || conv.q_params.is_some()
            || input.datum_type != f32::datum_type()
            || spec.kernel_shape.len() != 2
            || spec.kernel_shape.iter().any(|&k| k > MAX_KERNEL)
        {
            return None;
        }
        // tract drops a batch axis of 1 while decluttering: CHW is then NCHW with N = 1.
        let (batch, shape) = match (spec.data_format, shape.len()) {
            (DataFormat::NCHW | DataFormat::NHWC, 4) => (shape[0], &shape[1..]),
            (DataFormat::CHW | DataFormat::HWC, 3) => (1, shape),
            _ => return None,
        };
        let (channels, hw) = if channels_last {
            (shape[2], &shape[..2])
        } else {
            (shape[0], &shape[1..])
        };
        let strides = spec.strides.clone().unwrap_or_else(|| tvec!(1, 1));
        let dims = spec
            .padding
            .compute(hw, &spec.kernel_shape, &[1, 1], &strides);
        let geometry = Geometry {
            kernel: (spec.kernel_shape[0], spec.kernel_shape[1]),
            stride: (strides[0], strides[1]),
            pad: (dims[0].pad_before, dims[1].pad_before),
            input: (hw[0], hw[1]),
            output: (dims[0].convoluted, dims[1].convoluted),
        };
        Some(DepthwiseConv {
            geometry,
            batch,
            channels,
            layout,
            with_batch_axis: matches!(spec.data_format, DataFormat::NCHW | DataFormat::NHWC),
            clamp: (f32::NEG_INFINITY.to_bits(), f32::INFINITY.to_bits()),
            isa,
        })
    }

    fn output_shape(&self) -> TVec<usize> {
        let (h, w) = self.geometry.output;
        let c = self.channels;
        let mut shape = match self.layout {
            Layout::Planes => tvec!(c, h, w),
            Layout::ChannelsLast { .. } => tvec!(h, w, c),
        };
        if self.with_batch_axis {
            shape.insert(0, self.batch);
        }
        shape
    }

    fn clamp(&self) -> (f32, f32) {
        (f32::from_bits(self.clamp.0), f32::from_bits(self.clamp.1))
    }
}

impl Op for DepthwiseConv {
    fn name(&self) -> StaticName {
        "ProjectDepthwiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geometry;
        Ok(vec![format!(
            "{}x{} stride {:?} pad {:?} {:?} -> {:?} clamp {:?} {:?} {:?}",
            g.kernel.0,
            g.kernel.1,
            g.stride,
            g.pad,
            g.input,
            g.output,
            self.clamp(),
            self.isa,
            self.layout
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (input, kernel, bias) = args_3!(inputs);
        let g = &self.geometry;
        let (plane_in, plane_out) = (g.input.0 * g.input.1, g.output.0 * g.output.1);
        let taps_per_channel = g.kernel.0 * g.kernel.1;
        let input = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let kernel = kernel.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?;
        ensure!(input.len() == self.batch * self.channels * plane_in);
        ensure!(kernel.len() == self.channels * taps_per_channel);
        ensure!(bias.len() == 1 || bias.len() == self.channels);
        let mut output = Tensor::zero::<f32>(&self.output_shape())?;
        let mut view = output.try_as_plain_ram_mut()?;
        let out = view.as_slice_mut::<f32>()?;
        if let Layout::ChannelsLast { taps_hwio } = self.layout {
            let c = self.channels;
            // Taps `kh x kw x C` and one bias per channel, as the kernel reads them.
            let taps: Vec<f32> = if taps_hwio {
                kernel.to_vec()
            } else {
                (0..taps_per_channel * c)
                    .map(|i| kernel[(i % c) * taps_per_channel + i / c])
                    .collect()
            };
            let bias: Vec<f32> = (0..c)
                .map(|ch| bias[if bias.len() == 1 { 0 } else { ch }])
                .collect();
            for (image_in, image_out) in input
                .chunks_exact(plane_in * c)
                .zip(out.chunks_exact_mut(plane_out * c))
            {
                channels_last::image(
                    self.isa,
                    g,
                    c,
                    image_in,
                    &taps,
                    &bias,
                    self.clamp(),
                    image_out,
                );
            }
            return Ok(tvec!(output.into_tvalue()));
        }
        let mut scratch = Padded::default();
        for (i, out_plane) in out.chunks_exact_mut(plane_out).enumerate() {
            let c = i % self.channels;
            plane(
                self.isa,
                g,
                &input[i * plane_in..(i + 1) * plane_in],
                &kernel[c * taps_per_channel..(c + 1) * taps_per_channel],
                bias[if bias.len() == 1 { 0 } else { c }],
                self.clamp(),
                out_plane,
                &mut scratch,
            );
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for DepthwiseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 3,
            "DepthwiseConv takes input, kernel and bias"
        );
        Ok(tvec!(f32::fact(self.output_shape())))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = &self.geometry;
        let fma = self.batch * self.channels * g.output.0 * g.output.1 * g.kernel.0 * g.kernel.1;
        Ok(tvec!((Cost::FMA(f32::datum_type()), fma.into())))
    }

    as_op!();
}

/// The scalar value of a constant input of `node`, if that input is a one-element constant.
fn scalar_const(model: &TypedModel, outlet: OutletId) -> Option<f32> {
    let fact = model.outlet_fact(outlet).ok()?;
    let konst = fact.konst.as_ref()?;
    if konst.len() != 1 {
        return None;
    }
    konst.cast_to_scalar::<f32>().ok()
}

/// If the only consumer of `node` is `max(x, c)` or `min(x, c)` with a constant, that bound
/// (`is_max`, c) and the consumer.
fn clamp_after(model: &TypedModel, node: &TypedNode) -> Option<(bool, f32, usize)> {
    let succ = model.single_succ(node.id).ok()??;
    let bin = succ.op_as::<tract_onnx::tract_core::ops::binary::TypedBinOp>()?;
    let is_max = bin.0.is::<tract_onnx::tract_core::ops::math::Max>();
    let is_min = bin.0.is::<tract_onnx::tract_core::ops::math::Min>();
    if !is_max && !is_min || succ.inputs.len() != 2 {
        return None;
    }
    let other = succ.inputs.iter().find(|i| i.node != node.id)?;
    Some((is_max, scalar_const(model, *other)?, succ.id))
}

/// Replaces tract's depthwise convolutions by the project's (with a following ReLU / ReLU6 /
/// clip fused) in a decluttered model. Returns how many were replaced.
pub fn use_project_kernels(model: &mut TypedModel) -> TractResult<usize> {
    let isa = Isa::detect();
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let input = model.outlet_fact(node.inputs[0])?;
        let Some(mut op) = DepthwiseConv::for_conv(conv, input, isa) else {
            continue;
        };
        // Fuse up to two clamp steps (ReLU6 is max(x, 0) then min(x, 6)).
        let mut last = id;
        for _ in 0..2 {
            let Some((is_max, bound, succ)) = clamp_after(model, model.node(last)) else {
                break;
            };
            let (lo, hi) = op.clamp();
            op.clamp = if is_max {
                (lo.max(bound).to_bits(), op.clamp.1)
            } else {
                (op.clamp.0, hi.min(bound).to_bits())
            };
            last = succ;
        }
        let inputs = node.inputs.clone();
        let mut patch = TypedModelPatch::default();
        let wires = inputs
            .iter()
            .map(|&i| patch.tap_model(model, i))
            .collect::<TractResult<TVec<_>>>()?;
        let out = patch.wire_node(&node.name, op, &wires)?;
        patch.shunt_outside(model, OutletId::new(last, 0), out[0])?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}
