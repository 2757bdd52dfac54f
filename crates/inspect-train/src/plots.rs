//! Line charts as PNG (the evaluation's ROC and PRO curves): drawn by plotters into a pixel
//! buffer and saved by `image`. Text uses the DejaVu Sans subset embedded from
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

impl LineChart<'_> {
    /// Draws the chart at `width x height` pixels into `path` (PNG).
    pub fn save(&self, path: &Path, width: u32, height: u32) -> Result<(), PlotError> {
        let fail = |message: String| PlotError {
            path: path.to_path_buf(),
            message,
        };
        register_font().map_err(fail)?;
        let mut pixels = vec![0u8; width as usize * height as usize * 3];
        self.draw(&mut pixels, width, height)
            .map_err(|e| fail(e.to_string()))?;
        let image = image::RgbImage::from_raw(width, height, pixels)
            .ok_or_else(|| fail("pixel buffer of the wrong size".into()))?;
        image.save(path).map_err(|e| fail(e.to_string()))
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
