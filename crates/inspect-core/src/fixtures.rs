//! Known-function models and frames, for tests, benchmarks and the synthetic demo.
//!
//! The *brightness bundle* is a real bundle written with the ONNX writer whose extractor averages
//! grey level over 8, 16 and 32-pixel cells and whose head scores each cell with a Gaussian
//! log-likelihood around the expected brightness: a dark or bright patch on an even surface is an
//! anomaly. Its outputs can be computed by hand, which is what makes it a test fixture.
//! [`concrete_frame`] draws an even, concrete-like surface with dark patches planted at known places.

use std::path::Path;

use image::RgbImage;

use crate::bundle::{
    logp_name, tap_name, write_bundle, BundleError, Combine, ExtractorSpec, HeadSpec, InputSpec,
    LevelSpec, Manifest, ScoreSpec, ThresholdSpec, FORMAT_VERSION,
};
use crate::onnx::{Dim, ModelBuilder, OnnxWriteError, Padding};
use crate::random::SplitMix;
use crate::tiler::PixelBox;

/// Errors of writing a fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// Building an ONNX model failed.
    #[error(transparent)]
    Onnx(#[from] OnnxWriteError),
    /// Writing the bundle failed.
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// Strides of the three taps, as in the real extractor.
pub const STRIDES: [usize; 3] = [8, 16, 32];

/// Parameters of the brightness bundle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BrightnessModel {
    /// Model input side in pixels (a multiple of 32).
    pub input_size: usize,
    /// Expected grey level of a normal surface, 0..1.
    pub mean: f32,
    /// Tolerated deviation of a cell's grey level (standard deviation), 0..1.
    pub sigma: f32,
    /// Alert threshold on the anomaly score (0..3: three levels summed).
    pub threshold: f32,
}

impl Default for BrightnessModel {
    fn default() -> Self {
        BrightnessModel {
            input_size: 128,
            mean: 0.55,
            sigma: 0.08,
            threshold: 0.8,
        }
    }
}

/// Extractor: grey level averaged over 8, 16 and 32-pixel cells, one channel per tap.
pub fn brightness_extractor(input_size: usize) -> Result<Vec<u8>, OnnxWriteError> {
    let mut b = ModelBuilder::new("brightness-extractor");
    let x = b.input(
        "image",
        &[1.into(), 3.into(), input_size.into(), input_size.into()],
    );
    let gray = b.conv(
        &x,
        &[1.0 / 3.0; 3],
        [1, 3, 1, 1],
        None,
        1,
        Padding::Symmetric(0),
        1,
    );
    for stride in STRIDES {
        b.average_pool(&gray, stride);
        let tap = b.name_last_output(&tap_name(stride));
        let side = input_size / stride;
        b.output(&tap, &[1.into(), 1.into(), side.into(), side.into()]);
    }
    b.to_bytes()
}

/// Head: per level, `logp = -0.5 ((f - mean) / sigma)^2 - 0.5 ln(2 pi)`, shape `N x h x w`.
pub fn brightness_head(
    input_size: usize,
    mean: f32,
    sigma: f32,
) -> Result<Vec<u8>, OnnxWriteError> {
    let mut b = ModelBuilder::new("brightness-head");
    let half_ln_2pi = 0.5 * (2.0 * std::f32::consts::PI).ln();
    let mut outputs = Vec::new();
    for stride in STRIDES {
        let side = input_size / stride;
        let f = b.input(
            &tap_name(stride),
            &["N".into(), 1.into(), side.into(), side.into()],
        );
        let centred = b.binary_const("Sub", &f, &[], &[mean]);
        let z = b.binary_const("Mul", &centred, &[], &[1.0 / sigma]);
        let z2 = b.node("Mul", &[&z, &z], vec![]);
        let scaled = b.binary_const("Mul", &z2, &[], &[-0.5]);
        let logp = b.binary_const("Add", &scaled, &[], &[-half_ln_2pi]);
        b.squeeze(&logp, &[1]);
        outputs.push((b.name_last_output(&logp_name(stride)), side));
    }
    for (name, side) in outputs {
        b.output(&name, &["N".into(), Dim::Fixed(side), Dim::Fixed(side)]);
    }
    b.to_bytes()
}

/// The manifest of the brightness bundle (file hashes are filled in by [`write_bundle`]).
pub fn brightness_manifest(model: &BrightnessModel) -> Manifest {
    let half_ln_2pi = 0.5 * (2.0 * std::f32::consts::PI).ln();
    let mut training = toml::Table::new();
    training.insert(
        "note".into(),
        toml::Value::String("known-function fixture: Gaussian on cell brightness".into()),
    );
    Manifest {
        format_version: FORMAT_VERSION,
        input: InputSpec {
            width: model.input_size,
            height: model.input_size,
            mean: [0.0; 3],
            std: [1.0; 3],
        },
        extractor: ExtractorSpec {
            file: "extractor.onnx".into(),
            name: "brightness-cells".into(),
        },
        head: HeadSpec {
            file: "head.onnx".into(),
        },
        levels: STRIDES
            .iter()
            .map(|&stride| LevelSpec {
                tap: tap_name(stride),
                logp: logp_name(stride),
                channels: 1,
                height: model.input_size / stride,
                width: model.input_size / stride,
                stride,
            })
            .collect(),
        // The density's peak: a cell at exactly `mean` scores likelihood 1 per level.
        score: ScoreSpec::new(
            Combine::Sum,
            vec![-half_ln_2pi; STRIDES.len()],
            STRIDES.len() as f32,
        ),
        threshold: ThresholdSpec {
            value: model.threshold,
            method: "manual".into(),
            false_alarm_rate: None,
            estimator: None,
        },
        training: Some(training),
        metrics: None,
        files: Default::default(),
        bundle_version: 0,
    }
}

/// Writes the brightness bundle into `dir`.
pub fn write_brightness_bundle(dir: &Path, model: &BrightnessModel) -> Result<(), FixtureError> {
    let extractor = brightness_extractor(model.input_size)?;
    let head = brightness_head(model.input_size, model.mean, model.sigma)?;
    write_bundle(
        dir,
        &brightness_manifest(model),
        &[("extractor.onnx", &extractor), ("head.onnx", &head)],
    )?;
    Ok(())
}

/// Draws an even concrete-like surface (grey ~0.55 with slow shading and grain) with a dark patch
/// in each of `defects`.
pub fn concrete_frame(width: u32, height: u32, seed: u64, defects: &[PixelBox]) -> RgbImage {
    let mut rng = SplitMix::new(seed);
    let phase: [f32; 4] = std::array::from_fn(|_| rng.unit() * std::f32::consts::TAU);
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let shade = 6.0 * (fx / 97.0 + phase[0]).sin() * (fy / 131.0 + phase[1]).cos()
            + 4.0 * ((fx + fy) / 53.0 + phase[2]).sin();
        let grain = (rng.unit() - 0.5) * 24.0;
        let inside = defects
            .iter()
            .any(|d| x >= d.x && x < d.x + d.width && y >= d.y && y < d.y + d.height);
        let base = if inside {
            30.0 + grain * 0.5
        } else {
            140.0 + shade + grain
        };
        let v = base.clamp(0.0, 255.0);
        // A slight warm tint, as under tunnel lighting.
        image::Rgb([
            (v + 3.0).min(255.0) as u8,
            v as u8,
            (v - 3.0).max(0.0) as u8,
        ])
    })
}

/// Writes the brightness bundle (default model) into `dir/bundle` and returns that path.
pub fn brightness_bundle_in(dir: &Path) -> Result<std::path::PathBuf, FixtureError> {
    let path = dir.join("bundle");
    write_brightness_bundle(&path, &BrightnessModel::default())?;
    Ok(path)
}

/// A square defect box of `side` pixels with its top-left corner at (`x`, `y`).
pub fn square(x: u32, y: u32, side: u32) -> PixelBox {
    PixelBox {
        x,
        y,
        width: side,
        height: side,
    }
}

/// A fresh scratch folder for one test, removed when dropped.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    /// Creates `<temp>/edge-inspector-<name>-<pid>`, empty.
    pub fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("edge-inspector-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch folder under the temporary directory");
        Scratch(dir)
    }

    /// `rel` inside the folder.
    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
