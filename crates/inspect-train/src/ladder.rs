//! The extractor ladder: one training recipe evaluated with different extractors (variant,
//! input size, precision, tap point), as one table per dataset with the Pareto-optimal rows
//! (tile detection at the target false-alarm rate against time per tile) marked.
//! `benches/extractor_ladder.sh` trains and evaluates; this module only arranges results.

use std::path::{Path, PathBuf};

use crate::eval::EvalReport;

/// Errors of reading ladder results.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LadderError {
    /// The file or folder.
    pub path: PathBuf,
    /// What failed.
    pub message: String,
}

/// One extractor evaluated on one dataset.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LadderRow {
    /// Dataset name.
    pub dataset: String,
    /// Extractor name (e.g. `lite0-256-int8`).
    pub extractor: String,
    /// Pixel AUROC.
    pub pixel_auroc: Option<f64>,
    /// AUPRO up to FPR 0.3.
    pub aupro: Option<f64>,
    /// Tile AUROC.
    pub tile_auroc: Option<f64>,
    /// Tile recall at the test split's own threshold for the target false-alarm rate.
    pub tile_tpr: f64,
    /// The false-alarm rate that threshold lets through on the test split.
    pub tile_fpr: f64,
    /// Milliseconds of the daemon's work per tile (sampling, extractor, head, scorer).
    pub ms_per_tile: f64,
}

impl LadderRow {
    /// The row of `extractor` on `dataset` from its evaluation report.
    pub fn new(dataset: &str, extractor: &str, report: &EvalReport) -> LadderRow {
        LadderRow {
            dataset: dataset.to_string(),
            extractor: extractor.to_string(),
            pixel_auroc: report.pixel_auroc,
            aupro: report.aupro,
            tile_auroc: report.tile_auroc,
            tile_tpr: report.tile_at_target.true_positive_rate(),
            tile_fpr: report.tile_at_target.false_alarm_rate(),
            ms_per_tile: 1000.0 * report.seconds_per_image,
        }
    }
}

/// Reads every `ROOT/DATASET/EXTRACTOR/eval/metrics.json` (datasets and extractors in name
/// order), with the time per tile from the run's `timing/metrics.json` where the timing pass
/// wrote one, else from `ROOT/timing/EXTRACTOR.json` (benches/ladder_timing.sh: the time depends
/// on the network, not on the dataset); runs without a finished evaluation are skipped.
pub fn read_ladder(root: &Path) -> Result<Vec<LadderRow>, LadderError> {
    let fail = |path: &Path, message: String| LadderError {
        path: path.to_path_buf(),
        message,
    };
    let folders = |dir: &Path| -> Result<Vec<PathBuf>, LadderError> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| fail(dir, e.to_string()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        found.sort();
        Ok(found)
    };
    let name = |p: &Path| {
        p.file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned())
    };
    let mut rows = Vec::new();
    for dataset in folders(root)? {
        for run in folders(&dataset)? {
            let metrics = run.join("eval/metrics.json");
            if !metrics.is_file() {
                continue;
            }
            let text =
                std::fs::read_to_string(&metrics).map_err(|e| fail(&metrics, e.to_string()))?;
            let report: EvalReport =
                serde_json::from_str(&text).map_err(|e| fail(&metrics, e.to_string()))?;
            let mut row = LadderRow::new(&name(&dataset), &name(&run), &report);
            // The timing pass (every extractor back to back on an idle machine) wins over
            // the evaluation's own clock, which ran while other jobs did.
            let own = run.join("timing/metrics.json");
            let shared = root.join("timing").join(format!("{}.json", name(&run)));
            let timing = if own.is_file() { own } else { shared };
            if timing.is_file() {
                let text =
                    std::fs::read_to_string(&timing).map_err(|e| fail(&timing, e.to_string()))?;
                let timed: EvalReport =
                    serde_json::from_str(&text).map_err(|e| fail(&timing, e.to_string()))?;
                row.ms_per_tile = 1000.0 * timed.seconds_per_image;
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Whether each row is Pareto-optimal within its dataset: no other row of the dataset detects
/// at least as many tiles in at most the time, better in one of the two.
pub fn pareto_optimal(rows: &[LadderRow]) -> Vec<bool> {
    rows.iter()
        .map(|r| {
            !rows.iter().any(|o| {
                o.dataset == r.dataset
                    && o.tile_tpr >= r.tile_tpr
                    && o.ms_per_tile <= r.ms_per_tile
                    && (o.tile_tpr > r.tile_tpr || o.ms_per_tile < r.ms_per_tile)
            })
        })
        .collect()
}

/// One Markdown table per dataset, rows by time per tile, Pareto-optimal rows marked.
pub fn ladder_markdown(rows: &[LadderRow]) -> String {
    let optimal = pareto_optimal(rows);
    let mut datasets: Vec<&str> = rows.iter().map(|r| r.dataset.as_str()).collect();
    datasets.dedup();
    let percent = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:.2}", 100.0 * v));
    let mut md = String::new();
    for dataset in datasets {
        md.push_str(&format!(
            "### {dataset}\n\n| extractor | ms per tile | pixel AUROC | AUPRO | tile AUROC | \
             tile TPR (at FPR) | Pareto |\n|---|---|---|---|---|---|---|\n"
        ));
        let mut ordered: Vec<(&LadderRow, bool)> = rows
            .iter()
            .zip(&optimal)
            .filter(|(r, _)| r.dataset == dataset)
            .map(|(r, &o)| (r, o))
            .collect();
        ordered.sort_by(|a, b| a.0.ms_per_tile.total_cmp(&b.0.ms_per_tile));
        for (r, optimal) in ordered {
            md.push_str(&format!(
                "| {} | {:.1} | {} | {} | {} | {:.3} ({:.1}%) | {} |\n",
                r.extractor,
                r.ms_per_tile,
                percent(r.pixel_auroc),
                percent(r.aupro),
                percent(r.tile_auroc),
                r.tile_tpr,
                100.0 * r.tile_fpr,
                if optimal { "**yes**" } else { "" }
            ));
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(dataset: &str, extractor: &str, tpr: f64, ms: f64) -> LadderRow {
        LadderRow {
            dataset: dataset.into(),
            extractor: extractor.into(),
            pixel_auroc: Some(0.9),
            aupro: None,
            tile_auroc: Some(0.8),
            tile_tpr: tpr,
            tile_fpr: 0.01,
            ms_per_tile: ms,
        }
    }

    #[test]
    fn a_run_without_its_own_timing_takes_the_rungs_timing_pass() {
        // A real report of the timing pass (docs/results/extractor-ladder/timing/).
        let real = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/results/extractor-ladder/timing/lite0-256-int8.json");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(real).unwrap()).unwrap();
        let with_seconds = |s: f64| {
            let mut r = report.clone();
            r["seconds_per_image"] = s.into();
            r.to_string()
        };
        let root = std::env::temp_dir().join(format!("ei-ladder-{}", std::process::id()));
        let write = |path: &str, text: String| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        // Evaluations ran beside other jobs (their clocks: 0.5 s); one run has its own pass.
        write("tiles/lite0-256-int8/eval/metrics.json", with_seconds(0.5));
        write("tiles/lite2-256-int8/eval/metrics.json", with_seconds(0.5));
        write(
            "tiles/lite2-256-int8/timing/metrics.json",
            with_seconds(0.128),
        );
        write("timing/lite0-256-int8.json", with_seconds(0.099));
        write("timing/lite2-256-int8.json", with_seconds(0.2));
        let rows = read_ladder(&root).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        let ms: Vec<(&str, f64)> = rows
            .iter()
            .map(|r| (r.extractor.as_str(), r.ms_per_tile))
            .collect();
        assert_eq!(ms, [("lite0-256-int8", 99.0), ("lite2-256-int8", 128.0)]);
    }

    #[test]
    fn the_front_keeps_rows_nothing_beats_on_both_detection_and_time() {
        let rows = [
            row("crops", "lite0-192", 0.20, 10.0),
            row("crops", "lite0-256", 0.30, 20.0),
            // Slower and no better than lite0-256.
            row("crops", "lite1-256", 0.30, 30.0),
            row("crops", "lite2-256", 0.40, 50.0),
            // Faster than lite0-192 but worse: still on the front.
            row("crops", "tiny", 0.05, 5.0),
            // Another dataset is its own front.
            row("tiles", "lite1-256", 0.10, 30.0),
        ];
        assert_eq!(pareto_optimal(&rows), [true, true, false, true, true, true]);
        let md = ladder_markdown(&rows);
        let crops: Vec<&str> = md.lines().skip(4).take(5).collect();
        assert_eq!(
            crops[0],
            "| tiny | 5.0 | 90.00 | n/a | 80.00 | 0.050 (1.0%) | **yes** |"
        );
        assert_eq!(
            crops[4],
            "| lite2-256 | 50.0 | 90.00 | n/a | 80.00 | 0.400 (1.0%) | **yes** |"
        );
        assert!(md.contains("| lite1-256 | 30.0 | 90.00 | n/a | 80.00 | 0.300 (1.0%) |  |"));
        assert!(md.contains("### tiles\n"));
    }
}
