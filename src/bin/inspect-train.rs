//! `inspect-train`: the offline trainer's command line (feature `train`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edge_inspector::dataset::crops::{prepare_crops, CropProtocol};
use edge_inspector::dataset::{load_image, with_masks};
use edge_inspector::extractor::adopt::adopt;
use edge_inspector::extractor::efficientnet::{
    build_lite0, calibrate, calibration_images, BuildOptions, Precision, LITE0_TAPS,
};
use edge_inspector::extractor::Checkpoint;
use edge_inspector::synth::poisson::seamless_clone;

/// Builds extractors and trains, evaluates and exports edge-inspector models.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the feature extractor as ONNX: EfficientNet-Lite0 from ImageNet weights, or any
    /// ONNX model with named taps.
    Extractor {
        /// PyTorch checkpoint of EfficientNet-Lite0 (legacy or zip format).
        #[arg(long, conflicts_with = "onnx", required_unless_present = "onnx")]
        weights: Option<PathBuf>,
        /// An ONNX model exported elsewhere, to tap with --taps.
        #[arg(long, requires = "taps")]
        onnx: Option<PathBuf>,
        /// Comma-separated tensor names to expose as the taps (with --onnx).
        #[arg(long, value_delimiter = ',')]
        taps: Vec<String>,
        /// Input side in pixels (a multiple of 32).
        #[arg(long, default_value_t = 256)]
        size: usize,
        /// Also output the 1000 ImageNet logits as `logits` (for verification).
        #[arg(long)]
        with_classifier: bool,
        /// Quantize to int8 (QLinearConv), calibrated on the defect-free images of this folder.
        #[arg(long, value_name = "FOLDER")]
        int8_calibration: Option<PathBuf>,
        /// Calibration images to use from the folder (spread evenly over it).
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=4096))]
        calibration_images: u16,
        /// Quantize the depthwise convolutions too (default: keep them in float).
        #[arg(long, requires = "int8_calibration")]
        int8_depthwise: bool,
        /// Output ONNX file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Paste the masked part of SOURCE into TARGET centred at X,Y with Poisson image editing
    /// (OpenCV NORMAL_CLONE semantics) and write the result.
    Blend {
        /// Image to paste into.
        #[arg(long)]
        target: PathBuf,
        /// Image to cut from.
        #[arg(long)]
        source: PathBuf,
        /// Mask of the part of SOURCE to paste (> 127 is pasted), same size as SOURCE.
        #[arg(long)]
        mask: PathBuf,
        /// Centre of the paste in TARGET pixels, `X,Y`.
        #[arg(long, value_parser = parse_point)]
        at: (i64, i64),
        /// Output image.
        #[arg(long)]
        out: PathBuf,
    },
    /// Cut whole images with crack masks into a k x k grid (the paper's crop protocol) and
    /// write an MVTec AD layout: crack-free crops of the first images for training, all crops
    /// of the next images for testing.
    PrepareCrops {
        /// Folder of source images.
        #[arg(long)]
        images: PathBuf,
        /// Folder of masks, same file stems as the images.
        #[arg(long)]
        masks: PathBuf,
        /// Cells per side.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
        grid: u32,
        /// Source images for training (default: the first half).
        #[arg(long)]
        train_images: Option<usize>,
        /// Source images for testing (default: the rest).
        #[arg(long)]
        test_images: Option<usize>,
        /// Output folder (MVTec AD layout).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Parses `X,Y`.
fn parse_point(text: &str) -> Result<(i64, i64), String> {
    let bad = || format!("{text:?} is not X,Y (two integers separated by a comma)");
    let (x, y) = text.split_once(',').ok_or_else(bad)?;
    Ok((
        x.trim().parse().map_err(|_| bad())?,
        y.trim().parse().map_err(|_| bad())?,
    ))
}

fn prepare(
    images: &std::path::Path,
    masks: &std::path::Path,
    grid: u32,
    train_images: Option<usize>,
    test_images: Option<usize>,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let total = with_masks(images, masks, "crack")?.len();
    let train = train_images.unwrap_or(total / 2);
    let test = test_images.unwrap_or(total.saturating_sub(train));
    let protocol = CropProtocol {
        grid,
        train_images: train,
        test_images: test,
    };
    let s = prepare_crops(images, masks, &protocol, out)?;
    println!(
        "{}: {train} training images -> {} train/good ({} cracked crops left out); \
         {test} test images -> {} test/good, {} test/crack",
        out.display(),
        s.train_good,
        s.train_dropped,
        s.test_good,
        s.test_crack
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match Cli::parse().command {
        Command::Blend {
            target,
            source,
            mask,
            at,
            out,
        } => {
            let t = load_image(&target)?;
            let s = load_image(&source)?;
            let m = image::open(&mask)
                .with_context(|| format!("reading {}", mask.display()))?
                .into_luma8();
            let blended = seamless_clone(&s, &t, &m, at).with_context(|| {
                format!("blending {} into {}", source.display(), target.display())
            })?;
            blended
                .save(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{}", out.display());
            Ok(())
        }
        Command::PrepareCrops {
            images,
            masks,
            grid,
            train_images,
            test_images,
            out,
        } => prepare(&images, &masks, grid, train_images, test_images, &out),
        Command::Extractor {
            weights,
            onnx,
            taps,
            size,
            with_classifier,
            int8_calibration,
            calibration_images: count,
            int8_depthwise,
            out,
        } => {
            if let Some(model) = onnx {
                adopt(&model, &taps, &out)?;
                println!("{}: taps {}", out.display(), taps.join(", "));
                return Ok(());
            }
            let weights = weights.context("--weights or --onnx is required")?;
            let ckpt = Checkpoint::read(&weights)?;
            let ranges = match &int8_calibration {
                Some(folder) => {
                    let images = calibration_images(folder, count as usize, size)?;
                    log::info!(
                        "calibrating on {} images of {}",
                        images.len(),
                        folder.display()
                    );
                    Some(calibrate(
                        &ckpt,
                        size,
                        with_classifier,
                        images.iter().map(|i| i.as_slice()),
                    )?)
                }
                None => None,
            };
            let precision = match &ranges {
                Some(ranges) => Precision::Int8 {
                    ranges,
                    int8_depthwise,
                },
                None => Precision::F32,
            };
            let bytes = build_lite0(
                &ckpt,
                &BuildOptions {
                    input_size: size,
                    with_classifier,
                    precision,
                },
            )?;
            std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
            let taps: Vec<String> = LITE0_TAPS
                .iter()
                .map(|t| format!("{} ({} ch, stride {})", t.name, t.channels, t.stride))
                .collect();
            println!(
                "{}: EfficientNet-Lite0 at {size}x{size}, {}, {} tensors read, taps {}",
                out.display(),
                match precision {
                    Precision::F32 => "float32".to_string(),
                    Precision::Int8 { int8_depthwise, .. } => format!(
                        "int8 ({} depthwise)",
                        if int8_depthwise { "int8" } else { "float" }
                    ),
                },
                ckpt.len(),
                taps.join(", ")
            );
            Ok(())
        }
    }
}
