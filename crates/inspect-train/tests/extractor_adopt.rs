//! A user's ONNX network becomes an extractor by exposing named intermediate tensors.

mod common;

use common::Scratch;
use inspect_core::engine::{optimized_plan, run_plan};
use inspect_core::onnx::{ModelBuilder, Padding};
use inspect_train::extractor::adopt::adopt;

/// x -> Conv (x2, named `stage1`) -> Relu (named `stage2`) -> Mul by 10 (`final`).
fn user_model() -> Vec<u8> {
    let mut b = ModelBuilder::new("user");
    let x = b.input("input", &[1.into(), 1.into(), 2.into(), 2.into()]);
    b.conv(&x, &[2.0], [1, 1, 1, 1], None, 1, Padding::Symmetric(0), 1);
    let s1 = b.name_last_output("stage1");
    b.node("Relu", &[&s1], vec![]);
    let s2 = b.name_last_output("stage2");
    b.binary_const("Mul", &s2, &[], &[10.0]);
    let fin = b.name_last_output("final");
    b.output(&fin, &[1.into(), 1.into(), 2.into(), 2.into()]);
    b.to_bytes().unwrap()
}

#[test]
fn named_intermediate_tensors_become_the_outputs_in_order() {
    let dir = Scratch::new("adopt");
    let input = dir.path("user.onnx");
    std::fs::write(&input, user_model()).unwrap();
    let out = dir.path("extractor.onnx");
    adopt(&input, &["stage2".into(), "stage1".into()], &out).unwrap();
    let plan = optimized_plan(&std::fs::read(&out).unwrap()).unwrap();
    let values = run_plan(&plan, &[(&[1, 1, 2, 2], &[1f32, -2., 3., -4.])]).unwrap();
    assert_eq!(
        values,
        vec![vec![2.0, 0.0, 6.0, 0.0], vec![2.0, -4.0, 6.0, -8.0]]
    );
}

#[test]
fn unknown_tap_is_named_with_examples() {
    let dir = Scratch::new("adopt-bad");
    let input = dir.path("user.onnx");
    std::fs::write(&input, user_model()).unwrap();
    let err = adopt(&input, &["stage9".into()], &dir.path("x.onnx"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("user.onnx") && err.contains("\"stage9\""),
        "{err}"
    );
    assert!(
        err.contains("stage2"),
        "existing names are suggested: {err}"
    );
    let not_onnx = dir.path("junk.onnx");
    std::fs::write(&not_onnx, b"definitely not protobuf \xff\xff").unwrap();
    let err = adopt(&not_onnx, &["a".into()], &dir.path("y.onnx")).unwrap_err();
    assert!(err.to_string().contains("not an ONNX model"), "{err}");
}
