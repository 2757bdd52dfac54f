//! Heap allocations of the daemon's hot path in its steady state, counted by a global allocator.
//!
//! Counted per thread (the test harness runs tests on several threads); the engine runs with one
//! inference worker, on the calling thread. tract allocates every op's output tensor on each run,
//! so the extractor cannot reach zero without an arena inside tract: its count is held to a
//! bound instead, and must not grow frame after frame.

use std::cell::Cell;

use inspect_core::bundle::Bundle;
use inspect_core::engine::{optimize, Engine, ExtractorPrecision, Kernels, LevelMaps};
use inspect_core::fixtures::concrete_frame;
use inspect_core::scorer::Scorer;
use inspect_core::tiler::{sample_tile, Normalization, TileGrid};
use tract_onnx::prelude::*;

struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts, in a const-initialised
// thread-local without destructor (which never allocates).
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Heap allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// The Pi 4 rung's bundle (Lite0 int8), the one docs/PERFORMANCE.md measures.
fn lite0_bundle() -> Bundle {
    // The repository root (this crate lies in crates/inspect-core): demo/ is there.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the repository root");
    Bundle::load(&root.join("demo/lite0-bundle")).expect("Lite0 bundle")
}

/// Frames of 512x192 (3 tiles of 192 px, overlap 32, as the demo config; small enough for
/// qemu) with a defect, and the model-input buffer their tiles are sampled into.
struct Frames {
    grid: TileGrid,
    frames: Vec<image::RgbImage>,
    /// Model input width and height.
    size: (usize, usize),
    norm: Normalization,
    /// The tiles of one frame, planar and normalized, back to back.
    input: Vec<f32>,
}

impl Frames {
    fn new(manifest: &inspect_core::bundle::Manifest) -> Frames {
        let defects = [inspect_core::tiler::PixelBox {
            x: 100,
            y: 80,
            width: 60,
            height: 14,
        }];
        let grid = TileGrid::new(512, 192, 192, 32);
        let size = (manifest.input.width, manifest.input.height);
        let input = vec![0.0; grid.tiles.len() * 3 * size.0 * size.1];
        Frames {
            grid,
            frames: (0..3)
                .map(|s| concrete_frame(512, 192, s, &defects))
                .collect(),
            size,
            norm: Normalization {
                mean: manifest.input.mean,
                std: manifest.input.std,
            },
            input,
        }
    }

    /// Samples every tile of frame `index` (cycling through the frames) into `input`.
    fn sample(&mut self, index: usize) {
        let (w, h) = self.size;
        let frame = &self.frames[index % self.frames.len()];
        for (tile, out) in self
            .grid
            .tiles
            .iter()
            .zip(self.input.chunks_exact_mut(3 * w * h))
        {
            sample_tile(frame, &tile.rect, w, h, &self.norm, out);
        }
    }
}

#[test]
fn tiling_and_scoring_allocate_nothing_per_frame() {
    let manifest = lite0_bundle().manifest;
    let mut frames = Frames::new(&manifest);
    // Every tile flagged, so the region path (component labelling, box) runs too.
    let mut scorer = Scorer::new(&manifest, f32::MIN);
    let levels: Vec<Vec<f32>> = manifest
        .levels
        .iter()
        .enumerate()
        .map(|(l, level)| {
            (0..level.height * level.width)
                .map(|i| -(((i * 7 + l) % 13) as f32))
                .collect()
        })
        .collect();
    let mut counts = Vec::new();
    for index in 0..4 {
        counts.push(allocations(|| {
            frames.sample(index);
            for _ in &frames.grid.tiles {
                let mut maps: heapless::Vec<&[f32], 8> = heapless::Vec::new();
                for level in &levels {
                    maps.push(level).expect("at most 8 levels");
                }
                let scored = scorer.score(&maps);
                assert!(scored.region.is_some(), "every tile is over the threshold");
            }
        }));
    }
    // The first frame sizes the scorer's buffers; after that nothing is allocated.
    assert_eq!(
        &counts[1..],
        &[0, 0, 0],
        "allocations per frame: {counts:?}"
    );
}

#[test]
fn extractor_allocations_are_steady_and_bounded() {
    let bundle = lite0_bundle();
    let manifest = bundle.manifest.clone();
    let tract_plan = optimize(bundle.extractor.clone(), Kernels::Tract)
        .and_then(|m| m.into_runnable())
        .unwrap();
    let mut engine = Engine::new(bundle, ExtractorPrecision::F32).unwrap();
    assert_eq!(engine.workers(), 1);
    let mut frames = Frames::new(&manifest);
    let tiles = frames.grid.tiles.len();
    let mut maps = LevelMaps::default();
    let mut per_frame = Vec::new();
    for index in 0..4 {
        frames.sample(index);
        per_frame.push(allocations(|| {
            engine.run(&frames.input, tiles, &mut maps).unwrap();
        }));
    }
    // Steady: after the first frame (which optimizes the head for this batch), every frame
    // allocates the same, whatever its pixels.
    assert!(
        per_frame[1..].windows(2).all(|w| w[0] == w[1]),
        "allocations per frame drift: {per_frame:?}"
    );
    // Bounded: tract's own plan makes about 61 000 allocations per tile on this model, 56 000
    // of them in its generic integer sum (replaced by the project's); with the int8 tails fused
    // too about 3 600 remain, mostly tract's op outputs and packing.
    let per_tile = per_frame[3] / tiles as u64;
    let bound = 5_000;
    assert!(
        per_tile <= bound,
        "{per_tile} allocations per tile (bound {bound})"
    );
    // The bound is one the unpatched plan breaks.
    let mut state = tract_onnx::tract_core::plan::SimpleState::new(&tract_plan).unwrap();
    let (w, h) = frames.size;
    let tile = || Tensor::from_shape(&[1, 3, h, w], &frames.input[..3 * w * h]).unwrap();
    state.run(tvec!(tile().into())).unwrap();
    let tracts = allocations(|| {
        state.run(tvec!(tile().into())).unwrap();
    });
    eprintln!(
        "allocations per frame of {tiles} tiles: {per_frame:?}; per tile: project {per_tile}, \
         tract's plan {tracts}"
    );
    assert!(
        tracts > 5 * bound,
        "tract's plan: {tracts} allocations per tile, project's {per_tile}"
    );
}
