//! The trainer's speed: one epoch of `inspect-train fit`'s loop on cached features, against
//! CFlow-AD's own training loop (FrEIA + PyTorch, tests/reference/cflow_train.py) on the same
//! features, threads and objective.
//!
//! ```sh
//! cargo bench --features train --bench trainer -- [--images 96] [--threads 1,2] \
//!     [--loss none,fusion] [--burn] [--no-reference]
//! cargo bench --features wgpu --bench trainer -- --wgpu [--threads 1]
//! ```
//!
//! `--wgpu` adds a row per objective for burn on the GPU wgpu finds (build with `--features
//! wgpu`), beside the reference on CUDA where PyTorch sees a GPU (on its CPU otherwise).
//!
//! The features have EfficientNet-Lite0's tap shapes at 256 px (40 x 32 x 32, 112 x 16 x 16,
//! 320 x 8 x 8), values drawn at random (the work per step does not depend on them), each image
//! with one augmentation whose fibers differ on a pasted square and, a little, within the
//! extractor's reach of it (as much of each level as on magnetic-tile). They go through the trainer's
//! own feature cache, as in `fit`; the reference reads the same values from raw files. Figures
//! are per epoch of 755 images (magnetic-tile's training set), scaled from `--images`.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use inspect_core::random::SplitMix;
use inspect_train::features::build::CachedImage;
use inspect_train::features::cache::{FeatureCache, FeatureRecord, RecordKey};
use inspect_train::features::Level;
use inspect_train::losses::Objective;
use inspect_train::train::fit::{LevelShape, Trainer};
use inspect_train::train::settings::TrainSettings;
use inspect_train::train::Backend;

/// Lite0's taps at 256 px: name, channels, side.
const LEVELS: [(&str, usize, usize); 3] = [("tap8", 40, 32), ("tap16", 112, 16), ("tap32", 320, 8)];
/// How far (in cells of each level) a paste changes the augmented fibers.
const REACH: [usize; 3] = [4, 16, 8];
/// Images of magnetic-tile's training split: the epoch the figures are scaled to.
const EPOCH_IMAGES: f64 = 755.0;

struct Options {
    images: usize,
    threads: Vec<usize>,
    losses: Vec<Objective>,
    burn: bool,
    wgpu: bool,
    reference: bool,
}

fn options() -> Options {
    let mut o = Options {
        images: 96,
        threads: vec![1, 2],
        losses: vec![Objective::None, Objective::Fusion],
        burn: false,
        wgpu: false,
        reference: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match a.as_str() {
            "--images" => o.images = value().parse().expect("--images N"),
            "--threads" => {
                o.threads = value()
                    .split(',')
                    .map(|t| t.parse().expect("--threads 1,2"))
                    .collect()
            }
            "--loss" => {
                o.losses = value()
                    .split(',')
                    .map(|l| match l {
                        "none" => Objective::None,
                        "fusion" => Objective::Fusion,
                        other => panic!("--loss none,fusion (not {other})"),
                    })
                    .collect()
            }
            "--burn" => o.burn = true,
            "--wgpu" => o.wgpu = true,
            "--no-reference" => o.reference = false,
            // cargo bench passes --bench
            _ => {}
        }
    }
    o
}

/// Writes `images` real and augmented records into `cache` and the same values into
/// `dir/features.bin`, `dir/masks.bin`, `dir/meta.json` for the reference.
fn features(dir: &Path, cache: &FeatureCache, images: usize) -> Vec<CachedImage> {
    let mut rng = SplitMix::new(2026);
    let mut gauss = move || {
        let (u, v) = (1.0 - rng.unit(), rng.unit());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let mut raw = std::io::BufWriter::new(std::fs::File::create(dir.join("features.bin")).unwrap());
    let mut masks_raw = Vec::new();
    let mut out = Vec::new();
    for i in 0..images {
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let (mut real, mut aug) = (Vec::new(), Vec::new());
        let mut masks = Vec::new();
        for ((name, c, side), reach) in LEVELS.into_iter().zip(REACH) {
            let plane = side * side;
            let data: Vec<f32> = (0..c * plane).map(|_| gauss()).collect();
            // A square of a quarter of the side, somewhere in the map, is the "defect".
            let (x0, y0) = (i % (side - side / 4), (i * 7) % (side - side / 4));
            let mut mask = vec![0u8; plane];
            for y in y0..y0 + side / 4 {
                for x in x0..x0 + side / 4 {
                    mask[y * side + x] = 1;
                }
            }
            // The paste changes the fibers within the extractor's reach of it, the others
            // stay equal to the real ones bit for bit (the trainer shares their pass). The
            // reach in cells matches what magnetic-tile measured: 23% of the stride-8 fibers
            // changed, 97% at stride 16, all at stride 32.
            let near = |p: usize| {
                let (y, x) = (p / side, p % side);
                y + reach >= y0
                    && y < y0 + side / 4 + reach
                    && x + reach >= x0
                    && x < x0 + side / 4 + reach
            };
            let mut bumped = data.clone();
            for ch in 0..c {
                for p in 0..plane {
                    if mask[p] == 1 {
                        bumped[ch * plane + p] += 1.5;
                    } else if near(p) {
                        bumped[ch * plane + p] += 0.05 * gauss();
                    }
                }
            }
            for v in data.iter().chain(&bumped) {
                raw.write_all(&v.to_le_bytes()).unwrap();
            }
            masks_raw.extend_from_slice(&mask);
            let level = |data: Vec<f32>| Level {
                name: name.into(),
                channels: c as u32,
                height: side as u32,
                width: side as u32,
                data,
            };
            real.push(level(data));
            aug.push(level(bumped));
            masks.push(mask);
        }
        let keys = vec![
            RecordKey::Image { image: hash },
            RecordKey::Augmented {
                image: hash,
                synthesis: [1; 32],
                seed: 0,
            },
        ];
        cache
            .store(
                &keys[0],
                &FeatureRecord {
                    levels: real,
                    masks: Vec::new(),
                },
            )
            .unwrap();
        cache
            .store(&keys[1], &FeatureRecord { levels: aug, masks })
            .unwrap();
        out.push(CachedImage {
            image: dir.join(format!("image-{i}.png")),
            keys,
        });
    }
    raw.flush().unwrap();
    std::fs::write(dir.join("masks.bin"), masks_raw).unwrap();
    let s = TrainSettings::default();
    let meta = serde_json::json!({
        "images": images,
        "levels": LEVELS.iter().map(|(_, c, side)| serde_json::json!({
            "channels": c, "height": side, "width": side})).collect::<Vec<_>>(),
        "image_batch": s.image_batch,
        "fiber_batch": s.fiber_batch,
        "lr": s.lr,
        "margin": s.likelihood_margin,
    });
    std::fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
    out
}

/// Seconds of one epoch of the project's trainer, and fibers/s per level.
fn project(
    cache: &FeatureCache,
    images: &[CachedImage],
    objective: Objective,
    backend: Backend,
) -> (f64, Vec<f64>, f64) {
    let settings = TrainSettings {
        objective,
        contrastive_start_epoch: 0,
        epochs: 1,
        ..TrainSettings::default()
    };
    let shapes = LEVELS
        .iter()
        .map(|&(name, c, side)| LevelShape {
            name: name.into(),
            channels: c,
            height: side,
            width: side,
        })
        .collect();
    let mut trainer = Trainer::new(shapes, settings, backend);
    let log = trainer.epoch(0, cache, images, false).expect("an epoch");
    let rates = log
        .level_fibers
        .iter()
        .zip(&log.level_seconds)
        .map(|(f, s)| *f as f64 / s.max(1e-9))
        .collect();
    (log.seconds, rates, log.nf)
}

/// Seconds of the reference's epoch, or why there is none.
fn reference(
    dir: &Path,
    threads: usize,
    objective: Objective,
    device: &str,
) -> Result<f64, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/reference/cflow_train.py");
    let loss = if objective == Objective::None {
        "none"
    } else {
        "fusion"
    };
    let out = Command::new("python3")
        .arg(script)
        .arg(dir)
        .args(["--threads", &threads.to_string(), "--loss", loss])
        .args(["--device", device])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("failed").to_string());
    }
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    line["seconds"].as_f64().ok_or_else(|| "no seconds".into())
}

/// The table's reference cells for a project epoch of `seconds`: the reference's epoch (scaled)
/// and the ratio, or why there is none.
fn reference_cells(
    o: &Options,
    dir: &Path,
    threads: usize,
    objective: Objective,
    device: &str,
    seconds: f64,
    scale: f64,
) -> (String, String) {
    if !o.reference {
        return ("-".into(), "-".into());
    }
    match reference(dir, threads, objective, device) {
        Ok(r) => {
            let on = if device == "cpu" { "" } else { " (CUDA)" };
            (
                format!("{:.1}{on}", r * scale),
                format!("**{:.2}**", seconds / r),
            )
        }
        Err(why) => (format!("({why})"), "-".into()),
    }
}

/// One epoch of burn on the GPU wgpu finds, against the reference on CUDA.
#[cfg(feature = "wgpu")]
fn gpu_row(
    o: &Options,
    dir: &Path,
    cache: &FeatureCache,
    images: &[CachedImage],
    objective: Objective,
    scale: f64,
) {
    let device = burn::tensor::Device::wgpu(Default::default()).autodiff();
    // The first epoch compiles every kernel and autotunes the matrix products: time the second.
    let _ = project(cache, images, objective, Backend::Burn(device.clone()));
    let (seconds, rates, nf) = project(cache, images, objective, Backend::Burn(device));
    let rates: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    let (reference, ratio) = reference_cells(o, dir, 1, objective, "cuda", seconds, scale);
    println!(
        "| {objective:?} (burn-wgpu) | GPU | {:.1} | {} | {nf:.4} | {reference} | {ratio} |",
        seconds * scale,
        rates.join(" / ")
    );
}

#[cfg(not(feature = "wgpu"))]
fn gpu_row(_: &Options, _: &Path, _: &FeatureCache, _: &[CachedImage], _: Objective, _: f64) {
    println!("(--wgpu: this build has no wgpu backend; build with --features wgpu)");
}

fn main() {
    let o = options();
    let dir = std::env::temp_dir().join(format!(
        "edge-inspector-trainer-bench-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cache = FeatureCache::open(&dir.join("cache"), &[7; 32]).unwrap();
    let images = features(&dir, &cache, o.images);
    let scale = EPOCH_IMAGES / o.images as f64;
    println!(
        "trainer: {} images (figures scaled to a {EPOCH_IMAGES}-image epoch), Lite0 taps at 256 px, \
         8 blocks, 256 fibers per step",
        o.images
    );
    println!("\n| objective | threads | project s/epoch | fibers/s (stride 8 / 16 / 32) | L_NF | reference s/epoch | ratio |");
    println!("|---|---|---|---|---|---|---|");
    for &objective in &o.losses {
        for &threads in &o.threads {
            let (seconds, rates, nf) =
                project(&cache, &images, objective, Backend::Cpu { threads });
            let rates: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
            let (reference, ratio) =
                reference_cells(&o, &dir, threads, objective, "cpu", seconds, scale);
            println!(
                "| {objective:?} | {threads} | {:.1} | {} | {nf:.4} | {reference} | {ratio} |",
                seconds * scale,
                rates.join(" / "),
            );
        }
        if o.burn {
            let device = burn::tensor::Device::flex().autodiff();
            let (seconds, rates, nf) = project(&cache, &images, objective, Backend::Burn(device));
            let rates: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
            println!(
                "| {objective:?} (burn-cpu) | 1 | {:.1} | {} | {nf:.4} | - | - |",
                seconds * scale,
                rates.join(" / ")
            );
        }
        if o.wgpu {
            gpu_row(&o, &dir, &cache, &images, objective, scale);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
