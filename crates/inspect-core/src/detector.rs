//! The one detection pipeline: pixels -> model input -> [`Engine`] -> [`Scorer`]. The daemon
//! runs it on frames cut into tiles, `eval` and calibration on whole images resized to the
//! model input; all three go through this type, so what is measured and calibrated is what runs
//! on the device.

use std::path::PathBuf;

use image::RgbImage;

use crate::bundle::trust::{PublicKey, Trust};
use crate::bundle::{Bundle, BundleError, Manifest, ScoreSpec};
use crate::engine::{Engine, EngineError, ExtractorPrecision, LevelMaps};
use crate::scorer::{frame_baseline, Scorer, TileScore};
use crate::settings::{Checker, ConfigError};
use crate::tiler::{self, model_box_to_frame, sample_tile, PixelBox, Tile, TileGrid};

/// How frames are cut into tiles: the daemon's `[tiling]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tiling {
    /// Tile side in frame pixels, 32-4096.
    pub tile_size: u32,
    /// Pixels shared by neighbouring tiles, 0 to half the tile size.
    #[serde(default)]
    pub overlap: u32,
}

impl Tiling {
    /// Checks the tile size and that neighbours share at most half a tile.
    pub fn validate(&self, c: &Checker<'_>) -> Result<(), ConfigError> {
        c.range("tiling.tile_size", self.tile_size, 32, 4096)?;
        c.range("tiling.overlap", self.overlap, 0, self.tile_size / 2)
    }
}

/// `[model]`: the bundle and how to run it.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Threads for tract's matrix products, 1-16.
    #[serde(default = "one")]
    pub threads: usize,
    /// Inference workers, 1-16: the tiles of a frame are spread over this many threads, each
    /// with its own extractor state (a 4-core Pi: e.g. `workers = 4`, `threads = 1`).
    #[serde(default = "one")]
    pub workers: usize,
    /// Overrides the bundle's calibrated threshold (use with care: it changes the false-alarm rate).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Extractor arithmetic: `f32`, or `f16` on boards with fp16 arithmetic (Raspberry Pi 5).
    #[serde(default)]
    pub precision: ExtractorPrecision,
    /// Public key (64 hexadecimal digits, from `inspect-train keygen`) every bundle must be
    /// signed with; absent: bundles are checked against their hashes only.
    #[serde(default)]
    pub public_key: Option<String>,
    /// The last-known-good bundle, loaded when `bundle` is refused (unsigned, changed, older
    /// or damaged), so the device keeps inspecting instead of restarting in a loop.
    #[serde(default)]
    pub fallback_bundle: Option<PathBuf>,
    /// With `public_key`: the file that keeps the newest `bundle_version` accepted; an older
    /// `bundle` is refused (no rollback).
    #[serde(default)]
    pub version_file: Option<PathBuf>,
}

fn one() -> usize {
    1
}

impl ModelSettings {
    /// Checks the thread counts and the threshold override.
    pub fn validate(&self, c: &Checker<'_>) -> Result<(), ConfigError> {
        c.range("model.threads", self.threads, 1, 16)?;
        c.range("model.workers", self.workers, 1, 16)?;
        if let Some(key) = &self.public_key {
            PublicKey::from_hex(key).map_err(|e| {
                c.fail(
                    "model.public_key",
                    format!("{key:?}"),
                    &format!("the 64 hexadecimal digits of inspect-train keygen's .pub file ({e})"),
                )
            })?;
        }
        if self.version_file.is_some() && self.public_key.is_none() {
            return Err(c.fail(
                "model.version_file",
                "(set)",
                "needs model.public_key: without signatures a version number proves nothing",
            ));
        }
        match self.threshold {
            Some(t) if !t.is_finite() => {
                Err(c.fail("model.threshold", t, "expected a finite number"))
            }
            _ => Ok(()),
        }
    }
}

impl ModelSettings {
    /// What bundles must satisfy: signed with `public_key`, not older than `version_file` says.
    fn trust(&self) -> Option<Trust> {
        let key = PublicKey::from_hex(self.public_key.as_deref()?).ok()?;
        let min_version = self
            .version_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        Some(Trust { key, min_version })
    }

    /// Loads `bundle` (signed and current when a public key is set) and records its version;
    /// when it is refused, logs why and loads `fallback_bundle` (signed, any version) instead.
    /// Returns the bundle and whether it is the fallback.
    pub fn load_bundle(&self) -> Result<(Bundle, bool), BundleError> {
        let trust = self.trust();
        let refused = match Bundle::load_trusted(&self.bundle, trust.as_ref()) {
            Ok(bundle) => {
                self.record_version(&bundle, trust.as_ref());
                return Ok((bundle, false));
            }
            Err(e) => e,
        };
        let Some(fallback) = &self.fallback_bundle else {
            return Err(refused);
        };
        log::error!(
            "{refused}; loading the last-known-good bundle {} instead",
            fallback.display()
        );
        let any_version = trust.map(|t| Trust {
            min_version: 0,
            ..t
        });
        match Bundle::load_trusted(fallback, any_version.as_ref()) {
            Ok(bundle) => Ok((bundle, true)),
            Err(e) => {
                log::error!("the fallback bundle is refused too: {e}");
                Err(refused)
            }
        }
    }

    /// Keeps the newest accepted `bundle_version` in `version_file` (written whole, then
    /// renamed, so a power cut leaves the old or the new number).
    fn record_version(&self, bundle: &Bundle, trust: Option<&Trust>) {
        let (Some(file), Some(trust)) = (&self.version_file, trust) else {
            return;
        };
        let version = bundle.manifest.bundle_version;
        if version <= trust.min_version && file.exists() {
            return;
        }
        let tmp = file.with_extension("tmp");
        let written = std::fs::write(&tmp, format!("{version}\n"))
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, file));
        if let Err(e) = written {
            log::warn!(
                "{}: cannot record bundle_version {version}: {e}",
                file.display()
            );
        }
    }
}

/// One tile's per-level log-likelihood maps (level-major, each `height_l x width_l`).
pub type TileLevelMaps = Vec<Vec<f32>>;

/// One tile of a frame, as decided.
#[derive(Clone, Copy, Debug)]
pub struct TileDetection<'a> {
    /// The tile: its index in the grid and its rectangle in frame pixels.
    pub tile: &'a Tile,
    /// Its score (maximum of the anomaly map).
    pub score: f32,
    /// The threshold it was decided against.
    pub threshold: f32,
    /// When the score passes the threshold: the region above it, in frame pixels, and the
    /// fraction of the tile's model pixels it covers.
    pub region: Option<(PixelBox, f32)>,
    /// The tile's anomaly map, row-major at model-input size.
    pub map: &'a [f32],
}

/// The bundle's models and score, with the buffers one frame needs (reused: steady state
/// allocates nothing per frame).
#[derive(Debug)]
pub struct Detector {
    engine: Engine,
    scorer: Scorer,
    input: Vec<f32>,
    maps: LevelMaps,
    grid: Option<(Tiling, TileGrid)>,
    /// The plain scores of a frame's tiles, for its baseline (reused between frames).
    plain_scores: Vec<f32>,
}

impl Detector {
    /// A detector for `bundle`, alerting above `threshold`.
    pub fn new(
        bundle: Bundle,
        precision: ExtractorPrecision,
        threshold: f32,
    ) -> Result<Detector, EngineError> {
        let scorer = Scorer::new(&bundle.manifest, threshold);
        Ok(Detector {
            engine: Engine::new(bundle, precision)?,
            scorer,
            input: Vec::new(),
            maps: LevelMaps::default(),
            grid: None,
            plain_scores: Vec::new(),
        })
    }

    /// The engine, for its settings (workers).
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The bundle's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.engine.bundle().manifest
    }

    /// The alert threshold in use.
    pub fn threshold(&self) -> f32 {
        self.scorer.threshold()
    }

    /// Changes the alert threshold (a peer's `set_threshold`, bounded by the link).
    pub fn set_threshold(&mut self, threshold: f32) {
        self.scorer.set_threshold(threshold);
    }

    /// Scores with other calibration constants than the bundle's (calibration computes them).
    pub fn set_score(&mut self, score: ScoreSpec) {
        let mut manifest = self.manifest().clone();
        manifest.score = score;
        self.scorer = Scorer::new(&manifest, self.scorer.threshold());
    }

    /// Cuts `frame` into tiles, runs them as one batch and hands each tile's decision to
    /// `decide`, in grid order. With a `frame_weight`, every tile is decided against the
    /// frame's baseline (the tiles are scored twice: plain, then against it). Returns the
    /// number of tiles.
    pub fn detect_frame(
        &mut self,
        frame: &RgbImage,
        tiling: Tiling,
        mut decide: impl FnMut(TileDetection<'_>),
    ) -> Result<usize, EngineError> {
        self.run_frame(frame, tiling)?;
        let Some((_, grid)) = self.grid.as_ref() else {
            return Ok(0);
        };
        let manifest = &self.engine.bundle().manifest;
        let (in_w, in_h) = (manifest.input.width as u32, manifest.input.height as u32);
        let weight = manifest.score.frame_weight;
        let baseline = if weight > 0.0 {
            self.plain_scores.clear();
            for tile in &grid.tiles {
                let plain = score_tile(&mut self.scorer, &self.maps, tile.index, 0.0);
                self.plain_scores.push(plain.score);
            }
            frame_baseline(&self.plain_scores, weight)
        } else {
            0.0
        };
        for tile in &grid.tiles {
            let scored = score_tile(&mut self.scorer, &self.maps, tile.index, baseline);
            let region = scored.region.map(|r| {
                let frame_box = model_box_to_frame(r.bbox, &tile.rect, in_w, in_h);
                (frame_box, r.area_fraction)
            });
            decide(TileDetection {
                tile,
                score: scored.score,
                threshold: self.scorer.threshold(),
                region,
                map: self.scorer.anomaly_map(),
            });
        }
        Ok(grid.tiles.len())
    }

    /// The tiles of `frame` as the daemon cuts them, each with its per-level log-likelihood
    /// maps before scoring (to compare and calibrate scores on daemon tiles).
    pub fn frame_level_maps(
        &mut self,
        frame: &RgbImage,
        tiling: Tiling,
    ) -> Result<Vec<(Tile, TileLevelMaps)>, EngineError> {
        self.run_frame(frame, tiling)?;
        let Some((_, grid)) = self.grid.as_ref() else {
            return Ok(Vec::new());
        };
        Ok(grid
            .tiles
            .iter()
            .map(|tile| {
                let maps = (0..self.maps.levels.len())
                    .map(|l| self.maps.tile(l, tile.index).to_vec())
                    .collect();
                (*tile, maps)
            })
            .collect())
    }

    /// The level maps of `image` as tiles with their rectangles in image pixels: the image
    /// resized whole into one tile (as `eval` scores it), or cut by `tiling` as the daemon cuts
    /// frames.
    pub fn tiles_level_maps(
        &mut self,
        image: &RgbImage,
        tiling: Option<Tiling>,
    ) -> Result<Vec<(PixelBox, TileLevelMaps)>, EngineError> {
        match tiling {
            None => {
                let whole = PixelBox {
                    x: 0,
                    y: 0,
                    width: image.width(),
                    height: image.height(),
                };
                Ok(vec![(whole, self.image_level_maps(image)?)])
            }
            Some(tiling) => Ok(self
                .frame_level_maps(image, tiling)?
                .into_iter()
                .map(|(tile, maps)| (tile.rect, maps))
                .collect()),
        }
    }

    /// Cuts `frame` into the grid of `tiling` (kept while frames keep their size) and runs
    /// every tile through the engine as one batch.
    fn run_frame(&mut self, frame: &RgbImage, tiling: Tiling) -> Result<(), EngineError> {
        let (fw, fh) = frame.dimensions();
        let regrid = self
            .grid
            .as_ref()
            .is_none_or(|(t, g)| *t != tiling || g.frame_width != fw || g.frame_height != fh);
        if regrid {
            let grid = TileGrid::new(fw, fh, tiling.tile_size, tiling.overlap);
            self.grid = Some((tiling, grid));
        }
        let Some((_, grid)) = self.grid.as_ref() else {
            return Ok(());
        };
        let input = &self.engine.bundle().manifest.input;
        let (in_w, in_h) = (input.width, input.height);
        let norm = input.normalization();
        let tile_len = 3 * in_w * in_h;
        self.input.resize(grid.tiles.len() * tile_len, 0.0);
        for (tile, out) in grid.tiles.iter().zip(self.input.chunks_exact_mut(tile_len)) {
            sample_tile(frame, &tile.rect, in_w, in_h, &norm, out);
        }
        self.engine
            .run(&self.input, grid.tiles.len(), &mut self.maps)
    }

    /// Scores a whole image resized to the model input (as the trainer sees images). Returns
    /// the resized image and its plain score (a frame's baseline is the caller's:
    /// [`relative_to_frames`](crate::scorer::relative_to_frames)); the map is
    /// [`Detector::anomaly_map`].
    pub fn detect_image(&mut self, image: &RgbImage) -> Result<(RgbImage, TileScore), EngineError> {
        let resized = self.run_image(image)?;
        let score = score_tile(&mut self.scorer, &self.maps, 0, 0.0);
        Ok((resized, score))
    }

    /// The per-level log-likelihood maps of a whole image resized to the model input, before
    /// scoring (calibration derives the score's constants from them).
    pub fn image_level_maps(&mut self, image: &RgbImage) -> Result<Vec<Vec<f32>>, EngineError> {
        self.run_image(image)?;
        Ok((0..self.maps.levels.len())
            .map(|l| self.maps.tile(l, 0).to_vec())
            .collect())
    }

    /// Plain score of per-level log-likelihood maps kept from [`Detector::image_level_maps`]
    /// or [`Detector::tiles_level_maps`].
    pub fn score_level_maps(&mut self, maps: &[Vec<f32>]) -> TileScore {
        score_levels(&mut self.scorer, maps.iter().map(Vec::as_slice), 0.0)
    }

    /// The anomaly map of the last scored tile or image, row-major at model-input size.
    pub fn anomaly_map(&self) -> &[f32] {
        self.scorer.anomaly_map()
    }

    fn run_image(&mut self, image: &RgbImage) -> Result<RgbImage, EngineError> {
        let input = &self.engine.bundle().manifest.input;
        let size = input.width;
        let norm = input.normalization();
        self.input.resize(3 * size * size, 0.0);
        let resized = tiler::model_input(image, size, &norm, &mut self.input);
        self.engine.run(&self.input, 1, &mut self.maps)?;
        Ok(resized)
    }
}

/// Scores tile `tile` of a batch's maps against `baseline`.
fn score_tile(scorer: &mut Scorer, maps: &LevelMaps, tile: usize, baseline: f32) -> TileScore {
    score_levels(
        scorer,
        (0..maps.levels.len()).map(|level| maps.tile(level, tile)),
        baseline,
    )
}

/// Scores one tile's per-level maps against `baseline`, gathered without allocating.
fn score_levels<'a>(
    scorer: &mut Scorer,
    maps: impl Iterator<Item = &'a [f32]>,
    baseline: f32,
) -> TileScore {
    let mut levels: heapless::Vec<&[f32], 8> = heapless::Vec::new();
    for map in maps {
        // The manifest allows at most 8 levels, so this never overflows.
        let _ = levels.push(map);
    }
    scorer.score_against(&levels, baseline)
}
