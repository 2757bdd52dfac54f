//! Charts as PNG (the evaluation's ROC and PRO curves, the seeds' spread per objective): drawn
//! by plotters into a pixel buffer and saved by `image`. Text uses the DejaVu Sans subset embedded from
//! `crates/inspect-train/assets/fonts/`, so charts look the same on every machine and need no system font.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

/// The embedded font (printable ASCII and a few symbols).
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-subset.ttf");

/// Colours of the series, in order: distinct for people with common colour-vision deficiencies
/// (Okabe-Ito).
const COLOURS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// Errors of drawing a chart.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PlotError {
    /// The chart file.
    pub path: PathBuf,
    /// What failed.
    pub message: String,
}

/// One curve of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(x, y)` points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A chart of curves over `x in 0..x_max`, `y in 0..1`.
#[derive(Clone, Debug)]
pub struct LineChart<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// X axis label.
    pub x_label: &'a str,
    /// Y axis label.
    pub y_label: &'a str,
    /// Right end of the x axis.
    pub x_max: f64,
    /// Draw the diagonal `y = x / x_max` (chance level of a ROC curve).
    pub diagonal: bool,
    /// The curves.
    pub series: &'a [Series],
}

/// Makes the embedded font plotters' `sans-serif` (once).
pub(crate) fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
                .map_err(|_| "the embedded font is unreadable".to_string())
        })
        .clone()
}

/// Draws into an RGB buffer of `width x height` with the embedded font, then saves it as PNG.
fn save_png(
    path: &Path,
    width: u32,
    height: u32,
    draw: impl FnOnce(&mut [u8]) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<(), PlotError> {
    let fail = |message: String| PlotError {
        path: path.to_path_buf(),
        message,
    };
    register_font().map_err(fail)?;
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    draw(&mut pixels).map_err(|e| fail(e.to_string()))?;
    let image = image::RgbImage::from_raw(width, height, pixels)
        .ok_or_else(|| fail("pixel buffer of the wrong size".into()))?;
    image.save(path).map_err(|e| fail(e.to_string()))
}

impl LineChart<'_> {
    /// Draws the chart at `width x height` pixels into `path` (PNG).
    pub fn save(&self, path: &Path, width: u32, height: u32) -> Result<(), PlotError> {
        save_png(path, width, height, |pixels| {
            self.draw(pixels, width, height)
        })
    }

    fn draw(
        &self,
        pixels: &mut [u8],
        width: u32,
        height: u32,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::with_buffer(pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(self.title, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(54)
            .build_cartesian_2d(0f64..self.x_max, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .label_style(("sans-serif", 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        if self.diagonal {
            chart.draw_series(LineSeries::new(
                [(0.0, 0.0), (self.x_max, 1.0)],
                RGBColor(170, 170, 170).stroke_width(1),
            ))?;
        }
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    series
                        .points
                        .iter()
                        .copied()
                        .filter(|&(x, _)| x <= self.x_max),
                    colour.stroke_width(2),
                ))?
                .label(series.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(120, 120, 120))
            .draw()?;
        root.present()?;
        Ok(())
    }
}

/// One figure of [`SpreadChart`]: each group's values (one per seed).
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// The figure's name (the panel's title).
    pub figure: String,
    /// `(group, values)`: a column of dots per group, in order.
    pub groups: Vec<(String, Vec<f64>)>,
}

/// Panels side by side, each a column per group (objective) with a dot per value (seed) and
/// the mean with one standard deviation either side: whether the groups' differences exceed
/// their spread can be seen at once.
#[derive(Clone, Debug)]
pub struct SpreadChart<'a> {
    /// Title above the panels.
    pub title: &'a str,
    /// The panels, left to right.
    pub panels: &'a [Panel],
}

impl SpreadChart<'_> {
    /// Draws the chart at `width x height` pixels into `path` (PNG).
    pub fn save(&self, path: &Path, width: u32, height: u32) -> Result<(), PlotError> {
        save_png(path, width, height, |pixels| {
            self.draw(pixels, width, height)
        })
    }

    fn draw(
        &self,
        pixels: &mut [u8],
        width: u32,
        height: u32,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::with_buffer(pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(self.title, ("sans-serif", 20))?;
        let areas = root.split_evenly((1, self.panels.len().max(1)));
        for (panel, area) in self.panels.iter().zip(&areas) {
            let values = || panel.groups.iter().flat_map(|(_, v)| v.iter().copied());
            let (lo, hi) = values().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
            if !lo.is_finite() {
                continue;
            }
            // A margin of 15% of the range (or of the value, when all are equal).
            let pad = ((hi - lo) * 0.15).max(hi.abs() * 1e-3).max(1e-9);
            let names: Vec<&str> = panel.groups.iter().map(|(n, _)| n.as_str()).collect();
            let n = names.len() as f64;
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.figure, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(56)
                .build_cartesian_2d(-0.5f64..n - 0.5, (lo - pad)..(hi + pad))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(names.len())
                .x_label_formatter(&|x| {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                        names[i as usize].to_string()
                    } else {
                        String::new()
                    }
                })
                .label_style(("sans-serif", 13))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()?;
            for (g, (_, v)) in panel.groups.iter().enumerate() {
                if v.is_empty() {
                    continue; // an objective some sweep lacks: nothing to place
                }
                let colour = COLOURS[g % COLOURS.len()];
                let x = g as f64;
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                let sd = if v.len() > 1 {
                    (v.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64)
                        .sqrt()
                } else {
                    0.0
                };
                // Mean and one standard deviation: a bar with ticks, beside the dots.
                let style = colour.stroke_width(2);
                chart.draw_series([
                    PathElement::new(vec![(x + 0.12, mean - sd), (x + 0.12, mean + sd)], style),
                    PathElement::new(vec![(x + 0.05, mean), (x + 0.19, mean)], style),
                ])?;
                // The seeds, spread a little sideways so equal values stay visible.
                chart.draw_series(v.iter().enumerate().map(|(k, &y)| {
                    let dx = -0.12 + 0.06 * (k % 3) as f64;
                    Circle::new((x + dx, y), 4, colour.filled())
                }))?;
            }
        }
        root.present()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_chart_draws_higher_values_higher_in_each_groups_colour() {
        let panel = Panel {
            figure: "AUPRO".into(),
            groups: vec![
                ("high".into(), vec![0.90, 0.91, 0.89]),
                ("low".into(), vec![0.10, 0.12, 0.11]),
            ],
        };
        let path = std::env::temp_dir().join(format!("spread-{}.png", std::process::id()));
        SpreadChart {
            title: "seeds",
            panels: &[panel],
        }
        .save(&path, 400, 300)
        .unwrap();
        let image = image::open(&path).unwrap().to_rgb8();
        std::fs::remove_file(&path).unwrap();
        // Mean row of each group's colour: the high group's dots sit above the low group's.
        let mean_row = |c: RGBColor| {
            let rows: Vec<u32> = image
                .enumerate_pixels()
                .filter(|(_, _, p)| p.0 == [c.0, c.1, c.2])
                .map(|(_, y, _)| y)
                .collect();
            assert!(rows.len() > 20, "{} pixels of {c:?}", rows.len());
            rows.iter().sum::<u32>() as f64 / rows.len() as f64
        };
        let (high, low) = (mean_row(COLOURS[0]), mean_row(COLOURS[1]));
        assert!(high + 100.0 < low, "high at row {high}, low at row {low}");
    }
}
