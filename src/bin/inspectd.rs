//! `inspectd`: the on-device inspection daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edge_inspector::config::Config;

/// Finds defects in camera frames and streams alerts over a serial link.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file (see firmware-config/).
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a configuration file and the bundle it names, then exit.
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
}

fn check_config(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    println!("{}: configuration is valid", file.display());
    let (bundle, fallback) = config
        .model
        .load_bundle()
        .with_context(|| format!("{}: model.bundle", file.display()))?;
    if fallback {
        println!(
            "{}: model.bundle refused (see the log); the fallback bundle would run",
            file.display()
        );
    }
    println!(
        "{}: bundle verified (model {}, {} levels, input {}x{})",
        bundle.dir.display(),
        bundle.model_id,
        bundle.manifest.levels.len(),
        bundle.manifest.input.width,
        bundle.manifest.input.height
    );
    Ok(())
}

#[cfg(target_os = "linux")]
fn run(file: &Path) -> anyhow::Result<()> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let config = Config::load(file)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .with_context(|| format!("cannot install the handler for signal {signal}"))?;
    }
    let summary = edge_inspector::daemon::run(&config, stop)?;
    log::info!(
        "stopped: {} frames, {} tiles, {} alerts, {} frames skipped, {} dropped, {} alerts lost, {} undelivered",
        summary.frames,
        summary.tiles,
        summary.alerts,
        summary.skipped_frames,
        summary.dropped_frames,
        summary.dropped_alerts,
        summary.unacked
    );
    if summary.recorded + summary.record_missed > 0 {
        log::info!(
            "recorded {} frames, {} missed",
            summary.recorded,
            summary.record_missed
        );
    }
    if let Some((sentences, unreadable)) = summary.gnss_sentences {
        log::info!("GNSS receiver: {sentences} position sentences, {unreadable} unreadable lines");
    }
    Ok(())
}

/// The daemon drives V4L2 cameras and Linux serial ports: it runs on Linux boards only (the
/// receiver, `inspect-monitor`, runs everywhere).
#[cfg(not(target_os = "linux"))]
fn run(_file: &Path) -> anyhow::Result<()> {
    anyhow::bail!("inspectd runs on Linux only; check-config works here")
}

fn main() -> ExitCode {
    // Before any thread starts: tract reads its kernel knobs once.
    inspect_core::engine::avoid_faulty_kernels();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let cli = Cli::parse();
    let result = match (&cli.command, &cli.config) {
        (Some(Command::CheckConfig { file }), _) => check_config(file),
        (None, Some(file)) => run(file),
        (None, None) => Err(anyhow::anyhow!(
            "nothing to do: pass --config FILE to run, or `check-config FILE`"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inspectd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
