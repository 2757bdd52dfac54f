//! `inspect-train`: the offline trainer's command line (feature `train`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edge_inspector::dataset::crops::{prepare_crops, CropProtocol};
use edge_inspector::dataset::{list_images, load_image, with_masks};
use edge_inspector::eval::{draw_pro, draw_roc, evaluate, Evaluation};
use edge_inspector::extractor::adopt::adopt;
use edge_inspector::extractor::efficientnet::{
    build_lite0, calibrate, calibration_images, BuildOptions, Precision, INPUT_MEAN, INPUT_STD,
    LITE0_TAPS,
};
use edge_inspector::extractor::Checkpoint;
use edge_inspector::features::build::CacheBuild;
use edge_inspector::features::cache::FeatureCache;
use edge_inspector::features::FeatureExtractor;
use edge_inspector::losses::Objective;
use edge_inspector::plots::Series;
use edge_inspector::sweep::{
    self, table_csv, table_markdown, SweepColumn, SweepEntry, TABLE_LEGEND,
};
use edge_inspector::synth::bank::{file_hash, Synthesizer};
use edge_inspector::synth::config::SynthesisSettings;
use edge_inspector::synth::poisson::seamless_clone;
use edge_inspector::synth::sheet::contact_sheet;
use edge_inspector::tiler::{resize_rgb, Normalization};
use edge_inspector::train::settings::TrainSettings;
use edge_inspector::train::{run_fit, Backend, FitJob};

/// Builds extractors and trains, evaluates and exports edge-inspector models.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What every training command reads: config, extractor, images, cache, and where it runs.
#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// Trainer config: [training] (defaults if absent) and [synthesis] (needed by every
    /// objective but `none`).
    #[arg(long)]
    config: PathBuf,
    /// Extractor ONNX (input 1 x 3 x S x S; every output is a tap).
    #[arg(long)]
    extractor: PathBuf,
    /// Human name of the extractor for the manifest.
    #[arg(long, default_value = "efficientnet-lite0")]
    extractor_name: String,
    /// Folder of defect-free training images.
    #[arg(long)]
    images: PathBuf,
    /// Feature cache root.
    #[arg(long)]
    cache: PathBuf,
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
    /// Extraction workers (default: every core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    workers: Option<u32>,
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
        /// Feature levels of Lite0 (1: stride 8; 2: strides 8, 16; 3: strides 8, 16, 32).
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
        /// Output folder (MVTec AD layout).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Where the flows train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TrainDevice {
    /// The hand-written CPU flow (always built; the fastest on a CPU).
    Cpu,
    /// burn's pure-Rust CPU backend (always built; the reference the CPU flow is tested against).
    BurnCpu,
    /// CUDA (build with `--features cuda`).
    Cuda,
    /// Vulkan through wgpu, SPIR-V kernels (build with `--features vulkan`).
    Vulkan,
    /// The GPU wgpu finds (Vulkan, Metal, DX12), WGSL kernels (build with `--features wgpu`).
    Wgpu,
}

/// The backend for `choice`: the CPU flow on `threads`, or a burn device with autodiff on.
fn backend(choice: TrainDevice, threads: Option<u32>) -> anyhow::Result<Backend> {
    use burn::tensor::Device;
    if threads.is_some() && choice != TrainDevice::Cpu {
        anyhow::bail!("--threads applies to --device cpu only");
    }
    let device = match choice {
        TrainDevice::Cpu => {
            let threads = threads.map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get()),
                |t| t as usize,
            );
            return Ok(Backend::Cpu { threads });
        }
        TrainDevice::BurnCpu => Device::flex(),
        #[cfg(feature = "cuda")]
        TrainDevice::Cuda => Device::cuda(0),
        #[cfg(feature = "vulkan")]
        TrainDevice::Vulkan => Device::vulkan(Default::default()),
        #[cfg(feature = "wgpu")]
        TrainDevice::Wgpu => Device::wgpu(Default::default()),
        #[allow(unreachable_patterns)]
        other => anyhow::bail!(
            "--device {other:?}: this build has no such backend (build with --features {})",
            format!("{other:?}").to_lowercase()
        ),
    };
    Ok(Backend::Burn(device.autodiff()))
}

fn fit(
    train: &TrainArgs,
    loss: Option<Objective>,
    checkpoint: Option<PathBuf>,
    resume: bool,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let &TrainArgs {
        ref config,
        ref extractor,
        ref extractor_name,
        ref images,
        ref cache,
        epochs,
        device,
        threads,
        workers,
    } = train;
    let checkpoint = checkpoint.unwrap_or_else(|| {
        let mut name = out.as_os_str().to_owned();
        name.push(".ckpt");
        PathBuf::from(name)
    });
    let mut settings = TrainSettings::load(config)?;
    if let Some(loss) = loss {
        settings.objective = loss;
    }
    if let Some(epochs) = epochs {
        settings.epochs = epochs;
        settings.warmup_epochs = settings.warmup_epochs.min(epochs);
    }
    settings.validate(config)?;
    let synth = if settings.objective == Objective::None {
        None
    } else {
        Some(Synthesizer::new(
            SynthesisSettings::load(config).with_context(|| {
                format!("--loss {:?} needs synthetic anomalies", settings.objective)
            })?,
        )?)
    };
    let onnx =
        std::fs::read(extractor).with_context(|| format!("reading {}", extractor.display()))?;
    let mut provenance = toml::Table::new();
    let text = |v: String| toml::Value::String(v);
    provenance.insert("images".into(), text(images.display().to_string()));
    provenance.insert(
        "objective".into(),
        text(format!("{:?}", settings.objective).to_lowercase()),
    );
    provenance.insert(
        "nf_loss".into(),
        text(format!("{:?}", settings.nf_loss).to_lowercase()),
    );
    provenance.insert(
        "epochs".into(),
        toml::Value::Integer(settings.epochs.into()),
    );
    provenance.insert("seed".into(), toml::Value::Integer(settings.seed as i64));
    provenance.insert("config".into(), text(config.display().to_string()));
    let workers = workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |w| w as usize,
    );
    let report = run_fit(
        FitJob {
            extractor: &onnx,
            extractor_name: extractor_name.clone(),
            normalization: Normalization {
                mean: INPUT_MEAN,
                std: INPUT_STD,
            },
            images: list_images(images)?,
            synthesizer: synth.as_ref(),
            cache_root: cache,
            settings,
            backend: backend(device, threads)?,
            workers,
            progress: true,
            out,
            provenance,
            checkpoint: Some(&checkpoint),
            resume,
        },
        &mut |log| log::info!("{log}"),
    )?;
    let c = &report.calibration;
    println!(
        "{}: {} epochs on {} images; offsets {:?}, reference {:.4}; threshold {:.4} \
         ({} of {} held-out images above)",
        out.display(),
        report.epochs.len(),
        report.train_images.len(),
        c.level_offsets,
        c.reference,
        c.threshold,
        c.holdout_alarms,
        c.holdout_scores.len()
    );
    Ok(())
}

/// Writes the paper's table of `columns` as `OUT.md` and `OUT.csv`.
fn write_tables(columns: &[SweepColumn], out: &std::path::Path) -> anyhow::Result<()> {
    let md = out.with_extension("md");
    std::fs::write(
        &md,
        format!("{TABLE_LEGEND}\n\n{}", table_markdown(columns)),
    )
    .with_context(|| format!("writing {}", md.display()))?;
    let csv = out.with_extension("csv");
    std::fs::write(&csv, table_csv(columns))
        .with_context(|| format!("writing {}", csv.display()))?;
    Ok(())
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

/// Images spread evenly over `folder`, `count` at most.
fn spread(folder: &std::path::Path, count: usize) -> anyhow::Result<Vec<PathBuf>> {
    let all = list_images(folder)?;
    anyhow::ensure!(
        !all.is_empty(),
        "{}: no PNG or JPEG image",
        folder.display()
    );
    let step = all.len().div_ceil(count).max(1);
    Ok(all.into_iter().step_by(step).take(count).collect())
}

fn synth_sheet(
    synthesis: &std::path::Path,
    images: &std::path::Path,
    count: u32,
    size: u32,
    cell: u32,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let synth = Synthesizer::new(SynthesisSettings::load(synthesis)?)?;
    log::info!(
        "{} defects loaded ({} sources with empty masks skipped)",
        synth.bank().len(),
        synth.bank().skipped()
    );
    let mut samples = Vec::new();
    for path in spread(images, count as usize)? {
        let image = resize_rgb(&load_image(&path)?, size, size);
        let seed = synth.seed_for(&file_hash(&path)?, 0);
        let aug = synth.augment(&image, seed)?;
        log::info!(
            "{}: defect from {}, seed {seed:016x}",
            path.display(),
            aug.defect.display()
        );
        samples.push((image, aug.augmented));
    }
    contact_sheet(&samples, 2, cell)
        .save(out)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{}: {} samples", out.display(), samples.len());
    Ok(())
}

fn features(
    extractor: &std::path::Path,
    images: &std::path::Path,
    synthesis: Option<&std::path::Path>,
    cache: &std::path::Path,
    workers: Option<u32>,
) -> anyhow::Result<()> {
    let onnx =
        std::fs::read(extractor).with_context(|| format!("reading {}", extractor.display()))?;
    let normalization = Normalization {
        mean: INPUT_MEAN,
        std: INPUT_STD,
    };
    let fx = FeatureExtractor::new(&onnx, normalization)
        .with_context(|| format!("loading {}", extractor.display()))?;
    let synth = match synthesis {
        Some(path) => Some(Synthesizer::new(SynthesisSettings::load(path)?)?),
        None => None,
    };
    let store = FeatureCache::open(cache, fx.hash())?;
    let workers = workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |w| w as usize,
    );
    let files = list_images(images)?;
    log::info!(
        "{} images of {}, {} workers, cache {}",
        files.len(),
        images.display(),
        workers,
        store.dir().display()
    );
    let summary = CacheBuild {
        extractor: &fx,
        synthesizer: synth.as_ref(),
        cache: &store,
        workers,
        progress: true,
    }
    .run(&files)?;
    let records: usize = summary.images.iter().map(|i| i.keys.len()).sum();
    let rate = if summary.computed > 0 {
        format!(
            ", {:.1} ms per computed record",
            1000.0 * summary.seconds / summary.computed as f64
        )
    } else {
        String::new()
    };
    println!(
        "{}: {} images, {records} records ({} cached, {} computed, {} repaired), \
         {} unreadable images, {} failed augmentations, {:.1} s{rate}",
        store.dir().display(),
        summary.images.len(),
        summary.hits,
        summary.computed,
        summary.repaired,
        summary.unreadable,
        summary.failed_augmentations,
        summary.seconds,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // Before any thread starts: tract reads its kernel knobs once.
    edge_inspector::engine::avoid_faulty_kernels();
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
        Command::SynthSheet {
            synthesis,
            images,
            count,
            size,
            cell,
            out,
        } => synth_sheet(&synthesis, &images, count, size, cell, &out),
        Command::Features {
            extractor,
            images,
            synthesis,
            cache,
            workers,
        } => features(&extractor, &images, synthesis.as_deref(), &cache, workers),
        Command::Fit {
            train,
            loss,
            checkpoint,
            resume,
            out,
        } => fit(&train, loss, checkpoint, resume, &out),
        Command::Eval {
            bundle,
            data,
            out,
            limit,
        } => {
            let r = evaluate(&bundle, &data, &out, limit.map(|l| l as usize), true)?.report;
            let show = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
            println!(
                "{}: {} images ({} defect-free): pixel AUROC {}, AUPRO {}, image AUROC {}; at \
                 threshold {:.4}: tile precision {:.3}, recall {:.3}, F1 {:.3}, {:.1} false alarms \
                 per 1000 defect-free tiles; {:.1} ms per image",
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
                1000.0 * r.seconds_per_image
            );
            Ok(())
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
            let mut evaluations = Vec::new();
            let mut names = Vec::new();
            for loss in &losses {
                let objective = format!("{loss:?}").to_lowercase();
                let bundle = out.join(format!("bundle-{objective}"));
                log::info!("sweep: {objective}: training {}", bundle.display());
                fit(&train, Some(*loss), None, true, &bundle)?;
                log::info!("sweep: {objective}: evaluating");
                let eval_dir = out.join(format!("eval-{objective}"));
                let evaluation =
                    evaluate(&bundle, &data, &eval_dir, limit.map(|l| l as usize), true)?;
                evaluations.push(evaluation);
                names.push(objective);
            }
            let dataset = name.unwrap_or_else(|| {
                data.file_name()
                    .map_or("data".into(), |n| n.to_string_lossy().into_owned())
            });
            let column = SweepColumn {
                dataset,
                entries: names
                    .iter()
                    .zip(&evaluations)
                    .map(|(n, e)| SweepEntry::new(n, &e.report))
                    .collect(),
            };
            column.save(&out.join("sweep.json"))?;
            write_tables(std::slice::from_ref(&column), &out.join("table"))?;
            let refs: Vec<&Evaluation> = evaluations.iter().collect();
            let labels: Vec<&str> = names.iter().map(String::as_str).collect();
            let figure =
                sweep::figure(&labels, &refs, examples as usize).map_err(anyhow::Error::msg)?;
            let figure_path = out.join("figure.png");
            figure
                .save(&figure_path)
                .with_context(|| format!("writing {}", figure_path.display()))?;
            let series = |curve: fn(&Evaluation) -> &Vec<(f64, f64)>,
                          metric: fn(&Evaluation) -> Option<f64>|
             -> Vec<Series> {
                names
                    .iter()
                    .zip(&evaluations)
                    .map(|(n, e)| Series {
                        label: format!(
                            "L_{n} {}",
                            metric(e).map_or("n/a".into(), |v| format!("{v:.4}"))
                        ),
                        points: curve(e).clone(),
                    })
                    .collect()
            };
            draw_roc(
                &out.join("roc.png"),
                &format!("Pixel ROC, {}", column.dataset),
                &series(|e| &e.curves.pixel_roc, |e| e.report.pixel_auroc),
            )?;
            draw_pro(
                &out.join("pro.png"),
                &format!("PRO up to FPR 0.3, {}", column.dataset),
                &series(|e| &e.curves.pro, |e| e.report.aupro),
            )?;
            print!("{}", table_markdown(std::slice::from_ref(&column)));
            println!(
                "{}: table.md, table.csv, figure.png, roc.png, pro.png",
                out.display()
            );
            Ok(())
        }
        Command::Table { sweeps, out } => {
            let columns = sweeps
                .iter()
                .map(|d| SweepColumn::load(&d.join("sweep.json")))
                .collect::<Result<Vec<_>, _>>()?;
            write_tables(&columns, &out)?;
            print!("{}", table_markdown(&columns));
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
            levels,
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
                    levels: usize::from(levels),
                    precision,
                },
            )?;
            std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
            let taps: Vec<String> = LITE0_TAPS[..usize::from(levels)]
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
