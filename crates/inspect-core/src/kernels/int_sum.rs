//! Integer sums over one axis, as tract's int8 convolutions need them.
//!
//! tract lowers an int8 convolution (`QLinearConv`) into a matrix product plus zero-point
//! corrections; one correction is the sum of the activations over the input channels
//! (`Reduce<Sum>` on i32). tract's generic reducer builds an index vector and an ndarray slice
//! per output value: about 2 700 heap allocations per layer and 14% of the demo extractor's
//! time. [`sum_axis`] adds whole rows instead (no allocation, vectorised by the compiler) and
//! [`IntSumAxis`] puts it in the optimized plan.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};

/// Sums `input`, viewed as `outer x n x inner` (row-major), over its middle axis into `out`
/// (`outer x inner`). Wraps on overflow, as tract's release build does.
pub fn sum_axis(input: &[i32], (outer, n, inner): (usize, usize, usize), out: &mut [i32]) {
    assert_eq!(
        input.len(),
        outer * n * inner,
        "input is not outer x n x inner"
    );
    assert_eq!(out.len(), outer * inner, "output is not outer x inner");
    if n == 0 || inner == 0 {
        out.fill(0);
        return;
    }
    for (block, sums) in input
        .chunks_exact(n * inner)
        .zip(out.chunks_exact_mut(inner))
    {
        sums.fill(0);
        for row in block.chunks_exact(inner) {
            for (s, v) in sums.iter_mut().zip(row) {
                *s = s.wrapping_add(*v);
            }
        }
    }
}

/// tract's `Reduce<Sum>` over one axis (or adjacent axes) of a concrete i32 tensor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IntSumAxis {
    /// `outer x n x inner`: the input folded around the reduced axes.
    dims: (usize, usize, usize),
    output_shape: TVec<usize>,
}

impl IntSumAxis {
    /// The op for `reduce` on `input`, or `None` when it is not an i32 sum over adjacent axes
    /// of a concrete shape (tract's op stays then).
    fn for_reduce(reduce: &Reduce, input: &TypedFact) -> Option<IntSumAxis> {
        let shape = input.shape.as_concrete()?;
        let axes = &reduce.axes;
        let (&first, &last) = (axes.first()?, axes.last()?);
        let adjacent = last - first + 1 == axes.len();
        if reduce.reducer != Reducer::Sum
            || input.datum_type != i32::datum_type()
            || !adjacent
            || last >= shape.len()
        {
            return None;
        }
        let dims = (
            shape[..first].iter().product(),
            shape[first..=last].iter().product(),
            shape[last + 1..].iter().product(),
        );
        let mut output_shape: TVec<usize> = shape.into();
        for &a in axes {
            output_shape[a] = 1;
        }
        Some(IntSumAxis { dims, output_shape })
    }
}

impl Op for IntSumAxis {
    fn name(&self) -> StaticName {
        "ProjectIntSum".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("outer x n x inner {:?}", self.dims)])
    }

    op_as_typed_op!();
}

impl EvalOp for IntSumAxis {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let values = input.try_as_plain_ram()?;
        let values = values.as_slice::<i32>()?;
        let (outer, n, inner) = self.dims;
        ensure!(
            values.len() == outer * n * inner,
            "ProjectIntSum: input size"
        );
        let mut output = Tensor::zero::<i32>(&self.output_shape)?;
        let mut view = output.try_as_plain_ram_mut()?;
        sum_axis(values, self.dims, view.as_slice_mut::<i32>()?);
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for IntSumAxis {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1, "ProjectIntSum takes one input");
        Ok(tvec!(i32::fact(self.output_shape.clone())))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let (outer, n, inner) = self.dims;
        Ok(tvec!((
            Cost::FMA(i32::datum_type()),
            (outer * n * inner).into()
        )))
    }

    as_op!();
}

/// Replaces tract's i32 `Reduce<Sum>` nodes of an optimized model (the int8 convolutions'
/// zero-point sums) by [`IntSumAxis`]. Returns how many were replaced.
pub fn use_project_sums(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(reduce) = node.op_as::<Reduce>() else {
            continue;
        };
        let input = model.outlet_fact(node.inputs[0])?;
        let Some(op) = IntSumAxis::for_reduce(reduce, input) else {
            continue;
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

    /// The definition: out[o][i] = sum over k of input[o][k][i].
    fn reference(input: &[i32], (outer, n, inner): (usize, usize, usize)) -> Vec<i32> {
        let mut out = vec![0i32; outer * inner];
        for o in 0..outer {
            for k in 0..n {
                for i in 0..inner {
                    out[o * inner + i] =
                        out[o * inner + i].wrapping_add(input[(o * n + k) * inner + i]);
                }
            }
        }
        out
    }

    #[test]
    fn sums_match_the_definition_for_every_fold() {
        for dims in [
            (1, 16, 4096),
            (1, 3, 1),
            (2, 5, 7),
            (4, 1, 9),
            (3, 7, 1),
            (1, 0, 5),
        ] {
            let len = dims.0 * dims.1 * dims.2;
            let input: Vec<i32> = (0..len as i32).map(|v| (v * 7919) % 255 - 127).collect();
            let mut out = vec![123; dims.0 * dims.2];
            sum_axis(&input, dims, &mut out);
            assert_eq!(out, reference(&input, dims), "{dims:?}");
        }
    }

    #[test]
    fn sums_wrap_like_tracts_release_build() {
        let input = [i32::MAX, i32::MIN, 1, -1];
        let mut out = [0; 2];
        sum_axis(&input, (1, 2, 2), &mut out);
        assert_eq!(out, [i32::MIN, i32::MAX]);
    }

    #[test]
    fn op_matches_tracts_reduce_on_each_axis() {
        let shape = [2usize, 3, 4, 5];
        let values: Vec<i32> = (0..120).map(|v| (v * 37) % 101 - 50).collect();
        let input = Tensor::from_shape(&shape, &values).unwrap();
        for axes in [
            vec![0],
            vec![1],
            vec![2],
            vec![3],
            vec![1, 2],
            vec![0, 1, 2, 3],
        ] {
            let reduce = Reduce::new(axes.iter().copied().collect(), Reducer::Sum);
            let fact = i32::fact(shape);
            let op = IntSumAxis::for_reduce(&reduce, &fact).expect("covered");
            let ctx = EvalContext::out_of_plan();
            let ours = EvalOp::eval(&op, &ctx, tvec!(input.clone().into_tvalue())).unwrap();
            let tracts = EvalOp::eval(&reduce, &ctx, tvec!(input.clone().into_tvalue())).unwrap();
            assert_eq!(ours[0].shape(), tracts[0].shape(), "{axes:?}");
            assert_eq!(
                ours[0]
                    .try_as_plain_ram()
                    .unwrap()
                    .as_slice::<i32>()
                    .unwrap(),
                tracts[0]
                    .try_as_plain_ram()
                    .unwrap()
                    .as_slice::<i32>()
                    .unwrap(),
                "{axes:?}"
            );
        }
    }

    #[test]
    fn leaves_other_reductions_to_tract() {
        let fact = i32::fact([2usize, 3, 4]);
        let gap = Reduce::new(tvec!(0, 2), Reducer::Sum);
        assert!(IntSumAxis::for_reduce(&gap, &fact).is_none());
        let max = Reduce::new(tvec!(1), Reducer::Max);
        assert!(IntSumAxis::for_reduce(&max, &fact).is_none());
        let float = Reduce::new(tvec!(1), Reducer::Sum);
        assert!(IntSumAxis::for_reduce(&float, &f32::fact([2usize, 3, 4])).is_none());
    }
}
