//! The ONNX writer: graphs built in Rust, run by tract, checked against values computed by hand.

use inspect_core::engine::{optimized_plan, run_plan};
use inspect_core::onnx::{Attr, Dim, ModelBuilder, Padding, IR_VERSION, OPSET_VERSION};
use prost::Message;
use tract_onnx::prelude::*;

fn run(bytes: &[u8], inputs: Vec<Tensor>) -> Vec<Vec<f32>> {
    let views: Vec<(Vec<usize>, Vec<f32>)> = inputs
        .iter()
        .map(|t| {
            let v = t.to_plain_array_view::<f32>().unwrap();
            (t.shape().to_vec(), v.iter().copied().collect())
        })
        .collect();
    let refs: Vec<(&[usize], &[f32])> = views.iter().map(|(s, d)| (&s[..], &d[..])).collect();
    run_plan(&optimized_plan(bytes).unwrap(), &refs).unwrap()
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
}

#[test]
fn header_is_ir8_opset17() {
    let mut b = ModelBuilder::new("id");
    let x = b.input("x", &[Dim::Fixed(2)]);
    let y = b.node("Identity", &[&x], vec![]);
    b.output(&y, &[2.into()]);
    let proto = tract_onnx::pb::ModelProto::decode(b.to_bytes().unwrap().as_slice()).unwrap();
    assert_eq!(proto.ir_version, IR_VERSION);
    assert_eq!(IR_VERSION, 8);
    assert_eq!(proto.opset_import[0].version, OPSET_VERSION);
    assert_eq!(OPSET_VERSION, 17);
}

#[test]
fn conv_with_bias_stride_and_padding_matches_hand_computation() {
    // 1x1x3x3 input 1..9, one 2x2 kernel [[1, 0], [0, -1]], bias 0.5, stride 2, pad 1.
    let mut b = ModelBuilder::new("conv");
    let x = b.input("x", &[1.into(), 1.into(), 3.into(), 3.into()]);
    let y = b.conv(
        &x,
        &[1.0, 0.0, 0.0, -1.0],
        [1, 1, 2, 2],
        Some(&[0.5]),
        2,
        Padding::Symmetric(1),
        1,
    );
    b.output(&y, &[1.into(), 1.into(), 2.into(), 2.into()]);
    let input = Tensor::from_shape(&[1, 1, 3, 3], &[1f32, 2., 3., 4., 5., 6., 7., 8., 9.]).unwrap();
    let out = run(&b.to_bytes().unwrap(), vec![input]);
    // Padded input rows: [0 0 0 0 0], [0 1 2 3 0], [0 4 5 6 0], [0 7 8 9 0], [0 0 0 0 0].
    // Windows at (0,0): 0 - 1; (0,2): 0 - 3; (2,0): 0 - 7; (2,2): 5 - 9; plus 0.5.
    close(&out[0], &[-0.5, -2.5, -6.5, -3.5]);
}

#[test]
fn depthwise_conv_clip_and_pool() {
    // Two channels, group 2: channel 0 scaled by 2, channel 1 by -1, then ReLU6 as Clip, then
    // 2x2 average pooling.
    let mut b = ModelBuilder::new("dw");
    let x = b.input("x", &[1.into(), 2.into(), 2.into(), 2.into()]);
    let y = b.conv(
        &x,
        &[2.0, -1.0],
        [2, 1, 1, 1],
        None,
        1,
        Padding::Symmetric(0),
        2,
    );
    let y = b.clip(&y, 0.0, 6.0);
    let y = b.average_pool(&y, 2);
    b.output(&y, &[1.into(), 2.into(), 1.into(), 1.into()]);
    let input = Tensor::from_shape(&[1, 2, 2, 2], &[1f32, 2., 3., 4., -1., -2., 3., -4.]).unwrap();
    let out = run(&b.to_bytes().unwrap(), vec![input]);
    // Channel 0: 2, 4, 6, 8 -> clip 2, 4, 6, 6 -> mean 4.5. Channel 1: 1, 2, -3, 4 -> 1, 2, 0, 4 -> 1.75.
    close(&out[0], &[4.5, 1.75]);
}

#[test]
fn gemm_relu_and_reshape_with_symbolic_batch() {
    // y = relu(x W^T + b) for a batch of 2, then flattened.
    let mut b = ModelBuilder::new("mlp");
    let x = b.input("x", &["N".into(), 3.into()]);
    let w = b.constant("w", &[2, 3], &[1.0, 0.0, -1.0, 0.5, 0.5, 0.5]);
    let bias = b.constant("b", &[2], &[0.0, -1.0]);
    let y = b.node("Gemm", &[&x, &w, &bias], vec![("transB", Attr::Int(1))]);
    let y = b.node("Relu", &[&y], vec![]);
    let y = b.reshape(&y, &[-1]);
    b.output(&y, &[Dim::Symbol("M".into())]);
    let input = Tensor::from_shape(&[2, 3], &[1f32, 2., 3., 4., 0., -2.]).unwrap();
    let out = run(&b.to_bytes().unwrap(), vec![input]);
    // Row 0: [1 - 3, 0.5*6 - 1] = [-2, 2] -> [0, 2]. Row 1: [4 + 2, 0.5*2 - 1] = [6, 0].
    close(&out[0], &[0.0, 2.0, 6.0, 0.0]);
}

#[test]
fn squeeze_matmul_and_named_outputs() {
    let mut b = ModelBuilder::new("mm");
    let x = b.input("x", &[1.into(), 2.into(), 2.into()]);
    let sq = b.squeeze(&x, &[0]);
    let m = b.constant("m", &[2, 1], &[3.0, -1.0]);
    b.node("MatMul", &[&sq, &m], vec![]);
    let named = b.name_last_output("product");
    assert_eq!(named, "product");
    b.output("product", &[2.into(), 1.into()]);
    let input = Tensor::from_shape(&[1, 2, 2], &[1f32, 2., 3., 4.]).unwrap();
    let out = run(&b.to_bytes().unwrap(), vec![input]);
    close(&out[0], &[1.0, 5.0]);
}

#[test]
fn builder_reports_graph_mistakes() {
    let mut b = ModelBuilder::new("bad");
    b.input("x", &[1.into()]);
    b.input("x", &[1.into()]);
    let err = b.to_bytes().unwrap_err().to_string();
    assert!(err.contains("\"x\" is already used"), "{err}");

    let mut b = ModelBuilder::new("bad");
    let x = b.input("x", &[1.into()]);
    b.node("Add", &[&x, "ghost"], vec![]);
    let err = b.to_bytes().unwrap_err().to_string();
    assert!(err.contains("\"ghost\""), "{err}");

    let mut b = ModelBuilder::new("bad");
    b.constant("w", &[2, 2], &[1.0; 3]);
    let err = b.to_bytes().unwrap_err().to_string();
    assert!(err.contains("holds 4 values but 3"), "{err}");
}

#[test]
fn same_upper_padding_pads_the_odd_pixel_at_the_end() {
    // TensorFlow SAME, 4x4 input, 3x3 all-ones kernel, stride 2: output 2x2, total padding 1,
    // all of it at the bottom/right. Window (0,0) covers rows/cols 0..3 of the input.
    let mut b = ModelBuilder::new("same");
    let x = b.input("x", &[1.into(), 1.into(), 4.into(), 4.into()]);
    let y = b.conv(&x, &[1.0; 9], [1, 1, 3, 3], None, 2, Padding::SameUpper, 1);
    b.output(&y, &[1.into(), 1.into(), 2.into(), 2.into()]);
    let data: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let input = Tensor::from_shape(&[1, 1, 4, 4], &data).unwrap();
    let out = run(&b.to_bytes().unwrap(), vec![input]);
    // (0,0): rows 0-2, cols 0-2 = 0+1+2+4+5+6+8+9+10 = 45. (0,1): cols 2-3 (+pad) = 2+3+6+7+10+11 = 39.
    // (1,0): rows 2-3, cols 0-2 = 8+9+10+12+13+14 = 66. (1,1): rows 2-3, cols 2-3 = 10+11+14+15 = 50.
    close(&out[0], &[45.0, 39.0, 66.0, 50.0]);
}
