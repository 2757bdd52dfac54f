//! `inspect-train`: the offline trainer's command line (feature `train`).

use std::path::PathBuf;

use anyhow::Context;

use clap::{Parser, Subcommand};
use inspect_core::detector::Tiling;
use inspect_train::dataset::crops::{Fold, Split};
use inspect_train::dataset::list_images;
use inspect_train::eval::evaluate;
use inspect_train::extractor::adopt::adopt;
use inspect_train::extractor::efficientnet::{TapPoint, Variant};
use inspect_train::ladder::{ladder_markdown, read_ladder};
use inspect_train::losses::Objective;
use inspect_train::score_choice::{
    compare_candidates, default_candidates, markdown_table, Calibration, ComparisonJob,
    HeldOutFold, PostProcessing,
};
use inspect_train::sweep::table_markdown;
use inspect_train::train::calibrate::{
    calibrate_bundle_on, calibration_sample, HeldOut, ThresholdSample,
};
use inspect_train::workflows::crops::{prepare_split, CropRequest};
use inspect_train::workflows::enroll::{run_enroll, EnrollJob};
use inspect_train::workflows::extractor::{build_extractor, ExtractorJob, Int8Calibration};
use inspect_train::workflows::features::{fill_feature_cache, FeaturesJob};
use inspect_train::workflows::fit::{fit_bundle, TrainJob};
use inspect_train::workflows::sign::{keygen, public_key_path, sign_bundle};
use inspect_train::workflows::sweep::{join_sweeps, run_sweep, summarise_seeds, SweepJob};
use inspect_train::workflows::synth::{blend_files, synth_sheet, SheetJob};
use inspect_train::workflows::{threads_or_cores, TrainDevice};

/// Builds extractors and trains, evaluates and exports edge-inspector models.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The model to train and where: config, extractor, epochs, device (fit, sweep, enroll).
#[derive(clap::Args, Debug)]
struct ModelArgs {
    /// Trainer config: [training] (defaults if absent) and [synthesis] (needed by every
    /// objective but `none`; enroll's defect bank), e.g. train-config/enroll.toml.
    #[arg(long)]
    config: PathBuf,
    /// Extractor ONNX (input 1 x 3 x S x S; every output is a tap), e.g. the shipped bundle's
    /// extractor.onnx.
    #[arg(long)]
    extractor: PathBuf,
    /// Human name of the extractor for the manifest.
    #[arg(long, default_value = "efficientnet-lite0")]
    extractor_name: String,
    /// Override `training.epochs`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    epochs: Option<u32>,
    /// Where the flows train.
    #[arg(long, value_enum, default_value_t = TrainDevice::Cpu)]
    device: TrainDevice,
    /// Threads of the CPU trainer (`--device cpu`); the levels train concurrently, so more
    /// threads than levels bring nothing (default: every core, at most the levels).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: Option<u32>,
}

/// What every training command reads: the model's arguments, images, cache, held-out images.
#[derive(clap::Args, Debug)]
struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder of defect-free training images.
    #[arg(long)]
    images: PathBuf,
    /// Feature cache root.
    #[arg(long)]
    cache: PathBuf,
    /// Extraction workers (default: every core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    workers: Option<u32>,
    /// Folder of defect-free images the flows never train on, for the threshold (e.g. frames
    /// of another pass; default: `training.holdout_fraction` of --images, by hash).
    #[arg(long)]
    holdout: Option<PathBuf>,
    /// Cut the --holdout images into tiles of this side as the daemon cuts frames (default:
    /// each is one tile).
    #[arg(long, requires = "holdout", value_parser = clap::value_parser!(u32).range(32..=4096))]
    holdout_tile_size: Option<u32>,
    /// Pixels shared by neighbouring held-out tiles (at most half a tile).
    #[arg(long, default_value_t = 0)]
    holdout_overlap: u32,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the feature extractor as ONNX: EfficientNet-Lite0, Lite1 or Lite2 from ImageNet
    /// weights, or any ONNX model with named taps.
    Extractor {
        /// PyTorch checkpoint of the EfficientNet-Lite variant (legacy or zip format).
        #[arg(long, conflicts_with = "onnx", required_unless_present = "onnx")]
        weights: Option<PathBuf>,
        /// Which EfficientNet-Lite the weights are.
        #[arg(long, value_enum, default_value_t = Variant::Lite0)]
        variant: Variant,
        /// Where the taps read their blocks: after the residual add (stride 32 from stage 6)
        /// or before it, as CFlow-AD's code hooks them (stride 32 from stage 5).
        #[arg(long, value_enum, default_value_t = TapPoint::BlockOutput)]
        tap_point: TapPoint,
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
        /// Feature levels (1: stride 8; 2: strides 8, 16; 3: strides 8, 16, 32).
        /// Fewer levels end the network earlier: a smaller, faster extractor and head.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
        levels: u8,
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
    /// Write a contact sheet of synthetic anomalies: for images spread over FOLDER, the image,
    /// its first augmentation (exactly what the feature cache holds) and that with the mask's
    /// outline in red.
    SynthSheet {
        /// Trainer config with a [synthesis] table.
        #[arg(long)]
        synthesis: PathBuf,
        /// Folder of defect-free images.
        #[arg(long)]
        images: PathBuf,
        /// Samples on the sheet.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
        count: u32,
        /// Side the images are resized to before pasting (the extractor's input size).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(32..=2048))]
        size: u32,
        /// Side of each picture on the sheet.
        #[arg(long, default_value_t = 192, value_parser = clap::value_parser!(u32).range(32..=1024))]
        cell: u32,
        /// Output PNG.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the extractor once over every image of FOLDER and its augmentations and cache the
    /// taps (with the masks M of the augmentations) under CACHE, keyed by the extractor's hash,
    /// the image's hash and the augmentation seed. Intact records are kept.
    Features {
        /// Extractor ONNX (input 1 x 3 x S x S; every output is a tap).
        #[arg(long)]
        extractor: PathBuf,
        /// Folder of defect-free training images.
        #[arg(long)]
        images: PathBuf,
        /// Trainer config with a [synthesis] table (omit for the images alone).
        #[arg(long)]
        synthesis: Option<PathBuf>,
        /// Cache root.
        #[arg(long)]
        cache: PathBuf,
        /// Worker threads (default: every core).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
        workers: Option<u32>,
    },
    /// Train the flows on defect-free images (features cached first), export them with the
    /// extractor as a bundle, calibrate the score and choose the threshold on held-out images.
    Fit {
        #[command(flatten)]
        train: TrainArgs,
        /// Override `training.objective`.
        #[arg(long, value_enum)]
        loss: Option<Objective>,
        /// Checkpoint written after every epoch (default: the output folder's path + `.ckpt`).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Go on from the checkpoint if there is one.
        #[arg(long)]
        resume: bool,
        /// Output bundle folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Evaluate a bundle on the test split of an MVTec-layout dataset as the daemon runs it:
    /// writes metrics.json (pixel AUROC, AUPRO, image AUROC, tile precision/recall/F1 and false
    /// alarms per 1000 defect-free tiles at the bundle's threshold) and heatmaps.png.
    Eval {
        /// The bundle folder.
        #[arg(long)]
        bundle: PathBuf,
        /// Dataset root (MVTec AD layout).
        #[arg(long)]
        data: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// At most this many test images per class.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Calibrate a bundle again, in place: the score's constants on defect-free training
    /// images, the threshold for the target false-alarm rate on held-out defect-free images,
    /// optionally with another tile post-processing (see score-candidates). Only the manifest
    /// changes.
    Calibrate {
        /// The bundle folder.
        #[arg(long)]
        bundle: PathBuf,
        /// Folder of the defect-free images the flows trained on (up to 200 are used, spread).
        #[arg(long)]
        images: PathBuf,
        /// Folder of defect-free images the flows never saw.
        #[arg(long, required_unless_present = "fold", conflicts_with = "fold")]
        holdout: Option<PathBuf>,
        /// BUNDLE=IMAGES, repeated: set the threshold out of fold instead, as `score-candidates
        /// --fold` does (each fold's bundle trained as this one, without the fold's images, and
        /// calibrated for the same smoothing and level weights).
        #[arg(long, value_parser = parse_fold_holdout)]
        fold: Vec<HeldOutFold>,
        /// Target false-alarm rate per defect-free tile (0 < rate < 1).
        #[arg(long, default_value_t = 0.01, value_parser = parse_rate)]
        rate: f64,
        /// Level weights, comma-separated, one per level (default: the bundle's).
        #[arg(long, value_delimiter = ',')]
        level_weights: Option<Vec<f32>>,
        /// Gaussian smoothing sigma of the map in model pixels, 0-32 (default: the bundle's).
        #[arg(long)]
        smoothing_sigma: Option<f32>,
        /// Tile score as the mean of this top fraction of the map, 0-1; 0 = the maximum
        /// (default: the bundle's).
        #[arg(long)]
        top_fraction: Option<f32>,
        /// Share of the mean score of a frame's tiles subtracted from each, 0-1; 0 = none
        /// (default: the bundle's).
        #[arg(long)]
        frame_weight: Option<f32>,
        /// How held-out frames are cut (default: each held-out image is one tile).
        #[command(flatten)]
        tiling: TilingArgs,
    },
    /// Compare ways of deciding tiles (level weights, map smoothing, tile statistic) on a test
    /// split: tile AUROC and detection at the target false-alarm rate per candidate, and with
    /// --holdout the threshold calibrated there and its false-alarm rate on the test split.
    /// Writes OUT/candidates.md, candidates.json, tile_roc.png and tile_roc_low.png (up to 10%
    /// false alarms).
    ScoreCandidates {
        /// The bundle folder.
        #[arg(long)]
        bundle: PathBuf,
        /// Dataset root (MVTec AD layout) whose test split is scored.
        #[arg(long)]
        data: PathBuf,
        /// Images the flows never saw, for calibrated thresholds: a folder of defect-free
        /// images, or an MVTec-layout dataset whose test split holds whole held-out frames with
        /// masks (all tiles in the frame means, the defect-free ones in the false-alarm sample).
        #[arg(long, conflicts_with = "fold")]
        holdout: Option<PathBuf>,
        /// BUNDLE=IMAGES, repeated: calibrate out of fold instead, each fold's held-out images
        /// (either form of --holdout; `prepare-crops --fold` writes them) scored by the bundle
        /// trained without them, the defect-free tiles of all folds pooled.
        #[arg(long, value_parser = parse_fold_holdout)]
        fold: Vec<HeldOutFold>,
        /// Target false-alarm rate per defect-free tile (0 < rate < 1).
        #[arg(long, default_value_t = 0.01, value_parser = parse_rate)]
        rate: f64,
        /// At most this many test images per class.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// How test images are cut (default: each image resized whole is one tile, as `eval`
        /// does).
        #[command(flatten)]
        tiling: TilingArgs,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Train and evaluate one bundle per objective on a dataset (the paper's Table 1 and
    /// Figure 1): OUT/bundle-LOSS, OUT/eval-LOSS, and OUT/table.md, table.csv, sweep.json,
    /// figure.png, roc.png, pro.png. Finished objectives are picked up from their checkpoints.
    Sweep {
        #[command(flatten)]
        train: TrainArgs,
        /// Evaluation dataset root (MVTec AD layout).
        #[arg(long)]
        data: PathBuf,
        /// Objectives to compare, comma-separated.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "none,boundary,cl,likelihood,fusion"
        )]
        losses: Vec<Objective>,
        /// At most this many test images per class in the evaluations.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// Column title in the table (default: the data folder's name).
        #[arg(long)]
        name: Option<String>,
        /// Example images in the figure.
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=8))]
        examples: u32,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Join the sweep.json of several sweeps into one table (one column per sweep), written as
    /// OUT.md and OUT.csv.
    Table {
        /// Sweep folders, comma-separated, in column order.
        #[arg(long, value_delimiter = ',', required = true)]
        sweeps: Vec<PathBuf>,
        /// The sweeps are seeds of one setup: write the mean and standard deviation per
        /// objective and each objective against L_none (OUT.md, OUT.json, OUT.csv) and the
        /// seeds' spread as a chart (OUT.png) instead.
        #[arg(long)]
        seeds: bool,
        /// Output path without extension.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a key pair for signing bundles: OUT (the secret, 64 hex digits, mode 0600; keep it
    /// off the devices) and OUT.pub (the public key: the daemon's `model.public_key`).
    Keygen {
        /// Secret key file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Enroll a new site: from a recorded defect-free run (inspectd's [record]) to a calibrated
    /// bundle for it. One frame in --holdout-every is kept for the threshold; the others are
    /// cut into tiles as the daemon cuts frames (at most --max-tiles, spread over the run) and
    /// the flows train on them with the config's synthetic anomalies. Writes the bundle (signed
    /// with --sign-key) and OUT/enrollment.json; the work folder lets a second run resume.
    Enroll {
        /// The recorded folder (frames and positions.csv).
        #[arg(long)]
        recording: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// The daemon's tile side ([tiling] tile_size).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(32..=4096))]
        tile_size: u32,
        /// The daemon's tile overlap ([tiling] overlap; at most half a tile).
        #[arg(long, default_value_t = 32)]
        overlap: u32,
        /// Keep one frame in this many for the threshold, 2-1000.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=1000))]
        holdout_every: u32,
        /// Train on at most this many tiles, spread over the run.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
        max_tiles: u32,
        /// Work folder (default: OUT.work).
        #[arg(long)]
        work: Option<PathBuf>,
        /// Sign the bundle with this secret key (from `keygen`).
        #[arg(long, requires = "version")]
        sign_key: Option<PathBuf>,
        /// Release number for the signature, 1 or more.
        #[arg(long, requires = "sign_key", value_parser = clap::value_parser!(u64).range(1..))]
        version: Option<u64>,
        /// Output bundle folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a bundle for devices that hold the public key: sets its `bundle_version` (raise it
    /// with every release: devices refuse older ones) and writes manifest.sig.
    Sign {
        /// The bundle folder.
        #[arg(long)]
        bundle: PathBuf,
        /// Secret key file from `keygen`.
        #[arg(long)]
        key: PathBuf,
        /// Release number, 1 or more.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        version: u64,
    },
    /// Arrange the extractor ladder (benches/extractor_ladder.sh): every
    /// ROOT/DATASET/EXTRACTOR/eval/metrics.json as one table per dataset, with the
    /// Pareto-optimal extractors (tile detection at the target rate against ms per tile)
    /// marked; written as OUT.md and OUT.json.
    Ladder {
        /// Root of the ladder's runs.
        #[arg(long)]
        root: PathBuf,
        /// Output path without extension.
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
        /// How the images, in file-name order, are dealt: `blocks` (the first ones train, the
        /// next ones test) or `interleaved` (in turn, so every photo series lands on both
        /// sides).
        #[arg(long, default_value = "blocks", value_parser = parse_split)]
        split: Split,
        /// K/N: write fold K (1..=N) of N folds of the training images (contiguous blocks, or
        /// dealt in turn with `--split interleaved`) as the test set, whole frames with masks,
        /// and train on the rest (for thresholds calibrated out of fold: `score-candidates
        /// --fold`). The test images are not written.
        #[arg(long, value_parser = parse_fold)]
        fold: Option<Fold>,
        /// Output folder (MVTec AD layout).
        #[arg(long)]
        out: PathBuf,
    },
}

impl TrainArgs {
    fn job(&self) -> anyhow::Result<TrainJob> {
        let tiling = TilingArgs {
            tile_size: self.holdout_tile_size,
            overlap: self.holdout_overlap,
        }
        .tiling()?;
        Ok(TrainJob {
            holdout: self.holdout.clone().map(|dir| (dir, tiling)),
            config: self.model.config.clone(),
            extractor: self.model.extractor.clone(),
            extractor_name: self.model.extractor_name.clone(),
            images: self.images.clone(),
            cache: self.cache.clone(),
            epochs: self.model.epochs,
            device: self.model.device,
            threads: self.model.threads,
            workers: self.workers,
        })
    }
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

/// `n/a` or four decimals.
/// Images cut into tiles as the daemon cuts frames.
#[derive(clap::Args, Debug)]
struct TilingArgs {
    /// Cut images into tiles of this side as the daemon cuts frames.
    #[arg(long, value_parser = clap::value_parser!(u32).range(32..=4096))]
    tile_size: Option<u32>,
    /// Pixels shared by neighbouring tiles (with --tile-size; at most half a tile).
    #[arg(long, default_value_t = 0)]
    overlap: u32,
}

impl TilingArgs {
    /// The daemon's tiling (none without a tile size).
    fn tiling(&self) -> anyhow::Result<Option<Tiling>> {
        match self.tile_size {
            Some(tile_size) if self.overlap <= tile_size / 2 => Ok(Some(Tiling {
                tile_size,
                overlap: self.overlap,
            })),
            Some(tile_size) => anyhow::bail!(
                "--overlap {}: at most half the tile size ({})",
                self.overlap,
                tile_size / 2
            ),
            None => Ok(None),
        }
    }
}

/// `BUNDLE=IMAGES`: one fold of an out-of-fold calibration.
fn parse_fold_holdout(text: &str) -> Result<HeldOutFold, String> {
    match text.split_once('=') {
        Some((bundle, images)) if !bundle.is_empty() && !images.is_empty() => Ok(HeldOutFold {
            bundle: PathBuf::from(bundle),
            images: PathBuf::from(images),
        }),
        _ => Err(format!(
            "{text:?}: expected BUNDLE=IMAGES, e.g. work/fold-1/bundle=work/fold-1"
        )),
    }
}

/// `K/N`: block K (from 1) of N.
fn parse_fold(text: &str) -> Result<Fold, String> {
    let parsed = text.split_once('/').and_then(|(k, n)| {
        Some((
            k.trim().parse::<usize>().ok()?,
            n.trim().parse::<usize>().ok()?,
        ))
    });
    match parsed {
        Some((k, n)) if n >= 2 && (1..=n).contains(&k) => Ok(Fold {
            index: k - 1,
            count: n,
        }),
        _ => Err(format!(
            "{text:?}: expected K/N with 2 <= N and 1 <= K <= N, e.g. 2/5"
        )),
    }
}

/// `blocks` or `interleaved`.
fn parse_split(text: &str) -> Result<Split, String> {
    match text {
        "blocks" => Ok(Split::Blocks),
        "interleaved" => Ok(Split::Interleaved),
        _ => Err(format!("{text:?}: expected blocks or interleaved")),
    }
}

/// A rate strictly between 0 and 1.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r > 0.0 && r < 1.0 => Ok(r),
        _ => Err(format!(
            "{text:?}: expected a rate between 0 and 1 (exclusive), e.g. 0.01"
        )),
    }
}

fn show(v: Option<f64>) -> String {
    v.map_or("n/a".to_string(), |v| format!("{v:.4}"))
}

fn main() -> anyhow::Result<()> {
    // Before any thread starts: tract reads its kernel knobs once.
    inspect_core::engine::avoid_faulty_kernels();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match Cli::parse().command {
        Command::Blend {
            target,
            source,
            mask,
            at,
            out,
        } => {
            blend_files(&target, &source, &mask, at, &out)?;
            println!("{}", out.display());
        }
        Command::SynthSheet {
            synthesis,
            images,
            count,
            size,
            cell,
            out,
        } => {
            let job = SheetJob {
                synthesis,
                images,
                count: count as usize,
                size,
                cell,
                out,
            };
            let samples = synth_sheet(&job)?;
            println!("{}: {samples} samples", job.out.display());
        }
        Command::Features {
            extractor,
            images,
            synthesis,
            cache,
            workers,
        } => {
            let job = FeaturesJob {
                extractor,
                images,
                synthesis,
                cache,
                workers: threads_or_cores(workers),
            };
            let (dir, s) = fill_feature_cache(&job)?;
            let records: usize = s.images.iter().map(|i| i.keys.len()).sum();
            let rate = if s.computed > 0 {
                format!(
                    ", {:.1} ms per computed record",
                    1000.0 * s.seconds / s.computed as f64
                )
            } else {
                String::new()
            };
            println!(
                "{}: {} images, {records} records ({} cached, {} computed, {} repaired), \
                 {} unreadable images, {} failed augmentations, {:.1} s{rate}",
                dir.display(),
                s.images.len(),
                s.hits,
                s.computed,
                s.repaired,
                s.unreadable,
                s.failed_augmentations,
                s.seconds,
            );
        }
        Command::Fit {
            train,
            loss,
            checkpoint,
            resume,
            out,
        } => {
            let report = fit_bundle(&train.job()?, loss, checkpoint, resume, &out)?;
            println!(
                "{}: {} epochs on {} images; {}",
                out.display(),
                report.epochs.len(),
                report.train_images.len(),
                report.calibration
            );
        }
        Command::Eval {
            bundle,
            data,
            out,
            limit,
        } => {
            let r = evaluate(&bundle, &data, &out, limit.map(|l| l as usize), true)?.report;
            println!(
                "{}: {} images ({} defect-free): pixel AUROC {}, AUPRO {}, image AUROC {}; at \
                 threshold {:.4}: tile precision {:.3}, recall {:.3}, F1 {:.3}, {:.1} false alarms \
                 per 1000 defect-free tiles (95% interval {:.1}-{:.1}; calibrated for {}); \
                 tile AUROC {}, recall {:.3} at the test split's own threshold for {:.1}% false \
                 alarms; {:.1} ms per image",
                out.display(),
                r.images,
                r.good,
                show(r.pixel_auroc),
                show(r.aupro),
                show(r.image_auroc),
                r.threshold,
                r.tile_precision,
                r.tile_recall,
                r.tile_f1,
                r.false_alarms_per_1000,
                r.false_alarms_interval_per_1000.0,
                r.false_alarms_interval_per_1000.1,
                r.target_false_alarms_per_1000
                    .map_or("no rate (manual threshold)".into(), |t| format!("{t:.1}")),
                show(r.tile_auroc),
                r.tile_at_target.true_positive_rate(),
                100.0 * r.tile_at_target.false_alarm_rate(),
                1000.0 * r.seconds_per_image
            );
        }
        Command::Sweep {
            train,
            data,
            losses,
            limit,
            name,
            examples,
            out,
        } => {
            let column = run_sweep(&SweepJob {
                train: train.job()?,
                data,
                losses,
                limit: limit.map(|l| l as usize),
                name,
                examples: examples as usize,
                out: out.clone(),
            })?;
            print!("{}", table_markdown(std::slice::from_ref(&column)));
            println!(
                "{}: table.md, table.csv, figure.png, roc.png, pro.png",
                out.display()
            );
        }
        Command::Calibrate {
            bundle,
            images,
            holdout,
            fold,
            rate,
            level_weights,
            smoothing_sigma,
            top_fraction,
            frame_weight,
            tiling,
        } => {
            let tiling = tiling.tiling()?;
            let mut manifest = inspect_core::bundle::Bundle::load(&bundle)?.manifest;
            let mut post = PostProcessing::of(&manifest.score);
            if let Some(w) = level_weights {
                post.level_weights = w;
            }
            if let Some(sigma) = smoothing_sigma {
                post.smoothing_sigma = sigma;
            }
            if let Some(top) = top_fraction {
                post.top_fraction = top;
            }
            if let Some(w) = frame_weight {
                post.frame_weight = w;
            }
            // The manifest's own checks name a key out of range before any image is read.
            manifest.score = post.apply(&manifest.score);
            manifest
                .validate()
                .map_err(|e| anyhow::anyhow!("{}: {e}", bundle.display()))?;
            let calibration = calibration_sample(&list_images(&images)?);
            let own = match &holdout {
                Some(dir) => Some(HeldOut {
                    images: list_images(dir)?,
                    tiling,
                }),
                None => None,
            };
            let sample = match &own {
                Some(held_out) => ThresholdSample::HeldOut(held_out),
                None => ThresholdSample::OutOfFold {
                    folds: &fold,
                    tiling,
                },
            };
            let c = calibrate_bundle_on(&bundle, &post, &calibration, sample, rate)?;
            println!("{}: {}; {c}", bundle.display(), post.label());
        }
        Command::ScoreCandidates {
            bundle,
            data,
            holdout,
            fold,
            rate,
            limit,
            tiling,
            out,
        } => {
            let levels = inspect_core::bundle::Bundle::load(&bundle)?
                .manifest
                .levels
                .len();
            let tiling = tiling.tiling()?;

            let comparison = compare_candidates(ComparisonJob {
                bundle: &bundle,
                data: &data,
                calibration: match (&holdout, fold.is_empty()) {
                    (Some(dir), _) => Calibration::HeldOut(dir),
                    (None, false) => Calibration::OutOfFold(&fold),
                    (None, true) => Calibration::None,
                },
                rate,
                limit: limit.map(|l| l as usize),
                tiling,
                candidates: default_candidates(levels),
                out: &out,
            })?;
            print!("{}", markdown_table(&comparison));
            println!(
                "{}: candidates.md, candidates.json, tile_roc.png, tile_roc_low.png",
                out.display()
            );
        }
        Command::Table { sweeps, out, seeds } => {
            if seeds {
                print!("{}", summarise_seeds(&sweeps, &out)?);
            } else {
                let columns = join_sweeps(&sweeps, &out)?;
                print!("{}", table_markdown(&columns));
            }
        }
        Command::Keygen { out } => {
            let public = keygen(&out)?;
            println!(
                "{}: secret key (keep it off the devices); {}: public key {public} (the daemon's model.public_key)",
                out.display(),
                public_key_path(&out).display()
            );
        }
        Command::Enroll {
            recording,
            model,
            tile_size,
            overlap,
            holdout_every,
            max_tiles,
            work,
            sign_key,
            version,
            out,
        } => {
            if overlap > tile_size / 2 {
                anyhow::bail!(
                    "--overlap {overlap}: at most half the tile size ({})",
                    tile_size / 2
                );
            }
            let work = work.unwrap_or_else(|| {
                let mut name = out.as_os_str().to_owned();
                name.push(".work");
                PathBuf::from(name)
            });
            let summary = run_enroll(&EnrollJob {
                recording,
                config: model.config,
                extractor: model.extractor,
                extractor_name: model.extractor_name,
                tiling: Tiling { tile_size, overlap },
                holdout_every,
                max_tiles: max_tiles as usize,
                epochs: model.epochs,
                device: model.device,
                threads: model.threads,
                work,
                sign: sign_key.zip(version),
                out: out.clone(),
            })?;
            println!("{}: {summary}", out.display());
        }
        Command::Sign {
            bundle,
            key,
            version,
        } => {
            sign_bundle(&bundle, &key, version)?;
            println!("{}: signed as bundle_version {version}", bundle.display());
        }
        Command::Ladder { root, out } => {
            let rows = read_ladder(&root)?;
            if rows.is_empty() {
                anyhow::bail!("{}: no DATASET/EXTRACTOR/eval/metrics.json", root.display());
            }
            let markdown = ladder_markdown(&rows);
            std::fs::write(out.with_extension("md"), &markdown)
                .with_context(|| out.with_extension("md").display().to_string())?;
            std::fs::write(
                out.with_extension("json"),
                serde_json::to_string_pretty(&rows)?,
            )
            .with_context(|| out.with_extension("json").display().to_string())?;
            print!("{markdown}");
        }
        Command::PrepareCrops {
            images,
            masks,
            grid,
            train_images,
            test_images,
            split,
            fold,
            out,
        } => {
            let request = CropRequest {
                grid,
                train_images,
                test_images,
                split,
                held_out_fold: fold,
            };
            let s = prepare_split(&images, &masks, &request, &out)?;
            let trained = format!("{} training images", s.training_images);
            let tested = match fold {
                Some(f) => format!(
                    "{} training images held out whole (fold {} of {})",
                    s.test_images,
                    f.index + 1,
                    f.count
                ),
                None => format!("{} test images", s.test_images),
            };
            println!(
                "{}: {trained} -> {} train/good ({} cracked crops left out); \
                 {tested} -> {} test/good, {} test/crack",
                out.display(),
                s.train_good,
                s.train_dropped,
                s.test_good,
                s.test_crack
            );
        }
        Command::Extractor {
            weights,
            variant,
            tap_point,
            onnx,
            taps,
            size,
            with_classifier,
            levels,
            int8_calibration,
            calibration_images,
            int8_depthwise,
            out,
        } => {
            if let Some(model) = onnx {
                adopt(&model, &taps, &out)?;
                println!("{}: taps {}", out.display(), taps.join(", "));
                return Ok(());
            }
            let Some(weights) = weights else {
                anyhow::bail!("--weights or --onnx is required");
            };
            let job = ExtractorJob {
                weights,
                variant,
                tap_point,
                size,
                with_classifier,
                levels: usize::from(levels),
                int8: int8_calibration.map(|folder| Int8Calibration {
                    folder,
                    images: usize::from(calibration_images),
                    depthwise: int8_depthwise,
                }),
                out,
            };
            let built = build_extractor(&job)?;
            println!(
                "{}: {} at {size}x{size}, {}, {} tensors read, taps {}",
                job.out.display(),
                variant.name(),
                built.precision,
                built.tensors,
                built.taps.join(", ")
            );
        }
    }
    Ok(())
}
