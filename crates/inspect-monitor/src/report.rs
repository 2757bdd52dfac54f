//! `inspect-monitor report`: the inspection as one self-contained HTML file for the asset owner
//! (and a CSV of the same rows), from the monitor's log folder.
//!
//! The page places every logged alert on a strip of the structure by chainage (or on a map of
//! its GNSS fixes; by alert number when the alerts carry no position), drawn to SVG by plotters;
//! counts alerts by section; lists each alert with its tile and heatmap, score, time and place;
//! and names the device and model. Images are embedded (base64) and the page loads nothing:
//! it opens from a USB stick on a site office PC with no network.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use plotters::prelude::*;

use inspect_protocol::command::Part;
use inspect_protocol::{evidence, Alert, DeviceMessage, Fix, Unframed};

/// What to report.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// The monitor's log folder (`alerts.jsonl`, `evidence/`).
    pub log_dir: PathBuf,
    /// The HTML file to write (the CSV goes beside it, same name with `.csv`).
    pub out: PathBuf,
    /// Length of a section of the structure in metres, for the counts.
    pub section_m: f64,
}

/// What the report holds.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportSummary {
    /// Alerts listed.
    pub alerts: usize,
    /// Of which with a position.
    pub placed: usize,
    /// Of which with their tile image.
    pub with_evidence: usize,
    /// Sections with alerts.
    pub sections: usize,
}

/// Why no report was written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line of the log is not an alert.
    #[error("{path}, line {line}: not an alert line")]
    Line {
        /// The log.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
    },
    /// The chart could not be drawn.
    #[error("drawing the chart: {0}")]
    Chart(String),
}

/// One alert and where the report puts it.
struct Row {
    alert: Alert,
    section: Option<i64>,
    tile: Option<String>,
    heatmap: Option<String>,
}

const FONT: &[u8] = include_bytes!("../../inspect-train/assets/fonts/DejaVuSans-subset.ttf");

/// Reads the log folder and writes the HTML report and its CSV.
pub fn write_report(options: &ReportOptions) -> Result<ReportSummary, ReportError> {
    let alerts = read_alerts(&options.log_dir.join("alerts.jsonl"))?;
    let evidence_dir = options.log_dir.join("evidence");
    let rows: Vec<Row> = alerts
        .into_values()
        .map(|alert| {
            let section = match alert.position.map(|p| p.fix) {
                Some(Fix::Chainage { metres }) => Some((metres / options.section_m).floor() as i64),
                _ => None,
            };
            let embed = |part: Part, mime: &str| {
                let file = evidence_dir.join(evidence::file_name(alert.seq, part));
                std::fs::read(file).ok().map(|bytes| {
                    format!(
                        "data:{mime};base64,{}",
                        base64::engine::general_purpose::STANDARD.encode(bytes)
                    )
                })
            };
            Row {
                tile: embed(Part::Tile, "image/jpeg"),
                heatmap: embed(Part::Heatmap, "image/png"),
                section,
                alert,
            }
        })
        .collect();
    let chart = chart_svg(&rows)?;
    let html = page(&rows, &chart, options.section_m);
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    write(&options.out, &html)?;
    write(&options.out.with_extension("csv"), &csv(&rows))?;
    let sections: std::collections::BTreeSet<i64> = rows.iter().filter_map(|r| r.section).collect();
    Ok(ReportSummary {
        alerts: rows.len(),
        placed: rows.iter().filter(|r| r.alert.position.is_some()).count(),
        with_evidence: rows.iter().filter(|r| r.tile.is_some()).count(),
        sections: sections.len(),
    })
}

/// The alerts of `alerts.jsonl` by seq (a re-sent copy logged twice counts once).
fn read_alerts(path: &Path) -> Result<BTreeMap<u64, Alert>, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut alerts = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match DeviceMessage::decode(Unframed::Line(line.as_bytes())) {
            Ok(DeviceMessage::Alert(a)) => {
                alerts.insert(a.seq, a);
            }
            _ => {
                return Err(ReportError::Line {
                    path: path.to_path_buf(),
                    line: i + 1,
                })
            }
        }
    }
    Ok(alerts)
}

/// Where an alert is, for a person.
fn place(alert: &Alert) -> String {
    match alert.position {
        None => "unknown".into(),
        Some(p) => {
            let stale = if p.stale { " (stale)" } else { "" };
            match p.fix {
                Fix::Chainage { metres } => format!("{metres:.2} m{stale}"),
                Fix::Gnss { lat, lon } => format!("{lat:.6}, {lon:.6}{stale}"),
            }
        }
    }
}

fn section_name(section: i64, section_m: f64) -> String {
    let start = section as f64 * section_m;
    format!("{start:.0}-{:.0} m", start + section_m)
}

/// Colour of a marker: how far the score passed the threshold (1x yellow to 2x and more red).
fn severity(alert: &Alert) -> RGBColor {
    let ratio = (alert.score / alert.threshold.max(f32::EPSILON)).clamp(1.0, 2.0) - 1.0;
    RGBColor(220, (190.0 * (1.0 - ratio)) as u8 + 20, 20)
}

/// The strip (chainage), the map (GNSS) or the sequence of the alerts, as SVG.
fn chart_svg(rows: &[Row]) -> Result<String, ReportError> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| ReportError::Chart("the embedded font is unreadable".into()))?;
    let fail = |e: &dyn std::fmt::Display| ReportError::Chart(e.to_string());
    let chainage: Vec<(f64, &Row)> = rows
        .iter()
        .filter_map(|r| match r.alert.position?.fix {
            Fix::Chainage { metres } => Some((metres, r)),
            Fix::Gnss { .. } => None,
        })
        .collect();
    let gnss: Vec<(f64, f64, &Row)> = rows
        .iter()
        .filter_map(|r| match r.alert.position?.fix {
            Fix::Gnss { lat, lon } => Some((lon, lat, r)),
            Fix::Chainage { .. } => None,
        })
        .collect();
    // The chart shows the kind most alerts carry.
    let (points, caption, x_label, y_label): (Vec<(f64, f64, &Row)>, &str, &str, &str) =
        if !chainage.is_empty() && chainage.len() >= gnss.len() {
            (
                chainage
                    .iter()
                    .map(|&(m, r)| (m, f64::from(r.alert.score), r))
                    .collect(),
                "Alerts along the structure",
                "chainage (m)",
                "score",
            )
        } else if !gnss.is_empty() {
            (gnss, "Alerts by GNSS position", "longitude", "latitude")
        } else {
            (
                rows.iter()
                    .map(|r| (r.alert.seq as f64, f64::from(r.alert.score), r))
                    .collect(),
                "Alerts in order (no positions)",
                "alert number",
                "score",
            )
        };
    let range = |values: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if !lo.is_finite() {
            return (0.0, 1.0);
        }
        let pad = ((hi - lo) * 0.05).max(if hi.abs() > 1.0 {
            1e-3 * hi.abs()
        } else {
            1e-3
        });
        (lo - pad, hi + pad)
    };
    let (x0, x1) = range(&mut points.iter().map(|p| p.0));
    let (y0, y1) = range(&mut points.iter().map(|p| p.1));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(x, y, r)| Circle::new((x, y), 6, severity(&r.alert).filled())),
            )
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(rows: &[Row], chart: &str, section_m: f64) -> String {
    let devices: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.alert.device.as_str()).collect();
    let models: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.alert.model.as_str()).collect();
    let join = |s: &std::collections::BTreeSet<&str>| {
        escape(&s.iter().copied().collect::<Vec<_>>().join(", "))
    };
    let times: Vec<String> = rows
        .iter()
        .map(|r| humantime::format_rfc3339_millis(r.alert.time).to_string())
        .collect();
    let (first, last) = (
        times.iter().min().cloned().unwrap_or_default(),
        times.iter().max().cloned().unwrap_or_default(),
    );
    let mut counts: BTreeMap<i64, (usize, f32)> = BTreeMap::new();
    for r in rows {
        if let Some(s) = r.section {
            let c = counts.entry(s).or_insert((0, f32::MIN));
            c.0 += 1;
            c.1 = c.1.max(r.alert.score);
        }
    }
    let max_score = rows
        .iter()
        .map(|r| r.alert.score)
        .fold(0.0f32, f32::max)
        .max(0.0);
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Inspection report: {devices}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
h1 {{ margin-bottom: 4px; }}
.meta {{ color: #555; margin-top: 0; }}
table {{ border-collapse: collapse; margin: 12px 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: middle; }}
th {{ background: #f2f2f2; }}
td img {{ width: 96px; height: 96px; object-fit: cover; display: block; }}
.filters {{ background: #f7f7f7; padding: 8px 12px; display: inline-block; }}
.stale {{ color: #a60; }}
</style></head>
<body>
<h1>Inspection report</h1>
<p class="meta">Device <b>{devices}</b>, model <b>{models}</b>: <b id="total">{total}</b> alerts from {first} to {last}.</p>
<div id="chart">{chart}</div>
"#,
        devices = join(&devices),
        models = join(&models),
        total = rows.len(),
        first = escape(&first),
        last = escape(&last),
    );
    if !counts.is_empty() {
        let _ = write!(
            html,
            "<h2>Alerts by section ({section_m:.0} m)</h2>\n<table id=\"sections\"><thead><tr>\
             <th>section</th><th>alerts</th><th>highest score</th></tr></thead><tbody>\n"
        );
        for (s, (n, max)) in &counts {
            let _ = writeln!(
                html,
                "<tr data-section=\"{s}\"><td>{}</td><td>{n}</td><td>{max:.3}</td></tr>",
                section_name(*s, section_m)
            );
        }
        html.push_str("</tbody></table>\n");
    }
    let _ = write!(
        html,
        "<h2>Alerts</h2>\n<div class=\"filters\"><label>Score at least <input id=\"min-score\" \
         type=\"number\" step=\"0.01\" min=\"0\" max=\"{max_score:.3}\" value=\"0\"></label> \
         <label>Section <select id=\"section\"><option value=\"\">all</option>"
    );
    for s in counts.keys() {
        let _ = write!(
            html,
            "<option value=\"{s}\">{}</option>",
            section_name(*s, section_m)
        );
    }
    html.push_str(
        "</select></label> <span><b id=\"shown\"></b> shown</span></div>\n\
         <table id=\"alerts\"><thead><tr><th>alert</th><th>time</th><th>place</th>\
         <th>score / threshold</th><th>tile</th><th>image</th><th>heatmap</th></tr></thead><tbody>\n",
    );
    for (r, time) in rows.iter().zip(&times) {
        let a = &r.alert;
        let img = |src: &Option<String>, what: &str| match src {
            Some(src) => format!("<img alt=\"{what} of alert {}\" src=\"{src}\">", a.seq),
            None => "&mdash;".into(),
        };
        let stale = a.position.is_some_and(|p| p.stale);
        let _ = writeln!(
            html,
            "<tr data-seq=\"{seq}\" data-score=\"{score}\" data-section=\"{section}\"><td>{seq}</td>\
             <td>{time}</td><td{class}>{place}</td><td>{score:.3} / {threshold:.3}</td>\
             <td>#{tile} at {x},{y}</td><td>{image}</td><td>{heat}</td></tr>",
            seq = a.seq,
            score = a.score,
            section = r.section.map(|s| s.to_string()).unwrap_or_default(),
            time = escape(time),
            class = if stale { " class=\"stale\"" } else { "" },
            place = escape(&place(a)),
            threshold = a.threshold,
            tile = a.tile_index,
            x = a.region.x,
            y = a.region.y,
            image = img(&r.tile, "tile"),
            heat = img(&r.heatmap, "heatmap"),
        );
    }
    html.push_str(
        r##"</tbody></table>
<script>
"use strict";
function applyFilters() {
  const min = Number(document.getElementById("min-score").value) || 0;
  const section = document.getElementById("section").value;
  let shown = 0;
  for (const row of document.querySelectorAll("#alerts tbody tr")) {
    const keep = Number(row.dataset.score) >= min && (section === "" || row.dataset.section === section);
    row.hidden = !keep;
    if (keep) shown += 1;
  }
  document.getElementById("shown").textContent = String(shown);
}
document.getElementById("min-score").addEventListener("input", applyFilters);
document.getElementById("section").addEventListener("change", applyFilters);
applyFilters();
</script>
</body></html>
"##,
    );
    html
}

fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "seq,time,device,model,boot,source,chainage_m,lat,lon,age_ms,stale,section,score,\
         threshold,tile_index,region_x,region_y,region_w,region_h,area\n",
    );
    for r in rows {
        let a = &r.alert;
        let [source, chainage, lat, lon, age, stale] = crate::position_columns(a.position);
        let g = &a.region;
        let _ = writeln!(
            out,
            "{},{},{},{},{:016x},{source},{chainage},{lat},{lon},{age},{stale},{},{},{},{},{},{},{},{},{}",
            a.seq,
            humantime::format_rfc3339_millis(a.time),
            a.device,
            a.model,
            a.boot,
            r.section.map(|s| s.to_string()).unwrap_or_default(),
            a.score,
            a.threshold,
            a.tile_index,
            g.x,
            g.y,
            g.width,
            g.height,
            a.area_fraction
        );
    }
    out
}
