//! The tail of tract's int8 convolutions in one pass.
//!
//! tract lowers an int8 convolution (`QLinearConv`) into an i32 matrix product followed by
//! element-wise passes over the whole i32 output, each allocating a tensor of it: subtract the
//! weight zero point times the activation sums (`Sub`, `Mul`, with `Cast` + sum of the
//! activations feeding them), rescale per output channel (`Scale`), add the output zero point
//! (`Add`), clamp (`Min`, `Max`) and narrow to i8 (`Cast`). On the demo extractor these passes
//! take more time than the products themselves. Here:
//! - [`skip_zero_corrections`]: when the weight zero point is a constant 0 (symmetric int8
//!   weights, what the project's quantizer writes), the correction term is 0: its `Sub` is
//!   bypassed, so the cast, the sum and the product that fed it are never run.
//! - [`Requantize`] does scale, zero point, clamp and narrowing in one vectorised pass, with
//!   tract's own rounding (ties to even on `|x| * scale`, sign restored), bit-identical to the
//!   chain (save where tract's i32 addition would wrap around, far outside any real
//!   accumulator).
//! - [`Quantize`] replaces tract's `QuantizeLinearI8` (float to int8 after each float layer,
//!   scalar in tract) by the same arithmetic in a vectorisable loop.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::math::{Add, Max, Min, Mul, Sub};
use tract_onnx::tract_core::ops::quant::Scale;

/// Beyond this magnitude every scaled value clamps to the i8 bounds, whatever the zero point.
const LIMIT: f32 = 16_777_216.0;

/// One output: tract's `scale_by` (`round_ties_to_even(|x| * scale) * sign(x)`), zero point,
/// clamp, narrowing, written so the compiler vectorises it (no saturating float-to-int
/// conversion: the value is clamped to +-2^24 first). Equal to tract's chain except where
/// tract's i32 addition of the zero point would wrap around (scaled values beyond +-2^31),
/// where this one saturates.
#[inline(always)]
fn requantize_one(x: i32, scale: f32, zero_point: i32, (lo, hi): (i32, i32)) -> i8 {
    // Adding and removing 2^23 rounds a non-negative float below 2^23 to an integer, ties to
    // even (tract's `round_ties_to_even`); larger ones already are integers.
    const TOINT: f32 = 8_388_608.0;
    let v = x as f32;
    let m = v.abs() * scale;
    let r = if m >= TOINT { m } else { m + TOINT - TOINT };
    let y = r.copysign(v).clamp(-LIMIT, LIMIT);
    // SAFETY: `y` is finite (scales are finite and non-negative, checked when the op is made)
    // and within +-2^24, so it fits an i32.
    let y = unsafe { y.to_int_unchecked::<i32>() };
    (y + zero_point).clamp(lo, hi) as i8
}

/// `out = clamp(scale_by(acc, scale[channel]) + zero_point, lo, hi)` as i8 (tract's `scale_by`,
/// see `requantize_one`), over `acc` viewed as `outer x channels x inner` (the scale broadcast
/// along the channel axis).
///
/// # Panics
/// On sizes that disagree, bounds outside i8, a scale that is negative or not finite, or a zero
/// point beyond +-2^16 (the op is only made for chains that pass these checks).
pub fn requantize(
    acc: &[i32],
    (outer, channels, inner): (usize, usize, usize),
    scales: &[f32],
    zero_point: i32,
    (lo, hi): (i32, i32),
    out: &mut [i8],
) {
    assert_eq!(
        acc.len(),
        outer * channels * inner,
        "input is not outer x C x inner"
    );
    assert_eq!(out.len(), acc.len(), "output size differs from input");
    assert!(
        scales.len() == channels || scales.len() == 1,
        "one scale or one per channel"
    );
    assert!(
        scales.iter().all(|s| s.is_finite() && *s >= 0.0),
        "scales must be finite, >= 0"
    );
    assert!(
        lo >= i8::MIN as i32 && hi <= i8::MAX as i32 && lo <= hi,
        "bounds outside i8"
    );
    assert!(zero_point.abs() <= 1 << 16, "zero point far outside i8");
    if inner == 0 {
        return;
    }
    for (i, (src, dst)) in acc
        .chunks_exact(inner)
        .zip(out.chunks_exact_mut(inner))
        .enumerate()
    {
        let scale = scales[if scales.len() == 1 { 0 } else { i % channels }];
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = requantize_one(x, scale, zero_point, (lo, hi));
        }
    }
}

/// Per-channel scales, compared and hashed by their bits (ops must be `Eq` and `Hash`), kept
/// as floats so that each run reads them as they are.
#[derive(Debug, Clone)]
struct Scales(Vec<f32>);

impl PartialEq for Scales {
    fn eq(&self, other: &Scales) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl Eq for Scales {}

impl std::hash::Hash for Scales {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for s in &self.0 {
            s.to_bits().hash(state);
        }
    }
}

/// Scale, zero point, clamp and narrowing of an i32 accumulator in one op.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requantize {
    /// `outer x channels x inner`: the input folded around the axis the scales vary along.
    dims: (usize, usize, usize),
    shape: TVec<usize>,
    scales: Scales,
    zero_point: i32,
    bounds: (i32, i32),
}

impl Op for Requantize {
    fn name(&self) -> StaticName {
        "ProjectRequantize".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "outer x C x inner {:?}, {} scales, zero point {}, bounds {:?}",
            self.dims,
            self.scales.0.len(),
            self.zero_point,
            self.bounds
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Requantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let acc = input.try_as_plain_ram()?;
        let acc = acc.as_slice::<i32>()?;
        ensure!(
            acc.len() == self.shape.iter().product::<usize>(),
            "ProjectRequantize: input size"
        );
        // SAFETY: `requantize` writes every element (it asserts the sizes match).
        let mut output = unsafe { super::output_tensor::<i8>(&self.shape)? };
        let mut view = output.try_as_plain_ram_mut()?;
        requantize(
            acc,
            self.dims,
            &self.scales.0,
            self.zero_point,
            self.bounds,
            view.as_slice_mut::<i8>()?,
        );
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Requantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1, "ProjectRequantize takes one input");
        Ok(tvec!(i8::fact(self.shape.clone())))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let n: usize = self.shape.iter().product();
        Ok(tvec!((Cost::FMA(f32::datum_type()), n.into())))
    }

    as_op!();
}

/// The constant value of `outlet`, if it has one.
fn konst(model: &TypedModel, outlet: OutletId) -> Option<Arc<Tensor>> {
    model.outlet_fact(outlet).ok()?.konst.clone()
}

/// The one-element i32 constant among `node`'s inputs other than `from`.
fn other_scalar_i32(model: &TypedModel, node: &TypedNode, from: usize) -> Option<i32> {
    if node.inputs.len() != 2 || node.inputs.iter().filter(|i| i.node == from).count() != 1 {
        return None;
    }
    let other = node.inputs.iter().find(|i| i.node != from)?;
    let k = konst(model, *other)?;
    if k.len() != 1 || k.datum_type() != i32::datum_type() {
        return None;
    }
    k.cast_to_scalar::<i32>().ok()
}

fn bin_is<T: BinMiniOp>(node: &TypedNode) -> bool {
    node.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<T>())
}

/// The `Requantize` for the chain that starts at `scale_node` (a `Scale` by a constant), and
/// the node whose output it replaces, or `None` when the chain is not the one tract writes.
fn match_chain(model: &TypedModel, scale_node: &TypedNode) -> Option<(Requantize, usize)> {
    if !bin_is::<Scale>(scale_node) || scale_node.inputs.len() != 2 {
        return None;
    }
    let scales = konst(model, scale_node.inputs[0])?;
    let acc = model.outlet_fact(scale_node.inputs[1]).ok()?;
    let shape: TVec<usize> = acc.shape.as_concrete()?.into();
    if acc.datum_type != i32::datum_type()
        || scales.datum_type() != f32::datum_type()
        || scales.rank() > shape.len()
    {
        return None;
    }
    // The scales broadcast along at most one axis of the accumulator.
    let offset = shape.len() - scales.rank();
    let varying: Vec<usize> = (0..scales.rank())
        .filter(|&a| scales.shape()[a] != 1)
        .map(|a| a + offset)
        .collect();
    let dims = match varying.as_slice() {
        [] => (1, 1, shape.iter().product()),
        [axis] if scales.shape()[axis - offset] == shape[*axis] => (
            shape[..*axis].iter().product(),
            shape[*axis],
            shape[axis + 1..].iter().product(),
        ),
        _ => return None,
    };
    let scales = scales.try_as_plain_ram().ok()?;
    let scales = scales.as_slice::<f32>().ok()?;
    if !scales.iter().all(|s| s.is_finite() && *s >= 0.0) {
        return None;
    }
    let scales = Scales(scales.to_vec());
    let add = model.single_succ(scale_node.id).ok()??;
    if !bin_is::<Add>(add) {
        return None;
    }
    let zero_point = other_scalar_i32(model, add, scale_node.id)?;
    let (mut lo, mut hi) = (i32::MIN, i32::MAX);
    let mut last = add;
    for _ in 0..2 {
        let next = model.single_succ(last.id).ok()??;
        let bound = other_scalar_i32(model, next, last.id)?;
        if bin_is::<Min>(next) {
            hi = hi.min(bound);
        } else if bin_is::<Max>(next) {
            lo = lo.max(bound);
        } else {
            return None;
        }
        last = next;
    }
    let cast = model.single_succ(last.id).ok()??;
    let to_i8 = cast
        .op_as::<Cast>()
        .is_some_and(|c| c.to == i8::datum_type());
    let bounded = lo >= i8::MIN as i32 && hi <= i8::MAX as i32 && lo <= hi;
    if !to_i8 || !bounded || zero_point.abs() > 1 << 16 {
        return None;
    }
    let op = Requantize {
        dims,
        shape,
        scales,
        zero_point,
        bounds: (lo, hi),
    };
    Some((op, cast.id))
}

/// Fuses every `Scale -> Add -> Min/Max -> Max/Min -> Cast(i8)` chain of an optimized model
/// into a [`Requantize`]. Returns how many were fused.
pub fn use_project_requantize(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    for id in model.eval_order()? {
        let Some((op, last)) = match_chain(model, model.node(id)) else {
            continue;
        };
        let node = model.node(id);
        let mut patch = TypedModelPatch::default();
        let acc = patch.tap_model(model, node.inputs[1])?;
        let out = patch.wire_node(&node.name, op, &[acc])?;
        patch.shunt_outside(model, OutletId::new(last, 0), out[0])?;
        patch.apply(model)?;
        fused += 1;
    }
    Ok(fused)
}

/// Bypasses `Sub(x, Mul(y, 0))` where the zero is a constant of zeros and the shapes agree:
/// the weight zero point's correction when the weights are symmetric. Returns how many.
pub fn skip_zero_corrections(model: &mut TypedModel) -> TractResult<usize> {
    let mut skipped = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        if !bin_is::<Sub>(node) || node.inputs.len() != 2 {
            continue;
        }
        let term = model.node(node.inputs[1].node);
        let zero_product = bin_is::<Mul>(term)
            && term.inputs.iter().any(|i| {
                konst(model, *i).is_some_and(|k| {
                    k.cast_to::<f32>()
                        .ok()
                        .and_then(|k| {
                            k.try_as_plain_ram().ok().map(|r| {
                                r.as_slice::<f32>()
                                    .is_ok_and(|v| v.iter().all(|x| *x == 0.0))
                            })
                        })
                        .unwrap_or(false)
                })
            });
        let x = model.outlet_fact(node.inputs[0])?;
        let same = x.datum_type == node.outputs[0].fact.datum_type
            && x.shape == node.outputs[0].fact.shape;
        if !zero_product || !same {
            continue;
        }
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, node.inputs[0])?;
        patch.shunt_outside(model, OutletId::new(id, 0), x)?;
        patch.apply(model)?;
        skipped += 1;
    }
    Ok(skipped)
}

/// tract's `quantize_linear_f32_i8`: `clamp(round_ties_to_even(x * scale) + zero_point)`, with
/// `scale` the reciprocal of the quantization step, written so the compiler vectorises it.
/// Equal to tract's except for infinite inputs with a positive zero point (tract's i32
/// addition wraps around there; this one saturates).
#[inline(always)]
fn quantize_one(x: f32, scale: f32, zero_point: i32) -> i8 {
    const TOINT: f32 = 8_388_608.0;
    let v = x * scale;
    let m = v.abs();
    let r = if m >= TOINT { m } else { m + TOINT - TOINT };
    // tract's saturating conversion turns NaN into 0.
    let y = if v.is_nan() {
        0.0
    } else {
        r.copysign(v).clamp(-LIMIT, LIMIT)
    };
    // SAFETY: `y` is finite and within +-2^24, so it fits an i32.
    let y = unsafe { y.to_int_unchecked::<i32>() };
    (y + zero_point).clamp(i8::MIN as i32, i8::MAX as i32) as i8
}

/// Quantizes `input` into `out` with tract's `QuantizeLinearI8` arithmetic.
///
/// # Panics
/// If the lengths differ.
pub fn quantize(input: &[f32], scale: f32, zero_point: i8, out: &mut [i8]) {
    assert_eq!(input.len(), out.len(), "output size differs from input");
    for (o, &x) in out.iter_mut().zip(input) {
        *o = quantize_one(x, scale, zero_point as i32);
    }
}

/// tract's `QuantizeLinearI8` (float to int8), vectorised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quantize {
    shape: TVec<usize>,
    /// Reciprocal of the quantization step, as bits (ops must be `Eq`).
    scale: u32,
    zero_point: i8,
}

impl Quantize {
    /// `1/scale` as bits and the zero point, for an op that fuses this quantizer.
    pub(crate) fn bits(&self) -> (u32, i8) {
        (self.scale, self.zero_point)
    }
}

impl Op for Quantize {
    fn name(&self) -> StaticName {
        "ProjectQuantize".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "1/scale {} zero point {}",
            f32::from_bits(self.scale),
            self.zero_point
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Quantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let values = input.try_as_plain_ram()?;
        let values = values.as_slice::<f32>()?;
        ensure!(
            values.len() == self.shape.iter().product::<usize>(),
            "ProjectQuantize: input size"
        );
        // SAFETY: `quantize` writes every element (the sizes match, checked above).
        let mut output = unsafe { super::output_tensor::<i8>(&self.shape)? };
        let mut view = output.try_as_plain_ram_mut()?;
        let out = view.as_slice_mut::<i8>()?;
        quantize(values, f32::from_bits(self.scale), self.zero_point, out);
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Quantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1, "ProjectQuantize takes one input");
        Ok(tvec!(i8::fact(self.shape.clone())))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let n: usize = self.shape.iter().product();
        Ok(tvec!((Cost::FMA(f32::datum_type()), n.into())))
    }

    as_op!();
}

/// Replaces tract's `QuantizeLinearI8` nodes on concrete f32 tensors (plain i8 out) by
/// [`Quantize`]. Returns how many.
pub fn use_project_quantize(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
    use tract_onnx::tract_core::ops::quant::QuantizeLinearI8;
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(q) = node
            .op_as::<ElementWiseOp>()
            .and_then(|e| e.0.downcast_ref::<QuantizeLinearI8>())
        else {
            continue;
        };
        let input = model.outlet_fact(node.inputs[0])?;
        let Some(shape) = input.shape.as_concrete() else {
            continue;
        };
        if input.datum_type != f32::datum_type()
            || node.outputs[0].fact.datum_type != i8::datum_type()
            || !q.scale.is_finite()
        {
            continue;
        }
        let op = Quantize {
            shape: shape.into(),
            scale: q.scale.to_bits(),
            zero_point: q.zero_point,
        };
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tract's definition, written out: `scale_by` from tract-core with its
    /// `round_ties_to_even`.
    fn tracts_scale_by(x: i32, a: f32) -> i32 {
        let b = x as f32;
        (round_ties_to_even(b.abs() * a) * b.signum()) as i32
    }

    #[test]
    fn quantize_equals_tracts_quantize_linear() {
        use tract_onnx::tract_core::ops::quant::quantize_linear_f32_i8;
        let mut xs: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.0625).collect();
        xs.extend([
            0.5,
            1.5,
            2.5,
            -0.5,
            -1.5,
            -2.5,
            1e9,
            -1e9,
            3e38,
            f32::NAN,
            -0.0,
        ]);
        for scale in [1.0f32, 3.300_369_3, 0.25, 10.0, 1e-6] {
            for zero_point in [-128i8, -8, 0, 5, 127] {
                let mut out = vec![0i8; xs.len()];
                quantize(&xs, scale, zero_point, &mut out);
                for (&x, &got) in xs.iter().zip(&out) {
                    let rounded = round_ties_to_even(x * scale) as i32;
                    if rounded.checked_add(zero_point as i32).is_none() {
                        // tract's addition wraps around here (panics in a debug build); this
                        // one saturates.
                        assert_eq!(got, if rounded > 0 { 127 } else { -128 }, "x {x}");
                        continue;
                    }
                    let want = quantize_linear_f32_i8(x, scale, zero_point as i32);
                    assert_eq!(got, want, "x {x} scale {scale} zp {zero_point}");
                }
            }
        }
    }

    #[test]
    fn ties_round_to_even() {
        // 1.5 -> 2, 2.5 -> 2, -2.5 -> -2, -3.5 -> -4 (zero point 0, full i8 range).
        let mut out = [0i8; 4];
        requantize(&[3, 5, -5, -7], (1, 1, 4), &[0.5], 0, (-128, 127), &mut out);
        assert_eq!(out, [2, 2, -2, -4]);
    }

    #[test]
    fn fused_pass_equals_tracts_chain() {
        let scales = [0.0017312168f32, 0.5, 0.25, 1.0, 3.0, 0.0, 1e-9, 1e9];
        let mut xs: Vec<i32> = (-300..300).collect();
        xs.extend([
            1 << 20,
            -(1 << 20),
            1 << 24,
            -(1 << 24),
            (1 << 24) + 1,
            i32::MAX - 1000,
        ]);
        xs.extend([i32::MIN + 1000, 123_457, -98_765, 7, -7]);
        for &scale in &scales {
            for zero_point in [-128, -5, 0, 9, 127] {
                for bounds in [(-128, 127), (0, 127), (-20, 20)] {
                    let mut out = vec![0i8; xs.len()];
                    requantize(
                        &xs,
                        (1, 1, xs.len()),
                        &[scale],
                        zero_point,
                        bounds,
                        &mut out,
                    );
                    for (&x, &got) in xs.iter().zip(&out) {
                        let scaled = tracts_scale_by(x, scale);
                        let Some(shifted) = scaled.checked_add(zero_point) else {
                            // tract's addition wraps around here; this one saturates.
                            let bound = if scaled > 0 { bounds.1 } else { bounds.0 };
                            assert_eq!(got as i32, bound, "x {x} scale {scale}");
                            continue;
                        };
                        let chain = shifted.clamp(bounds.0, bounds.1) as i8;
                        assert_eq!(got, chain, "x {x} scale {scale} zp {zero_point} {bounds:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn requantize_clamps_and_uses_each_channels_scale() {
        // 1 x 2 channels x 3: channel 0 scale 1, channel 1 scale 0.5; zero point 10.
        let acc = [0, 200, -300, 4, 5, -7];
        let mut out = [0i8; 6];
        requantize(&acc, (1, 2, 3), &[1.0, 0.5], 10, (-128, 127), &mut out);
        assert_eq!(out, [10, 127, -128, 12, 12, 6]);
    }
}
