//! The bundled demo (README's first command): `inspectd` on `firmware-config/desk-replay.toml`
//! runs the committed CFlow-AD bundle on the six real frames of `demo/frames` and its alerts
//! land on the cracks that `demo/masks` marks (alert regions grown by 8 px, the map's stride).

mod common;

use std::path::{Path, PathBuf};

use common::{run_inspectd, Scratch};
use inspect_core::bundle::Bundle;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The demo frames in the order the folder source reads them (sorted by name).
fn frames() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("demo/frames"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    files
}

/// The crack mask of a frame, grown by `grow` pixels (annotations are a few pixels thin and the
/// anomaly map is at stride 8).
fn crack_mask(frame: &Path, grow: i64) -> image::GrayImage {
    let stem = frame.file_stem().unwrap().to_str().unwrap();
    let mask = image::open(root().join(format!("demo/masks/{stem}.png")))
        .unwrap()
        .into_luma8();
    let mut grown = image::GrayImage::new(mask.width(), mask.height());
    for (x, y, p) in mask.enumerate_pixels() {
        if p[0] < 128 {
            continue;
        }
        for dy in -grow..=grow {
            for dx in -grow..=grow {
                let (gx, gy) = (x as i64 + dx, y as i64 + dy);
                if gx >= 0 && gy >= 0 && gx < mask.width() as i64 && gy < mask.height() as i64 {
                    grown.put_pixel(gx as u32, gy as u32, image::Luma([255]));
                }
            }
        }
    }
    grown
}

fn cracked_pixels(mask: &image::GrayImage, b: &Value) -> u64 {
    let n = |k: &str| b[k].as_u64().unwrap() as u32;
    let (x0, y0, w, h) = (n("x"), n("y"), n("w"), n("h"));
    let mut count = 0;
    for y in y0..(y0 + h).min(mask.height()) {
        for x in x0..(x0 + w).min(mask.width()) {
            count += u64::from(mask.get_pixel(x, y)[0] > 0);
        }
    }
    count
}

#[test]
fn the_demo_bundle_verifies() {
    let bundle = Bundle::load(&root().join("demo/bundle")).unwrap_or_else(|e| panic!("{e}"));
    let m = &bundle.manifest;
    assert_eq!(m.levels.len(), 2, "the demo uses Lite2's strides 8 and 16");
    assert!(m.threshold.value.is_finite());
    assert_eq!(frames().len(), 6);
}

/// Runs `inspectd` with the demo config on `frames` (copied to a scratch folder, the config's
/// `source.path` pointed at it) and returns its alerts.
fn alerts_on(frames: &[PathBuf], scratch: &Scratch) -> Vec<Value> {
    let folder = scratch.path("frames");
    std::fs::create_dir_all(&folder).unwrap();
    for f in frames {
        std::fs::copy(f, folder.join(f.file_name().unwrap())).unwrap();
    }
    let text = std::fs::read_to_string(root().join("firmware-config/desk-replay.toml"))
        .unwrap()
        .replace(
            "../demo/bundle",
            root().join("demo/bundle").to_str().unwrap(),
        )
        .replace("../demo/frames", folder.to_str().unwrap());
    let config = scratch.path("desk-replay.toml");
    std::fs::write(&config, text).unwrap();
    let out = run_inspectd(&["--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "alert")
        .collect()
}

/// The frames replayed under an emulator: the two with the clearest cracks.
const QEMU_FRAMES: [&str; 2] = ["11197-2.jpg", "11289-10.jpg"];

#[test]
fn the_daemon_flags_the_cracks_of_the_demo_frames() {
    // Under an emulator (cross/test.sh) the int8 model runs ~15x slower: replay the two frames
    // with the clearest cracks there, all six natively.
    let emulated = std::env::var("EDGE_INSPECTOR_RUNNER").is_ok_and(|r| !r.trim().is_empty());
    let frames: Vec<PathBuf> = frames()
        .into_iter()
        .filter(|f| !emulated || QEMU_FRAMES.iter().any(|n| f.ends_with(n)))
        .collect();
    let scratch = Scratch::new("demo");
    let alerts = alerts_on(&frames, &scratch);
    let masks: Vec<image::GrayImage> = frames.iter().map(|f| crack_mask(f, 8)).collect();
    let mut per_frame = vec![0usize; frames.len()];
    let mut on_crack = 0;
    for alert in &alerts {
        let frame = alert["frame"].as_u64().unwrap() as usize;
        per_frame[frame] += 1;
        let hit = cracked_pixels(&masks[frame], &alert["region"]) > 0;
        on_crack += usize::from(hit);
        if !hit {
            println!("off the cracks: {alert}");
        }
    }
    println!(
        "{} alerts, per frame {per_frame:?}, {on_crack} with a region on a crack",
        alerts.len()
    );
    // Measured with the bundle's tile score, the mean of the top 10% of the map less the
    // frame's mean tile score (chosen on the interleaved split, docs/RESULTS.md; demo/README.md):
    // 16 alerts in 5 of the 6 frames, all 16 on cracks, one of the five by a single tile near
    // the threshold; the two frames replayed under qemu give 6 + 4 natively. (The first demo,
    // Lite0 with the plain top 5%, found cracks in 3 of its 6 frames.)
    let flagged = per_frame.iter().filter(|&&n| n > 0).count();
    let expected = if emulated { 2 } else { 4 };
    assert!(
        flagged >= expected,
        "cracks found in only {flagged} of {} frames",
        frames.len()
    );
    assert!(
        on_crack * 10 >= alerts.len() * 9,
        "{on_crack} of {} alert regions touch a crack",
        alerts.len()
    );
}
