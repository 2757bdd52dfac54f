//! `inspect-train sweep` and `table`: one bundle per objective trained and evaluated on a
//! dataset, then the paper's table and figures.

use std::path::{Path, PathBuf};

use super::fit::{fit_bundle, TrainJob};
use super::{save_image, write_file, WorkflowError};
use crate::eval::{draw_pro, draw_roc, evaluate, Evaluation};
use crate::losses::Objective;
use crate::plots::{Panel, Series, SpreadChart};
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
    seeds_chart(&columns, &out.with_extension("png"))?;
    Ok(markdown)
}

/// The seeds' spread as a picture: per figure, a column of dots (one per seed) and the mean with
/// one standard deviation for each objective.
fn seeds_chart(columns: &[SweepColumn], path: &Path) -> Result<(), WorkflowError> {
    let seeds = match columns.len() {
        1 => "1 seed".to_string(),
        n => format!("{n} seeds"),
    };
    let title = format!("{seeds}: each dot a seed, bar the mean +- 1 sd");
    SpreadChart {
        title: &title,
        panels: &seed_panels(columns),
    }
    .save(path, 1400, 420)
    .map_err(|e| WorkflowError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.message),
    })
}

/// The chart's panels: per figure (in percent), each objective of the first sweep with its
/// value in every sweep that has one.
fn seed_panels(columns: &[SweepColumn]) -> Vec<Panel> {
    type Figure = fn(&SweepEntry) -> Option<f64>;
    let figures: [(&str, Figure); 4] = [
        ("pixel AUROC (%)", |e| e.pixel_auroc),
        ("AUPRO (%)", |e| e.aupro),
        ("tile AUROC (%)", |e| e.tile_auroc),
        ("tile TPR at the target FPR (%)", |e| e.tile_tpr_at_target),
    ];
    let objectives: Vec<&str> = columns
        .first()
        .map(|c| c.entries.iter().map(|e| e.objective.as_str()).collect())
        .unwrap_or_default();
    figures
        .iter()
        .map(|(figure, value)| Panel {
            figure: figure.to_string(),
            groups: objectives
                .iter()
                .map(|&objective| {
                    let values = columns
                        .iter()
                        .filter_map(|c| c.entries.iter().find(|e| e.objective == objective))
                        .filter_map(value)
                        .map(|v| 100.0 * v)
                        .collect();
                    (objective.to_string(), values)
                })
                .collect(),
        })
        .collect()
}

fn load_columns(sweeps: &[PathBuf]) -> Result<Vec<SweepColumn>, WorkflowError> {
    Ok(sweeps
        .iter()
        .map(|d| SweepColumn::load(&d.join("sweep.json")))
        .collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(seed: u32, objectives: &[(&str, Option<f64>)]) -> SweepColumn {
        SweepColumn {
            dataset: format!("seed {seed}"),
            entries: objectives
                .iter()
                .map(|&(objective, tpr)| SweepEntry {
                    objective: objective.into(),
                    pixel_auroc: Some(0.96 + 0.001 * f64::from(seed)),
                    aupro: Some(0.85),
                    image_auroc: None,
                    tile_f1: 0.5,
                    false_alarms_per_1000: 10.0,
                    tile_auroc: Some(0.89),
                    tile_tpr_at_target: tpr,
                })
                .collect(),
        }
    }

    #[test]
    fn seed_panels_gather_each_objectives_values_across_sweeps() {
        let columns = [
            column(1, &[("none", Some(0.17)), ("fusion", Some(0.15))]),
            // A sweep without a TPR for fusion, and objectives in another order.
            column(2, &[("fusion", None), ("none", Some(0.20))]),
            column(3, &[("none", Some(0.21))]),
        ];
        let panels = seed_panels(&columns);
        assert_eq!(panels.len(), 4);
        let pixel = &panels[0];
        assert_eq!(pixel.groups[0].0, "none");
        let close = |a: &[f64], b: &[f64]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
        };
        assert!(close(&pixel.groups[0].1, &[96.1, 96.2, 96.3]), "{pixel:?}");
        assert!(close(&pixel.groups[1].1, &[96.1, 96.2]), "{pixel:?}");
        let tpr = &panels[3];
        assert!(close(&tpr.groups[0].1, &[17.0, 20.0, 21.0]), "{tpr:?}");
        assert!(close(&tpr.groups[1].1, &[15.0]), "{tpr:?}");
    }

    #[test]
    fn summarising_seeds_writes_the_tables_and_the_chart() {
        let dir = std::env::temp_dir().join(format!("seeds-summary-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut sweeps = Vec::new();
        for seed in 1..=3 {
            let folder = dir.join(format!("seed-{seed}"));
            std::fs::create_dir_all(&folder).unwrap();
            column(seed, &[("none", Some(0.17)), ("boundary", Some(0.16))])
                .save(&folder.join("sweep.json"))
                .unwrap();
            sweeps.push(folder);
        }
        let out = dir.join("seeds");
        let markdown = summarise_seeds(&sweeps, &out).unwrap();
        assert!(markdown.contains("L_boundary"), "{markdown}");
        for extension in ["md", "json", "csv"] {
            assert!(out.with_extension(extension).is_file(), "{extension}");
        }
        let chart = image::open(out.with_extension("png")).unwrap();
        assert_eq!((chart.width(), chart.height()), (1400, 420));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
