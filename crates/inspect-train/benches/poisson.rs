//! Poisson blending speed: the project's DST solver vs OpenCV's `seamlessClone(NORMAL_CLONE)`
//! (one thread each) on the same pastes into 256x256 and 512x512 targets.
//!
//! `cargo bench --features data --bench poisson` (needs tests/setup.sh for OpenCV).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use image::{GrayImage, Luma, Rgb};
use inspect_core::fixtures::concrete_frame;
use inspect_train::synth::poisson::seamless_clone;

const RUNS: usize = 20;

fn main() {
    let dir = std::env::temp_dir().join(format!("ei-poisson-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!("| target | pasted box | ours (ms) | OpenCV (ms) | ours / OpenCV |");
    println!("|---|---|---|---|---|");
    for side in [256u32, 512] {
        let target = concrete_frame(side, side, 1, &[]);
        // A crack source covering about half the target's side, with a wandering dark line.
        let (sw, sh) = (side / 2, side / 2);
        let mut source = concrete_frame(sw, sh, 2, &[]);
        let mut mask = GrayImage::new(sw, sh);
        for x in 8..sw - 8 {
            let y = (sh as f32 / 2.0 + (sh as f32 / 5.0) * (x as f32 / 13.0).sin()) as u32;
            for yy in y - 4..=y + 4 {
                mask.put_pixel(x, yy, Luma([255]));
                if yy.abs_diff(y) <= 1 {
                    source.put_pixel(x, yy, Rgb([30, 28, 26]));
                }
            }
        }
        let at = (side as i64 / 2, side as i64 / 2);
        let mut times: Vec<f64> = (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                seamless_clone(&source, &target, &mask, at).unwrap();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(|a, b| a.total_cmp(b));
        let ours = times[RUNS / 2];
        let paths: Vec<_> = ["t.png", "s.png", "m.png"]
            .iter()
            .map(|n| dir.join(format!("{side}-{n}")))
            .collect();
        target.save(&paths[0]).unwrap();
        source.save(&paths[1]).unwrap();
        mask.save(&paths[2]).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/opencv_blend_bench.py");
        let opencv: Option<f64> = Command::new("python3")
            .arg(script)
            .args(&paths)
            .arg(at.0.to_string())
            .arg(at.1.to_string())
            .arg(RUNS.to_string())
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok());
        let (cv, ratio) = match opencv {
            Some(cv) => (format!("{cv:.2}"), format!("{:.2}", ours / cv)),
            None => ("n/a".into(), "n/a".into()),
        };
        println!("| {side}x{side} | {sw}x{sh} source | {ours:.2} | {cv} | {ratio} |");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
