//! Writes a synthetic demo: the known-function brightness bundle and a few 1280x720 frames of an
//! even concrete-like surface with dark patches, so `inspectd` can be tried without a camera or a
//! trained model. Usage: `cargo run --example synthetic_demo [OUT_DIR]` (default `target/demo`),
//! then `cargo run -- --config firmware-config/synthetic-demo.toml`.

use std::path::PathBuf;

use anyhow::Context;
use inspect_core::fixtures::{concrete_frame, write_brightness_bundle, BrightnessModel};
use inspect_core::tiler::PixelBox;

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/demo".into()),
    );
    let bundle = out.join("bundle");
    write_brightness_bundle(&bundle, &BrightnessModel::default())
        .with_context(|| format!("writing {}", bundle.display()))?;
    let frames = out.join("frames");
    std::fs::create_dir_all(&frames).with_context(|| format!("creating {}", frames.display()))?;
    let patch = |x, y, w, h| PixelBox {
        x,
        y,
        width: w,
        height: h,
    };
    let scenes = [
        vec![],
        vec![patch(300, 200, 60, 40)],
        vec![patch(900, 500, 30, 90), patch(120, 560, 50, 50)],
        vec![],
    ];
    for (i, defects) in scenes.iter().enumerate() {
        let path = frames.join(format!("frame_{i:03}.png"));
        concrete_frame(1280, 720, 100 + i as u64, defects)
            .save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "demo written to {} ({} frames, 3 planted defects)",
        out.display(),
        scenes.len()
    );
    Ok(())
}
