//! The paper's comparison of objectives (its Table 1 and Figure 1) from evaluations: a table of
//! pixel AUROC / AUPRO per objective and dataset with the best and second best marked (Markdown
//! and CSV), and a figure with one row per objective's heatmaps under the inputs and ground truth.
//! `inspect-train sweep` trains and evaluates; this module only arranges results.

use std::path::{Path, PathBuf};

use image::{imageops, Rgb, RgbImage};
use plotters::prelude::*;

use crate::eval::{heat_overlay, mask_picture, EvalReport, Evaluation};

/// Errors of reading or writing sweep results.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SweepError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    pub message: String,
}

/// One objective's evaluation on a dataset.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SweepEntry {
    /// Objective (`none`, `boundary`, ...).
    pub objective: String,
    /// Pixel AUROC.
    pub pixel_auroc: Option<f64>,
    /// AUPRO up to FPR 0.3.
    pub aupro: Option<f64>,
    /// Image AUROC.
    pub image_auroc: Option<f64>,
    /// Tile F1 at the bundle's threshold.
    pub tile_f1: f64,
    /// False alarms per 1000 defect-free tiles at the threshold.
    pub false_alarms_per_1000: f64,
    /// Tile AUROC (absent in sweeps written before it was measured).
    #[serde(default)]
    pub tile_auroc: Option<f64>,
    /// Tile recall at the test split's own threshold for the target false-alarm rate.
    #[serde(default)]
    pub tile_tpr_at_target: Option<f64>,
}

impl SweepEntry {
    /// The entry of `objective` from its evaluation report.
    pub fn new(objective: &str, report: &EvalReport) -> SweepEntry {
        SweepEntry {
            objective: objective.to_string(),
            pixel_auroc: report.pixel_auroc,
            aupro: report.aupro,
            image_auroc: report.image_auroc,
            tile_f1: report.tile_f1,
            false_alarms_per_1000: report.false_alarms_per_1000,
            tile_auroc: report.tile_auroc,
            tile_tpr_at_target: Some(report.tile_at_target.true_positive_rate()),
        }
    }
}

/// A sweep on one dataset: the column of the paper's table (`sweep.json`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SweepColumn {
    /// Column title (dataset, extractor precision).
    pub dataset: String,
    /// One entry per objective, in sweep order.
    pub entries: Vec<SweepEntry>,
}

impl SweepColumn {
    /// Writes the column as JSON.
    pub fn save(&self, path: &Path) -> Result<(), SweepError> {
        let fail = |message: String| SweepError {
            path: path.to_path_buf(),
            message,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| fail(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| fail(e.to_string()))
    }

    /// Reads a column written by [`SweepColumn::save`].
    pub fn load(path: &Path) -> Result<SweepColumn, SweepError> {
        let fail = |message: String| SweepError {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| fail(e.to_string()))
    }
}

/// Rank of each value among `values` (0 = best = highest), `None` for missing values; equal
/// values share a rank.
fn ranks(values: &[Option<f64>]) -> Vec<Option<usize>> {
    values
        .iter()
        .map(|v| {
            v.map(|v| {
                // Distinct values above this one.
                let mut better: Vec<f64> = values
                    .iter()
                    .flatten()
                    .copied()
                    .filter(|&o| o > v)
                    .collect();
                better.sort_by(f64::total_cmp);
                better.dedup();
                better.len()
            })
        })
        .collect()
}

fn percent(value: Option<f64>, rank: Option<usize>) -> String {
    match (value, rank) {
        (Some(v), Some(0)) => format!("**{:.2}**", 100.0 * v),
        (Some(v), Some(1)) => format!("_{:.2}_", 100.0 * v),
        (Some(v), _) => format!("{:.2}", 100.0 * v),
        (None, _) => "n/a".to_string(),
    }
}

/// What the marks of [`table_markdown`] mean, for a caption.
pub const TABLE_LEGEND: &str = "Pixel AUROC / pixel AUPRO (FPR 0.3), in %; per column and \
                                metric the best in **bold**, the second best in _italic_.";

/// The paper's Table 1: rows = objectives (in the order of the first column), one column per
/// dataset with `pixel AUROC / AUPRO` in percent; per column and metric the best is **bold**
/// and the second best _italic_.
pub fn table_markdown(columns: &[SweepColumn]) -> String {
    let objectives: Vec<String> = columns
        .first()
        .map(|c| c.entries.iter().map(|e| e.objective.clone()).collect())
        .unwrap_or_default();
    let mut md = String::from("| Loss |");
    for c in columns {
        md.push_str(&format!(" {} |", c.dataset));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(columns.len()));
    md.push('\n');
    // Per column: the ranks of each entry's AUROC and AUPRO.
    type Ranks = Vec<Option<usize>>;
    let ranked: Vec<(Ranks, Ranks)> = columns
        .iter()
        .map(|c| {
            let auroc: Vec<Option<f64>> = c.entries.iter().map(|e| e.pixel_auroc).collect();
            let aupro: Vec<Option<f64>> = c.entries.iter().map(|e| e.aupro).collect();
            (ranks(&auroc), ranks(&aupro))
        })
        .collect();
    for objective in &objectives {
        md.push_str(&format!("| L_{objective} |"));
        for (c, (auroc_ranks, aupro_ranks)) in columns.iter().zip(&ranked) {
            match c.entries.iter().position(|e| &e.objective == objective) {
                Some(i) => {
                    let e = &c.entries[i];
                    md.push_str(&format!(
                        " {} / {} |",
                        percent(e.pixel_auroc, auroc_ranks[i]),
                        percent(e.aupro, aupro_ranks[i])
                    ));
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }
    md
}

/// Every figure of every column, one line per (dataset, objective).
pub fn table_csv(columns: &[SweepColumn]) -> String {
    let mut csv = String::from(
        "dataset,objective,pixel_auroc,aupro,image_auroc,tile_f1,false_alarms_per_1000,\
         tile_auroc,tile_tpr_at_target\n",
    );
    let show = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    for c in columns {
        for e in &c.entries {
            csv.push_str(&format!(
                "{},{},{},{},{},{:.6},{:.3},{},{}\n",
                c.dataset.replace(',', " "),
                e.objective,
                show(e.pixel_auroc),
                show(e.aupro),
                show(e.image_auroc),
                e.tile_f1,
                e.false_alarms_per_1000,
                show(e.tile_auroc),
                show(e.tile_tpr_at_target)
            ));
        }
    }
    csv
}

/// Mean and sample standard deviation (n - 1; 0 for a single value) of `values`, `None` when
/// there are none.
pub fn mean_sd(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = if values.len() > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Some((mean, sd))
}

/// One objective's figures over the seeds of several sweeps: mean and standard deviation.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SeedSummary {
    /// Objective (`none`, `boundary`, ...).
    pub objective: String,
    /// Sweeps (seeds) that trained it.
    pub seeds: usize,
    /// Pixel AUROC.
    pub pixel_auroc: Option<(f64, f64)>,
    /// AUPRO up to FPR 0.3.
    pub aupro: Option<(f64, f64)>,
    /// Tile AUROC.
    pub tile_auroc: Option<(f64, f64)>,
    /// Tile recall at the target false-alarm rate.
    pub tile_tpr_at_target: Option<(f64, f64)>,
}

/// The summaries of every objective of the first column (in its order) over `columns`, one
/// column per seed of the same setup.
pub fn seed_summaries(columns: &[SweepColumn]) -> Vec<SeedSummary> {
    let objectives: Vec<String> = columns
        .first()
        .map(|c| c.entries.iter().map(|e| e.objective.clone()).collect())
        .unwrap_or_default();
    objectives
        .into_iter()
        .map(|objective| {
            let entries: Vec<&SweepEntry> = columns
                .iter()
                .filter_map(|c| c.entries.iter().find(|e| e.objective == objective))
                .collect();
            let stat = |figure: fn(&SweepEntry) -> Option<f64>| {
                mean_sd(&entries.iter().filter_map(|e| figure(e)).collect::<Vec<_>>())
            };
            SeedSummary {
                seeds: entries.len(),
                pixel_auroc: stat(|e| e.pixel_auroc),
                aupro: stat(|e| e.aupro),
                tile_auroc: stat(|e| e.tile_auroc),
                tile_tpr_at_target: stat(|e| e.tile_tpr_at_target),
                objective,
            }
        })
        .collect()
}

/// How an objective compares with `L_none` on one figure, in words: it beats (or trails) it
/// only when the difference of the means exceeds the two standard deviations added (the
/// one-sigma bars do not overlap), else the difference is within the seed spread.
pub fn verdict(objective: Option<(f64, f64)>, none: Option<(f64, f64)>) -> String {
    match (objective, none) {
        (Some((m, s)), Some((m0, s0))) => {
            let (difference, spread) = (100.0 * (m - m0), 100.0 * (s + s0));
            let word = if difference > spread {
                "beats"
            } else if difference < -spread {
                "trails"
            } else {
                "within the spread"
            };
            format!("{difference:+.2} (spread {spread:.2}): {word}")
        }
        _ => "n/a".to_string(),
    }
}

/// What the seeds table shows, for a caption.
pub const SEEDS_LEGEND: &str = "Mean ± sample standard deviation over the seeds, in %. \
                                An objective beats (trails) L_none on a figure when the \
                                difference of the means exceeds the two standard deviations \
                                added; otherwise it is within the seed spread.";

/// The seeds table (mean ± standard deviation in percent per objective and figure) and the
/// comparison of every objective with `L_none`, as Markdown.
pub fn seeds_markdown(summaries: &[SeedSummary]) -> String {
    let show = |v: Option<(f64, f64)>| {
        v.map_or("n/a".to_string(), |(m, s)| {
            format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * s)
        })
    };
    let mut md = String::from(
        "| Loss | seeds | pixel AUROC | AUPRO | tile AUROC | tile TPR at the target FPR |\n\
         |---|---|---|---|---|---|\n",
    );
    for s in summaries {
        md.push_str(&format!(
            "| L_{} | {} | {} | {} | {} | {} |\n",
            s.objective,
            s.seeds,
            show(s.pixel_auroc),
            show(s.aupro),
            show(s.tile_auroc),
            show(s.tile_tpr_at_target)
        ));
    }
    if let Some(none) = summaries.iter().find(|s| s.objective == "none") {
        md.push_str(
            "\n| Loss vs L_none (difference of means, in points) | pixel AUROC | AUPRO | tile \
             TPR at the target FPR |\n|---|---|---|---|\n",
        );
        for s in summaries.iter().filter(|s| s.objective != "none") {
            md.push_str(&format!(
                "| L_{} | {} | {} | {} |\n",
                s.objective,
                verdict(s.pixel_auroc, none.pixel_auroc),
                verdict(s.aupro, none.aupro),
                verdict(s.tile_tpr_at_target, none.tile_tpr_at_target)
            ));
        }
    }
    md
}

/// The paper's Figure 1: one column per example defect image (up to `columns`), rows input,
/// ground truth, then each objective's anomaly map over the input (colour scale 0 to twice that
/// bundle's threshold), with the row names on the left.
pub fn figure(
    objectives: &[&str],
    evaluations: &[&Evaluation],
    columns: usize,
) -> Result<RgbImage, String> {
    let first = evaluations.first().ok_or("no evaluation")?;
    let side = first.side;
    let defect_examples: Vec<usize> = (0..first.examples.len())
        .filter(|&i| first.examples[i].mask.iter().any(|&m| m != 0))
        .take(columns)
        .collect();
    let (cell, gap, label_width) = (160u32, 4u32, 130u32);
    let rows = 2 + evaluations.len() as u32;
    let width = label_width + defect_examples.len() as u32 * (cell + gap) + gap;
    let height = rows * (cell + gap) + gap;
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut place = |picture: &RgbImage, row: u32, column: usize| {
        let scaled = imageops::resize(picture, cell, cell, imageops::FilterType::Triangle);
        let x = label_width + gap + column as u32 * (cell + gap);
        let y = gap + row * (cell + gap);
        imageops::replace(&mut sheet, &scaled, x as i64, y as i64);
    };
    for (column, &i) in defect_examples.iter().enumerate() {
        let example = &first.examples[i];
        place(&example.input, 0, column);
        place(&mask_picture(&example.mask, side), 1, column);
        for (k, evaluation) in evaluations.iter().enumerate() {
            let e = evaluation
                .examples
                .get(i)
                .ok_or("evaluations with different examples")?;
            let scale = 2.0 * evaluation.report.threshold.max(1e-6);
            place(&heat_overlay(&e.input, &e.map, scale), 2 + k as u32, column);
        }
    }
    let mut names = vec!["input".to_string(), "ground truth".to_string()];
    names.extend(objectives.iter().map(|o| format!("L_{o}")));
    crate::plots::register_font()?;
    let (w, h) = sheet.dimensions();
    {
        let root = BitMapBackend::with_buffer(&mut sheet, (w, h)).into_drawing_area();
        for (row, name) in names.iter().enumerate() {
            let y = (gap + row as u32 * (cell + gap) + cell / 2) as i32;
            root.draw(&Text::new(
                name.clone(),
                (8, y - 9),
                ("sans-serif", 18).into_font().color(&BLACK),
            ))
            .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(sheet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(objective: &str, auroc: f64, aupro: Option<f64>) -> SweepEntry {
        SweepEntry {
            objective: objective.into(),
            pixel_auroc: Some(auroc),
            aupro,
            image_auroc: None,
            tile_f1: 0.5,
            false_alarms_per_1000: 1.0,
            tile_auroc: None,
            tile_tpr_at_target: None,
        }
    }

    #[test]
    fn table_marks_best_and_second_per_column_and_metric() {
        let columns = [
            SweepColumn {
                dataset: "tiles".into(),
                entries: vec![
                    entry("none", 0.90, Some(0.70)),
                    entry("boundary", 0.95, Some(0.60)),
                    entry("fusion", 0.93, Some(0.75)),
                ],
            },
            SweepColumn {
                dataset: "cracks".into(),
                entries: vec![entry("fusion", 0.80, None), entry("none", 0.85, Some(0.5))],
            },
        ];
        let md = table_markdown(&columns);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines[0], "| Loss | tiles | cracks |");
        assert_eq!(
            lines[2],
            "| L_none | 90.00 / _70.00_ | **85.00** / **50.00** |"
        );
        assert_eq!(lines[3], "| L_boundary | **95.00** / 60.00 | – |");
        assert_eq!(
            lines[4],
            "| L_fusion | _93.00_ / **75.00** | _80.00_ / n/a |"
        );
        let csv = table_csv(&columns);
        assert_eq!(csv.lines().count(), 1 + 5);
        assert!(
            csv.contains("cracks,fusion,0.800000,,,0.500000,1.000,,\n"),
            "{csv}"
        );
    }

    #[test]
    fn seeds_give_mean_and_spread_and_a_verdict_against_none() {
        let seed = |none: f64, fusion: f64, boundary: f64| SweepColumn {
            dataset: "seed".into(),
            entries: vec![
                entry("none", none, Some(0.5)),
                entry("fusion", fusion, Some(0.5)),
                entry("boundary", boundary, None),
            ],
        };
        let columns = [
            seed(0.80, 0.85, 0.79),
            seed(0.82, 0.86, 0.83),
            seed(0.81, 0.84, 0.81),
        ];
        let summaries = seed_summaries(&columns);
        assert_eq!(summaries.len(), 3);
        let (mean, sd) = summaries[0].pixel_auroc.unwrap();
        assert!((mean - 0.81).abs() < 1e-12 && (sd - 0.01).abs() < 1e-12);
        assert_eq!(summaries[2].aupro, None);
        assert_eq!(summaries[0].seeds, 3);
        let md = seeds_markdown(&summaries);
        assert!(
            md.contains("| L_none | 3 | 81.00 ± 1.00 | 50.00 ± 0.00 |"),
            "{md}"
        );
        // Fusion: +4 points against spreads 1 + 1; boundary: 0 against 1 + 2.
        assert!(
            md.contains("| L_fusion | +4.00 (spread 2.00): beats |"),
            "{md}"
        );
        assert!(
            md.contains("| L_boundary | +0.00 (spread 3.00): within the spread | n/a |"),
            "{md}"
        );
        assert_eq!(
            verdict(Some((0.70, 0.01)), Some((0.75, 0.01))),
            "-5.00 (spread 2.00): trails"
        );
        assert_eq!(mean_sd(&[]), None);
        assert_eq!(mean_sd(&[0.3]), Some((0.3, 0.0)));
    }

    #[test]
    fn ties_share_a_rank() {
        assert_eq!(
            ranks(&[Some(0.5), Some(0.9), Some(0.9), None, Some(0.7)]),
            vec![Some(2), Some(0), Some(0), None, Some(1)]
        );
    }
}
