//! `inspect-train sweep` and `table`: one bundle per objective trained and evaluated on a
//! dataset, then the paper's table and figures.

use std::path::{Path, PathBuf};

use super::fit::{fit_bundle, TrainJob};
use super::{save_image, write_file, WorkflowError};
use crate::eval::{draw_pro, draw_roc, evaluate, Evaluation};
use crate::losses::Objective;
use crate::plots::Series;
use crate::sweep::{
    figure, seed_summaries, seeds_markdown, table_csv, table_markdown, SweepColumn, SweepEntry,
    SEEDS_LEGEND, TABLE_LEGEND,
};

/// A sweep over objectives.
#[derive(Clone, Debug)]
pub struct SweepJob {
    /// How each bundle is trained (the objective is set per run).
    pub train: TrainJob,
    /// Evaluation dataset root (MVTec AD layout).
    pub data: PathBuf,
    /// Objectives to compare.
    pub losses: Vec<Objective>,
    /// At most this many test images per class in the evaluations.
    pub limit: Option<usize>,
    /// Column title in the table (default: the data folder's name).
    pub name: Option<String>,
    /// Example images in the figure.
    pub examples: usize,
    /// Output folder.
    pub out: PathBuf,
}

/// Trains and evaluates one bundle per objective (finished ones are picked up from their
/// checkpoints, their evaluations from `evaluation.json` when newer), then writes `sweep.json`, `table.md`, `table.csv`, `figure.png`, `roc.png`
/// and `pro.png` into `job.out`. Returns the table's column.
pub fn run_sweep(job: &SweepJob) -> Result<SweepColumn, WorkflowError> {
    let out = &job.out;
    let mut evaluations = Vec::new();
    let mut names = Vec::new();
    for loss in &job.losses {
        let objective = format!("{loss:?}").to_lowercase();
        let bundle = out.join(format!("bundle-{objective}"));
        log::info!("sweep: {objective}: training {}", bundle.display());
        fit_bundle(&job.train, Some(*loss), None, true, &bundle)?;
        let eval_dir = out.join(format!("eval-{objective}"));
        let checkpoint = out.join(format!("bundle-{objective}.ckpt"));
        let evaluation = match Evaluation::load_fresh(&checkpoint, &eval_dir) {
            Some(done) => {
                log::info!(
                    "sweep: {objective}: evaluated before, in {}",
                    eval_dir.display()
                );
                done
            }
            None => {
                log::info!("sweep: {objective}: evaluating");
                evaluate(&bundle, &job.data, &eval_dir, job.limit, true)?
            }
        };
        evaluations.push(evaluation);
        names.push(objective);
    }
    let dataset = job.name.clone().unwrap_or_else(|| {
        job.data
            .file_name()
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
    let picture = figure(&labels, &refs, job.examples).map_err(WorkflowError::Figure)?;
    save_image(&picture, &out.join("figure.png"))?;
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
    Ok(column)
}

/// Writes the paper's table of `columns` as `OUT.md` (with its legend) and `OUT.csv`.
pub fn write_tables(columns: &[SweepColumn], out: &Path) -> Result<(), WorkflowError> {
    write_file(
        &out.with_extension("md"),
        format!("{TABLE_LEGEND}\n\n{}", table_markdown(columns)),
    )?;
    write_file(&out.with_extension("csv"), table_csv(columns))
}

/// Joins the `sweep.json` of several sweep folders into one table at `out` (one column each).
pub fn join_sweeps(sweeps: &[PathBuf], out: &Path) -> Result<Vec<SweepColumn>, WorkflowError> {
    let columns = load_columns(sweeps)?;
    write_tables(&columns, out)?;
    Ok(columns)
}

/// Summarises sweeps of the same setup with different seeds: mean and standard deviation per
/// objective and figure, and each objective against `L_none`, written as `OUT.md` and
/// `OUT.json` (plus every seed's figures in `OUT.csv`). Returns the Markdown.
pub fn summarise_seeds(sweeps: &[PathBuf], out: &Path) -> Result<String, WorkflowError> {
    let columns = load_columns(sweeps)?;
    let summaries = seed_summaries(&columns);
    let markdown = seeds_markdown(&summaries);
    write_file(
        &out.with_extension("md"),
        format!("{SEEDS_LEGEND}\n\n{markdown}"),
    )?;
    let json = serde_json::to_string_pretty(&summaries).map_err(|e| WorkflowError::Io {
        path: out.with_extension("json"),
        source: std::io::Error::other(e),
    })?;
    write_file(&out.with_extension("json"), json)?;
    write_file(&out.with_extension("csv"), table_csv(&columns))?;
    Ok(markdown)
}

fn load_columns(sweeps: &[PathBuf]) -> Result<Vec<SweepColumn>, WorkflowError> {
    Ok(sweeps
        .iter()
        .map(|d| SweepColumn::load(&d.join("sweep.json")))
        .collect::<Result<Vec<_>, _>>()?)
}
