//! Running a bundle's models with tract.
//!
//! Model -> optimized plan -> reusable state, as tract intends: the extractor is optimized once for
//! one `1 x 3 x H x W` tile; the head is optimized per batch size (the number of tiles of a frame,
//! which is fixed for a camera) because batching all tiles into the head lets tract use
//! matrix-matrix kernels. Each plan keeps one state, reused frame after frame.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::SimpleState;

use crate::bundle::{Bundle, BundleError};

/// Head plans kept at once (one per batch size, least recently used dropped first): a camera has
/// one frame size, so one batch; a few more cover evaluation tools that mix sizes.
pub const MAX_HEAD_PLANS: usize = 4;

pub use crate::tract_env::avoid_faulty_kernels;

/// Errors while preparing or running the models.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The bundle's model could not be optimized or typed for this batch.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// tract failed to optimize or run a model.
    #[error("{model}: {message}")]
    Tract {
        /// `extractor` or `head`.
        model: &'static str,
        /// tract's message.
        message: String,
    },
    /// The caller passed a batch of the wrong size.
    #[error("input holds {got} values, expected {expected} ({tiles} tiles of 3x{height}x{width})")]
    InputSize {
        /// Values expected.
        expected: usize,
        /// Values given.
        got: usize,
        /// Tiles in the batch.
        tiles: usize,
        /// Input height.
        height: usize,
        /// Input width.
        width: usize,
    },
}

fn tract_err(model: &'static str) -> impl Fn(TractError) -> EngineError {
    move |e| EngineError::Tract {
        model,
        message: format!("{e:#}"),
    }
}

/// Arithmetic of the extractor. The flow head always runs in float32: its log-determinants
/// sum many small terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtractorPrecision {
    /// float32 everywhere (int8 extractors are int8 inside and float32 at their edges).
    #[default]
    F32,
    /// float16 through tract's `f32_to_f16` transform: for aarch64 boards with fp16 arithmetic
    /// (Cortex-A76, Raspberry Pi 5); elsewhere tract emulates it, slowly.
    F16,
}

struct HeadPlan {
    batch: usize,
    state: TypedSimpleState,
}

/// Per-level log-likelihood maps for a batch of tiles: `levels[l]` is `tiles x height_l x width_l`.
#[derive(Clone, Debug, Default)]
pub struct LevelMaps {
    /// Tiles in the batch.
    pub tiles: usize,
    /// Row-major maps per level.
    pub levels: Vec<Vec<f32>>,
    /// `(height, width)` per level.
    pub sizes: Vec<(usize, usize)>,
}

impl LevelMaps {
    /// The map of `level` for tile `tile`.
    pub fn tile(&self, level: usize, tile: usize) -> &[f32] {
        let (h, w) = self.sizes[level];
        &self.levels[level][tile * h * w..(tile + 1) * h * w]
    }
}

/// The bundle's models, optimized and ready to run.
pub struct Engine {
    bundle: Bundle,
    precision: ExtractorPrecision,
    extractor_plan: Arc<TypedSimplePlan>,
    // One state per inference worker: the tiles of a frame are spread over them.
    extractors: Vec<TypedSimpleState>,
    heads: Vec<HeadPlan>,
    // Head inputs: one `batch x C x h x w` buffer per level, refilled per frame.
    features: Vec<Vec<f32>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model_id", &self.bundle.model_id)
            .field(
                "head_batches",
                &self.heads.iter().map(|h| h.batch).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Sets how many threads tract's matrix products use (process-wide).
pub fn set_threads(threads: usize) {
    use tract_linalg::multithread::{set_default_executor, Executor};
    if threads > 1 {
        set_default_executor(Executor::multithread(threads));
    } else {
        set_default_executor(Executor::SingleThread);
    }
}

impl Engine {
    /// Optimizes the bundle's extractor; head plans are made on first use of each batch size.
    pub fn new(bundle: Bundle, precision: ExtractorPrecision) -> Result<Engine, EngineError> {
        avoid_faulty_kernels();
        let mut model = bundle.extractor.clone();
        if precision == ExtractorPrecision::F16 {
            let err = tract_err("extractor");
            let f16 = tract_onnx::tract_core::transform::get_transform("f32_to_f16")
                .map_err(&err)?
                .ok_or_else(|| EngineError::Tract {
                    model: "extractor",
                    message: "this tract has no f32_to_f16 transform".into(),
                })?;
            model = f16.transform_into(model).map_err(&err)?;
        }
        let plan = optimize(model, Kernels::Project)
            .and_then(|m| m.into_runnable())
            .map_err(tract_err("extractor"))?;
        let extractor = SimpleState::new(&plan).map_err(tract_err("extractor"))?;
        let features = vec![Vec::new(); bundle.manifest.levels.len()];
        Ok(Engine {
            bundle,
            precision,
            extractor_plan: plan,
            extractors: vec![extractor],
            heads: Vec::new(),
            features,
        })
    }

    /// Spreads the tiles of each frame over `workers` threads (at least 1), each with its own
    /// extractor state on the shared plan.
    pub fn set_workers(&mut self, workers: usize) -> Result<(), EngineError> {
        let workers = workers.max(1);
        self.extractors.truncate(workers);
        while self.extractors.len() < workers {
            let state = SimpleState::new(&self.extractor_plan).map_err(tract_err("extractor"))?;
            self.extractors.push(state);
        }
        Ok(())
    }

    /// Inference workers.
    pub fn workers(&self) -> usize {
        self.extractors.len()
    }

    /// The loaded bundle.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// Values in one model-input tile (`3 x H x W`).
    pub fn tile_len(&self) -> usize {
        let i = &self.bundle.manifest.input;
        3 * i.width * i.height
    }

    /// The batch sizes whose head plans are kept, least recently used first.
    pub fn cached_head_batches(&self) -> Vec<usize> {
        self.heads.iter().map(|h| h.batch).collect()
    }

    fn head_state(&mut self, batch: usize) -> Result<&mut TypedSimpleState, EngineError> {
        if let Some(i) = self.heads.iter().position(|h| h.batch == batch) {
            // Most recently used last.
            let head = self.heads.remove(i);
            self.heads.push(head);
            return Ok(&mut self.heads.last_mut().expect("just pushed").state);
        }
        // Bounded: a stream of odd batch sizes cannot grow memory without end.
        if self.heads.len() >= MAX_HEAD_PLANS {
            let evicted = self.heads.remove(0);
            log::info!(
                "dropping the head plan for batches of {} tiles",
                evicted.batch
            );
        }
        log::info!("optimizing the head for batches of {batch} tiles");
        let plan = self
            .bundle
            .head_for_batch(batch)?
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(tract_err("head"))?;
        let state = SimpleState::new(&plan).map_err(tract_err("head"))?;
        self.heads.push(HeadPlan { batch, state });
        Ok(&mut self.heads.last_mut().expect("just pushed").state)
    }

    /// Runs `tiles` model-input tiles (planar, normalized, back to back) and returns the
    /// per-level log-likelihood maps.
    pub fn run(
        &mut self,
        input: &[f32],
        tiles: usize,
        out: &mut LevelMaps,
    ) -> Result<(), EngineError> {
        let manifest = &self.bundle.manifest;
        let (h, w) = (manifest.input.height, manifest.input.width);
        let tile_len = 3 * h * w;
        if tiles == 0 || input.len() != tiles * tile_len {
            return Err(EngineError::InputSize {
                expected: tiles * tile_len,
                got: input.len(),
                tiles,
                height: h,
                width: w,
            });
        }
        for (buf, level) in self.features.iter_mut().zip(&manifest.levels) {
            buf.resize(tiles * level.channels * level.height * level.width, 0.0);
        }
        let level_lens: Vec<usize> = manifest
            .levels
            .iter()
            .map(|l| l.channels * l.height * l.width)
            .collect();
        let workers = self.extractors.len().min(tiles);
        if workers <= 1 {
            let mut outs: Vec<&mut [f32]> = self.features.iter_mut().map(|b| &mut b[..]).collect();
            extract(
                &mut self.extractors[0],
                self.precision,
                (h, w),
                input,
                &level_lens,
                &mut outs,
            )?;
        } else {
            // Contiguous runs of tiles per worker; each writes its own slice of every level.
            let per = tiles.div_ceil(workers);
            let mut chunks: Vec<_> = self
                .features
                .iter_mut()
                .zip(&level_lens)
                .map(|(buf, &n)| buf.chunks_mut(per * n))
                .collect();
            let precision = self.precision;
            let level_lens = &level_lens;
            std::thread::scope(|scope| {
                let mut running = Vec::with_capacity(workers);
                for (state, tiles_in) in
                    self.extractors.iter_mut().zip(input.chunks(per * tile_len))
                {
                    let mut outs: Vec<&mut [f32]> =
                        chunks.iter_mut().filter_map(|c| c.next()).collect();
                    running.push(scope.spawn(move || {
                        extract(state, precision, (h, w), tiles_in, level_lens, &mut outs)
                    }));
                }
                running
                    .into_iter()
                    .try_for_each(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            })?;
        }
        let shapes: Vec<[usize; 4]> = manifest
            .levels
            .iter()
            .map(|l| [tiles, l.channels, l.height, l.width])
            .collect();
        let sizes: Vec<(usize, usize)> = manifest
            .levels
            .iter()
            .map(|l| (l.height, l.width))
            .collect();
        let mut inputs = TVec::new();
        for (buf, shape) in self.features.iter().zip(&shapes) {
            inputs.push(
                Tensor::from_shape(shape, buf)
                    .map_err(tract_err("head"))?
                    .into(),
            );
        }
        let state = self.head_state(tiles)?;
        let maps = state.run(inputs).map_err(tract_err("head"))?;
        out.tiles = tiles;
        out.sizes = sizes;
        out.levels.resize(maps.len(), Vec::new());
        for (dst, map) in out.levels.iter_mut().zip(maps.iter()) {
            let view = map
                .to_plain_array_view::<f32>()
                .map_err(tract_err("head"))?;
            dst.clear();
            dst.extend(view.iter().copied());
        }
        Ok(())
    }
}

/// Runs the extractor on back-to-back `tiles` (each `3 x h x w`) and writes each tile's taps
/// into `outs` (one slice per level, `level_lens[l]` values per tile).
fn extract(
    state: &mut TypedSimpleState,
    precision: ExtractorPrecision,
    (h, w): (usize, usize),
    tiles: &[f32],
    level_lens: &[usize],
    outs: &mut [&mut [f32]],
) -> Result<(), EngineError> {
    for (t, tile) in tiles.chunks_exact(3 * h * w).enumerate() {
        let mut x = Tensor::from_shape(&[1, 3, h, w], tile).map_err(tract_err("extractor"))?;
        if precision == ExtractorPrecision::F16 {
            x = x
                .cast_to::<f16>()
                .map_err(tract_err("extractor"))?
                .into_owned();
        }
        let taps = state.run(tvec!(x.into())).map_err(tract_err("extractor"))?;
        for ((tap, out), &n) in taps.iter().zip(outs.iter_mut()).zip(level_lens) {
            let tap = tap.cast_to::<f32>().map_err(tract_err("extractor"))?;
            let view = tap
                .to_plain_array_view::<f32>()
                .map_err(tract_err("extractor"))?;
            for (dst, src) in out[t * n..(t + 1) * n].iter_mut().zip(view.iter()) {
                *dst = *src;
            }
        }
    }
    Ok(())
}

/// Parses and optimizes an in-memory ONNX model with its declared input shapes: for tests,
/// calibration and tools that run a model a few times (the daemon uses [`Engine`]).
pub fn optimized_plan(onnx: &[u8]) -> Result<Arc<TypedSimplePlan>, EngineError> {
    optimized_plan_with(onnx, Kernels::Project)
}

/// Whose kernels run the ops the project has its own for (depthwise convolutions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// The project's ([`crate::kernels`]): depthwise convolutions in NEON / AVX2 / AVX-512 with
    /// bias and ReLU6 fused; the int8 convolutions' activation sums and requantization, and
    /// their weight zero-point corrections skipped when those are zero; float-to-int8
    /// quantization, fused into the depthwise op it follows.
    Project,
    /// tract's own, for comparison.
    Tract,
}

/// Declutters `model`, swaps in the project's kernels if asked, and optimizes it.
pub fn optimize(model: TypedModel, kernels: Kernels) -> TractResult<TypedModel> {
    let mut model = model.into_decluttered()?;
    if kernels == Kernels::Tract {
        return model.into_optimized();
    }
    crate::kernels::use_project_kernels(&mut model)?;
    let mut model = model.into_optimized()?;
    // The int8 convolutions' scaffolding only exists once tract has lowered them.
    crate::kernels::use_project_sums(&mut model)?;
    crate::kernels::skip_zero_corrections(&mut model)?;
    crate::kernels::use_project_requantize(&mut model)?;
    crate::kernels::use_project_quantize(&mut model)?;
    crate::kernels::fuse_depthwise_quantize(&mut model)?;
    Ok(model)
}

/// [`optimized_plan`] with the choice of kernels.
pub fn optimized_plan_with(
    onnx: &[u8],
    kernels: Kernels,
) -> Result<Arc<TypedSimplePlan>, EngineError> {
    avoid_faulty_kernels();
    tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(onnx))
        .and_then(|m| m.into_typed())
        .and_then(|m| optimize(m, kernels))
        .and_then(|m| m.into_runnable())
        .map_err(tract_err("model"))
}

/// Runs `plan` once on float inputs `(shape, values)`; returns every output as row-major floats.
pub fn run_plan(
    plan: &Arc<TypedSimplePlan>,
    inputs: &[(&[usize], &[f32])],
) -> Result<Vec<Vec<f32>>, EngineError> {
    let err = tract_err("model");
    let mut values = TVec::new();
    for (shape, data) in inputs {
        values.push(Tensor::from_shape(shape, data).map_err(&err)?.into());
    }
    let outputs = plan.run(values).map_err(&err)?;
    outputs
        .iter()
        .map(|t| {
            t.to_plain_array_view::<f32>()
                .map(|v| v.iter().copied().collect())
                .map_err(&err)
        })
        .collect()
}
