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
        "dataset,objective,pixel_auroc,aupro,image_auroc,tile_f1,false_alarms_per_1000\n",
    );
    let show = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    for c in columns {
        for e in &c.entries {
            csv.push_str(&format!(
                "{},{},{},{},{},{:.6},{:.3}\n",
                c.dataset.replace(',', " "),
                e.objective,
                show(e.pixel_auroc),
                show(e.aupro),
                show(e.image_auroc),
                e.tile_f1,
                e.false_alarms_per_1000
            ));
        }
    }
    csv
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
            csv.contains("cracks,fusion,0.800000,,,0.500000,1.000\n"),
            "{csv}"
        );
    }

    #[test]
    fn ties_share_a_rank() {
        assert_eq!(
            ranks(&[Some(0.5), Some(0.9), Some(0.9), None, Some(0.7)]),
            vec![Some(2), Some(0), Some(0), None, Some(1)]
        );
    }
}
