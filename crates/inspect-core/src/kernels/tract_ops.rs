//! The project's kernels as tract ops, and the model patch that puts them in place of tract's.
//!
//! [`use_project_kernels`] runs on a typed model before `into_optimized`: every float depthwise
//! `Conv` (one group per channel, no dilation, kernel up to 7x7) becomes a [`DepthwiseConv`]
//! running [`super::depthwise::plane`] on channel planes (NCHW / CHW) or
//! [`super::channels_last::image`] on channels-last tensors (NHWC / HWC, as tract lays the
//! extractor out on aarch64), and a `Clip`/ReLU6 right after it is fused into it. The weights
//! are constants: the patch rewires them once in the order the kernel reads (`kh x kw x C` for
//! channels-last) with one bias per channel, so a run repacks nothing. tract's optimizer leaves
//! these ops alone and optimizes everything else as usual.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::channels_last;
use super::depthwise::{plane, Geometry, Isa, Padded, MAX_KERNEL};
use super::requantize::{quantize, Quantize};

/// How the op's input and output lie in memory, and so its taps (rewired by the patch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Layout {
    /// Channel planes (NCHW / CHW), taps `C x kh x kw`: [`plane`] per channel.
    Planes,
    /// Channels-last (NHWC / HWC), taps `kh x kw x C`: [`channels_last::image`] per image.
    ChannelsLast,
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
    /// A float-to-int8 quantizer fused after the clamp (`1/scale` as bits, zero point): the
    /// op then writes int8, each image or plane quantized while it is still in cache.
    quantize: Option<(u32, i8)>,
    isa: Isa,
}

impl DepthwiseConv {
    /// The op for `conv` applied to an input of `input_shape`, and whether tract's taps are
    /// HWIO (else OIHW), or `None` when the kernels do not cover it (tract's own op stays then).
    fn for_conv(conv: &Conv, input: &TypedFact, isa: Isa) -> Option<(DepthwiseConv, bool)> {
        let spec = &conv.pool_spec;
        let shape = input.shape.as_concrete()?;
        let depthwise = conv.group == spec.input_channels && conv.group == spec.output_channels;
        let undilated = spec
            .dilations
            .as_ref()
            .is_none_or(|d| d.iter().all(|&d| d == 1));
        let channels_last = matches!(spec.data_format, DataFormat::NHWC | DataFormat::HWC);
        let (layout, taps_hwio) = match (channels_last, conv.kernel_fmt) {
            (false, KernelFormat::OIHW) => (Layout::Planes, false),
            (true, KernelFormat::OIHW) => (Layout::ChannelsLast, false),
            (true, KernelFormat::HWIO) => (Layout::ChannelsLast, true),
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
        let op = DepthwiseConv {
            geometry,
            batch,
            channels,
            layout,
            with_batch_axis: matches!(spec.data_format, DataFormat::NCHW | DataFormat::NHWC),
            clamp: (f32::NEG_INFINITY.to_bits(), f32::INFINITY.to_bits()),
            quantize: None,
            isa,
        };
        Some((op, taps_hwio))
    }

    /// tract's constant kernel (OIHW, or HWIO with `taps_hwio`) and bias (one value or one per
    /// channel) as the op reads them: taps in the layout's order, `C` biases. `None` when the
    /// tensors do not hold what the geometry says.
    fn constants(
        &self,
        kernel: &Tensor,
        bias: &Tensor,
        taps_hwio: bool,
    ) -> Option<(Tensor, Tensor)> {
        let kernel = kernel.try_as_plain_ram().ok()?;
        let kernel = kernel.as_slice::<f32>().ok()?;
        let bias = bias.try_as_plain_ram().ok()?;
        let bias = bias.as_slice::<f32>().ok()?;
        let (c, k) = (
            self.channels,
            self.geometry.kernel.0 * self.geometry.kernel.1,
        );
        if kernel.len() != c * k || !(bias.len() == 1 || bias.len() == c) {
            return None;
        }
        // Tap `t` of channel `ch` sits at `ch * k + t` in OIHW and at `t * c + ch` in HWIO.
        let taps: Vec<f32> = match (self.layout, taps_hwio) {
            (Layout::Planes, false) | (Layout::ChannelsLast, true) => kernel.to_vec(),
            (Layout::ChannelsLast, false) => {
                (0..k * c).map(|i| kernel[(i % c) * k + i / c]).collect()
            }
            // `for_conv` takes planes with OIHW taps only.
            (Layout::Planes, true) => return None,
        };
        let bias: Vec<f32> = (0..c)
            .map(|ch| bias[if bias.len() == 1 { 0 } else { ch }])
            .collect();
        Some((tensor1(&taps), tensor1(&bias)))
    }

    fn output_shape(&self) -> TVec<usize> {
        let (h, w) = self.geometry.output;
        let c = self.channels;
        let mut shape = match self.layout {
            Layout::Planes => tvec!(c, h, w),
            Layout::ChannelsLast => tvec!(h, w, c),
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
            "{}x{} stride {:?} pad {:?} {:?} -> {:?} clamp {:?} {:?} {:?} quantize {:?}",
            g.kernel.0,
            g.kernel.1,
            g.stride,
            g.pad,
            g.input,
            g.output,
            self.clamp(),
            self.isa,
            self.layout,
            self.quantize.map(|(s, z)| (f32::from_bits(s), z))
        )])
    }

    op_as_typed_op!();
}

impl DepthwiseConv {
    /// Runs the op on its input and the patch's constants, with `state`'s buffers.
    fn run(&self, inputs: TVec<TValue>, state: &mut DepthwiseState) -> TractResult<TVec<TValue>> {
        let (input, taps, bias) = args_3!(inputs);
        let g = &self.geometry;
        let c = self.channels;
        let (plane_in, plane_out) = (g.input.0 * g.input.1, g.output.0 * g.output.1);
        let taps_per_channel = g.kernel.0 * g.kernel.1;
        let input = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let taps = taps.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?;
        ensure!(input.len() == self.batch * c * plane_in);
        ensure!(taps.len() == c * taps_per_channel && bias.len() == c);
        let shape = self.output_shape();
        let datum = self.output_datum();
        if plane_in == 0 || plane_out == 0 {
            // Nothing to convolve (the kernels would return at once).
            return Ok(tvec!(Tensor::zero_dt(datum, &shape)?.into_tvalue()));
        }
        // One unit is an image (channels-last) or a channel plane.
        let (unit_in, unit_out) = match self.layout {
            Layout::ChannelsLast => (plane_in * c, plane_out * c),
            Layout::Planes => (plane_in, plane_out),
        };
        let DepthwiseState { padded, floats } = state;
        let compute = |unit: usize, out: &mut [f32], padded: &mut Padded| {
            let input = &input[unit * unit_in..(unit + 1) * unit_in];
            match self.layout {
                Layout::ChannelsLast => {
                    channels_last::image(self.isa, g, c, input, taps, bias, self.clamp(), out)
                }
                Layout::Planes => {
                    let ch = unit % c;
                    let taps = &taps[ch * taps_per_channel..(ch + 1) * taps_per_channel];
                    plane(
                        self.isa,
                        g,
                        input,
                        taps,
                        bias[ch],
                        self.clamp(),
                        out,
                        padded,
                    )
                }
            }
        };
        // SAFETY: every unit of the output is written below (both layouts write every output of
        // a non-empty input, and `quantize` every element of its unit).
        let mut output = unsafe {
            match datum {
                DatumType::I8 => super::output_tensor::<i8>(&shape)?,
                _ => super::output_tensor::<f32>(&shape)?,
            }
        };
        let mut view = output.try_as_plain_ram_mut()?;
        match self.quantize {
            None => {
                let out = view.as_slice_mut::<f32>()?;
                for (unit, out) in out.chunks_exact_mut(unit_out).enumerate() {
                    compute(unit, out, padded);
                }
            }
            Some((scale, zero_point)) => {
                let out = view.as_slice_mut::<i8>()?;
                floats.resize(unit_out, 0.0);
                for (unit, out) in out.chunks_exact_mut(unit_out).enumerate() {
                    compute(unit, floats, padded);
                    quantize(floats, f32::from_bits(scale), zero_point, out);
                }
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }

    fn output_datum(&self) -> DatumType {
        if self.quantize.is_some() {
            i8::datum_type()
        } else {
            f32::datum_type()
        }
    }
}

/// What a plan keeps for one depthwise node between runs: the padded plane buffer and, with a
/// fused quantizer, one unit's floats; both sized on the first run.
#[derive(Debug, Clone, Default)]
struct DepthwiseState {
    padded: Padded,
    floats: Vec<f32>,
}

impl OpState for DepthwiseState {
    fn eval(
        &mut self,
        _ctx: &EvalContext,
        op: &dyn Op,
        inputs: TVec<TValue>,
    ) -> TractResult<TVec<TValue>> {
        let op = op
            .downcast_ref::<DepthwiseConv>()
            .context("DepthwiseState runs a DepthwiseConv")?;
        op.run(inputs, self)
    }

    fn reset_lanes(&mut self, _lanes: &[LaneId]) -> TractResult<()> {
        Ok(())
    }
}

impl EvalOp for DepthwiseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.run(inputs, &mut DepthwiseState::default())
    }

    fn state(&self, _ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
        // Planes keep their padded buffer across runs, a fused quantizer its floats.
        let buffers = self.layout == Layout::Planes || self.quantize.is_some();
        Ok(buffers.then(|| Box::new(DepthwiseState::default()) as Box<dyn OpState>))
    }
}

impl TypedOp for DepthwiseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 3,
            "DepthwiseConv takes input, kernel and bias"
        );
        Ok(tvec!(self.output_datum().fact(self.output_shape())))
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
        let Some((mut op, taps_hwio)) = DepthwiseConv::for_conv(conv, input, isa) else {
            continue;
        };
        let konst = |i: usize| model.outlet_fact(node.inputs[i]).ok()?.konst.clone();
        let Some((taps, bias)) = konst(1)
            .zip(konst(2))
            .and_then(|(k, b)| op.constants(&k, &b, taps_hwio))
        else {
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
        let mut patch = TypedModelPatch::default();
        let input = patch.tap_model(model, node.inputs[0])?;
        let taps = patch.add_const(format!("{}.taps", node.name), taps)?;
        let bias = patch.add_const(format!("{}.bias", node.name), bias)?;
        let out = patch.wire_node(&node.name, op, &[input, taps, bias])?;
        patch.shunt_outside(model, OutletId::new(last, 0), out[0])?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// Folds each [`Quantize`] whose input is a depthwise op's only use into that op, which then
/// writes int8 (the int8 extractor's `DequantizeLinear -> depthwise -> QuantizeLinear`
/// sandwich): no float tensor per layer, and each plane is quantized while it is in cache. Runs
/// after [`super::use_project_quantize`]. Returns how many were fused.
pub fn fuse_depthwise_quantize(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(q) = node.op_as::<Quantize>() else {
            continue;
        };
        let source = node.inputs[0];
        let producer = model.node(source.node);
        let Some(depthwise) = producer.op_as::<DepthwiseConv>() else {
            continue;
        };
        if depthwise.quantize.is_some()
            || model.outlet_successors(source).len() != 1
            || model.output_outlets()?.contains(&source)
        {
            continue;
        }
        let mut op = depthwise.clone();
        op.quantize = Some(q.bits());
        let mut patch = TypedModelPatch::default();
        let wires = producer
            .inputs
            .iter()
            .map(|&i| patch.tap_model(model, i))
            .collect::<TractResult<TVec<_>>>()?;
        let out = patch.wire_node(&producer.name, op, &wires)?;
        patch.shunt_outside(model, OutletId::new(id, 0), out[0])?;
        patch.apply(model)?;
        fused += 1;
    }
    Ok(fused)
}
