//! `inspect-train fit`: features cached, flows trained on the chosen backend, bundle exported
//! and calibrated, from a trainer config and command-line overrides.

use std::path::{Path, PathBuf};

use super::{read_file, threads_or_cores, WorkflowError};
use crate::dataset::list_images;
use crate::extractor::efficientnet::{INPUT_MEAN, INPUT_STD};
use crate::losses::Objective;
use crate::synth::bank::Synthesizer;
use crate::synth::config::SynthesisSettings;
use crate::train::settings::TrainSettings;
use crate::train::{run_fit, Backend, FitJob, FitReport, HeldOut};
use inspect_core::detector::Tiling;
use inspect_core::tiler::Normalization;

/// Where the flows train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TrainDevice {
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

impl TrainDevice {
    /// The backend: the CPU flow on `threads` (default: every core), or a burn device with
    /// autodiff on. Refuses a GPU this build has no backend for, naming the feature to build.
    pub fn backend(self, threads: Option<u32>) -> Result<Backend, WorkflowError> {
        use burn::tensor::Device;
        if threads.is_some() && self != TrainDevice::Cpu {
            return Err(WorkflowError::Usage(
                "--threads applies to --device cpu only".into(),
            ));
        }
        let device = match self {
            TrainDevice::Cpu => {
                return Ok(Backend::Cpu {
                    threads: threads_or_cores(threads),
                })
            }
            TrainDevice::BurnCpu => Device::flex(),
            #[cfg(feature = "cuda")]
            TrainDevice::Cuda => Device::cuda(0),
            #[cfg(feature = "vulkan")]
            TrainDevice::Vulkan => Device::vulkan(Default::default()),
            #[cfg(feature = "wgpu")]
            TrainDevice::Wgpu => Device::wgpu(Default::default()),
            #[allow(unreachable_patterns)]
            other => {
                let name = format!("{other:?}").to_lowercase();
                return Err(WorkflowError::Usage(format!(
                    "--device {name}: this build has no such backend (build with --features {name})"
                )));
            }
        };
        Ok(Backend::Burn(device.autodiff()))
    }
}

/// What every training command reads: config, extractor, images, cache, and where it runs.
#[derive(Clone, Debug)]
pub struct TrainJob {
    /// Trainer config: `[training]` (defaults if absent) and `[synthesis]`.
    pub config: PathBuf,
    /// Extractor ONNX.
    pub extractor: PathBuf,
    /// Human name of the extractor for the manifest.
    pub extractor_name: String,
    /// Folder of defect-free training images.
    pub images: PathBuf,
    /// Feature cache root.
    pub cache: PathBuf,
    /// Overrides `training.epochs`.
    pub epochs: Option<u32>,
    /// Where the flows train.
    pub device: TrainDevice,
    /// Threads of the CPU trainer.
    pub threads: Option<u32>,
    /// Extraction workers (default: every core).
    pub workers: Option<u32>,
    /// Folder of defect-free images kept apart for the threshold, and how they are cut (the
    /// daemon's tiling, or whole); `None`: a `holdout_fraction` of the training images.
    pub holdout: Option<(PathBuf, Option<Tiling>)>,
}

/// Trains a bundle into `out` with `loss` instead of the config's objective if given; the
/// checkpoint (default: `out` + `.ckpt`) is written after every epoch and, with `resume`,
/// picked up.
pub fn fit_bundle(
    job: &TrainJob,
    loss: Option<Objective>,
    checkpoint: Option<PathBuf>,
    resume: bool,
    out: &Path,
) -> Result<FitReport, WorkflowError> {
    let checkpoint = checkpoint.unwrap_or_else(|| {
        let mut name = out.as_os_str().to_owned();
        name.push(".ckpt");
        PathBuf::from(name)
    });
    let mut settings = TrainSettings::load(&job.config)?;
    if let Some(loss) = loss {
        settings.objective = loss;
    }
    if let Some(epochs) = job.epochs {
        settings.epochs = epochs;
        settings.warmup_epochs = settings.warmup_epochs.min(epochs);
    }
    settings.validate(&job.config)?;
    let synth = if settings.objective == Objective::None {
        None
    } else {
        let synthesis = SynthesisSettings::load(&job.config).map_err(|source| {
            WorkflowError::NeedsSynthesis {
                objective: format!("{:?}", settings.objective).to_lowercase(),
                source,
            }
        })?;
        Some(Synthesizer::new(synthesis)?)
    };
    let onnx = read_file(&job.extractor)?;
    let provenance = provenance(job, &settings);
    let report = run_fit(
        FitJob {
            extractor: &onnx,
            extractor_name: job.extractor_name.clone(),
            normalization: Normalization {
                mean: INPUT_MEAN,
                std: INPUT_STD,
            },
            images: list_images(&job.images)?,
            synthesizer: synth.as_ref(),
            cache_root: &job.cache,
            settings,
            backend: job.device.backend(job.threads)?,
            workers: threads_or_cores(job.workers),
            progress: true,
            out,
            provenance,
            checkpoint: Some(&checkpoint),
            resume,
            holdout: match &job.holdout {
                Some((dir, tiling)) => Some(HeldOut {
                    images: list_images(dir)?,
                    tiling: *tiling,
                }),
                None => None,
            },
        },
        &mut |log| log::info!("{log}"),
    )?;
    Ok(report)
}

/// What the manifest records about how the bundle was trained.
fn provenance(job: &TrainJob, settings: &TrainSettings) -> toml::Table {
    let text = |v: String| toml::Value::String(v);
    let mut p = toml::Table::new();
    p.insert("images".into(), text(job.images.display().to_string()));
    p.insert(
        "objective".into(),
        text(format!("{:?}", settings.objective).to_lowercase()),
    );
    p.insert(
        "nf_loss".into(),
        text(format!("{:?}", settings.nf_loss).to_lowercase()),
    );
    p.insert(
        "epochs".into(),
        toml::Value::Integer(settings.epochs.into()),
    );
    p.insert("seed".into(), toml::Value::Integer(settings.seed as i64));
    p.insert("config".into(), text(job.config.display().to_string()));
    p
}
