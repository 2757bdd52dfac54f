use edge_inspector::engine::{optimize, Kernels};
#[test]
fn probe() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let onnx = std::fs::read(root.join("demo/bundle/extractor.onnx")).unwrap();
    let typed = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(onnx))
        .unwrap()
        .into_typed()
        .unwrap();
    use tract_onnx::prelude::*;
    let m = optimize(typed, Kernels::Project).unwrap();
    for id in m.eval_order().unwrap() {
        let n = m.node(id);
        if n.name.starts_with("QLinearConv_94")
            || n.name.starts_with("QLinearConv_64")
            || n.name.starts_with("DequantizeLinear_9")
        {
            let ins: Vec<String> = n
                .inputs
                .iter()
                .map(|i| format!("{}:{:?}", m.node(i.node).name, m.outlet_fact(*i).unwrap()))
                .collect();
            eprintln!(
                "#{id} {} [{}] {:?}\n     in {:?}\n     out {:?}",
                n.name,
                n.op().name(),
                n.op().info().unwrap(),
                ins,
                n.outputs[0].fact
            );
        }
    }
}
