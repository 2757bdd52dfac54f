//! The CFlow-AD training loop on cached features: per image batch and level, the fibers of the
//! real images (and of their augmentations, at the same positions) are shuffled together and cut
//! into chunks of `fiber_batch`; each chunk is one Adam step of that level's decoder.
//!
//! Two backends run the steps ([`Backend`]): the hand-written CPU flow (`crate::flow::cpu`, the
//! default; levels train concurrently on `threads` threads) and burn (its CPU backend, or a GPU
//! one). Both draw the same shuffles from one generator per level and epoch, start from the
//! same weights and use the same Adam, so they follow the same trajectory.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, OptimizerRecord};
use burn::tensor::{Bytes, Device, Tensor, TensorData};

use super::checkpoint::{describe, Checkpoint, CheckpointError, SavedBlock, SavedLevel};
use super::settings::TrainSettings;
use super::TrainError;
use crate::features::build::CachedImage;
use crate::features::cache::{FeatureCache, FeatureRecord, RecordKey};
use crate::flow::coupling::BlockWeights;
use crate::flow::cpu::{self, Adam, Fibers, LevelTrainer, StepLoss};
use crate::flow::positional::{positional_fibers, CONDITION_DIM};
use crate::flow::{CouplingBlock, Decoder};
use crate::losses::{nf_paper, nf_reference, objective_term, NfLoss, Objective, PairedFibers};
use crate::records::progress_bar;
use crate::tensors::floats;
use inspect_core::random::SplitMix;

/// Shape of one feature level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelShape {
    /// Tap name.
    pub name: String,
    /// Channels.
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// What one epoch did.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochLog {
    /// Epoch, 0-based.
    pub epoch: u32,
    /// Learning rate used.
    pub lr: f64,
    /// Mean L_NF over the steps.
    pub nf: f64,
    /// Mean contrastive term over the steps where it was on (0 when off).
    pub contrastive: f64,
    /// Adam steps taken.
    pub steps: usize,
    /// Real fibers seen.
    pub fibers: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Per level: seconds spent in its steps (levels may have run concurrently).
    pub level_seconds: Vec<f64>,
    /// Per level: real fibers seen.
    pub level_fibers: Vec<usize>,
    /// Per level: augmented fibers equal to their real fiber, whose pass was the real one's
    /// (CPU trainer, contrastive epochs; 0 otherwise).
    pub level_shared: Vec<usize>,
}

impl std::fmt::Display for EpochLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {:>3}  lr {:.2e}  L_NF {:>9.5}  contrastive {:>9.5}  {} steps  {:.0} fibers/s  {:.1} s",
            self.epoch + 1,
            self.lr,
            self.nf,
            self.contrastive,
            self.steps,
            self.fibers as f64 / self.seconds.max(1e-9),
            self.seconds
        )?;
        if self.level_shared.iter().any(|&s| s > 0) {
            // How much of the augmented pass the unchanged fibers saved, per level.
            let shares: Vec<String> = self
                .level_shared
                .iter()
                .zip(&self.level_fibers)
                .map(|(&s, &n)| format!("{:.0}%", 100.0 * s as f64 / n.max(1) as f64))
                .collect();
            write!(f, "  augmented = real: {}", shares.join(" / "))?;
        }
        Ok(())
    }
}

/// Where the flows train.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The hand-written CPU flow, levels spread over `threads` threads.
    Cpu {
        /// Threads (1 or more; more than the levels brings nothing).
        threads: usize,
    },
    /// burn on `device` (autodiff on): its CPU backend or a GPU.
    Burn(Device),
}

/// The decoders of every level and their optimizers, on one backend.
enum Flows {
    Cpu {
        levels: Vec<LevelTrainer>,
        threads: usize,
    },
    Burn {
        decoders: Vec<Decoder>,
        optimizers: Vec<ModuleOptimizer>,
        device: Device,
    },
}

/// The decoders of every level and their optimizers.
pub struct Trainer {
    levels: Vec<LevelShape>,
    flows: Flows,
    /// Positional encoding per level, rows of `D` per position.
    conditions: Vec<Vec<f32>>,
    settings: TrainSettings,
}

/// Fibers of one level for a batch of images: row `image * hw + position`.
#[derive(Default)]
struct LevelBatch {
    real: Vec<f32>,
    aug: Option<Vec<f32>>,
    mask: Vec<f32>,
}

/// Sums over the steps of one level on one image batch.
#[derive(Clone, Copy, Debug, Default)]
struct LevelSums {
    nf: f64,
    term: f64,
    steps: usize,
    term_steps: usize,
    fibers: usize,
    seconds: f64,
    shared: usize,
}

/// The generator of `level`'s shuffles in `epoch`: one per level, so that levels can train
/// concurrently and every backend draws the same permutations.
fn level_rng(seed: u64, epoch: u32, level: usize) -> SplitMix {
    SplitMix::new(
        seed ^ (u64::from(epoch) << 32)
            ^ 0x5eed
            ^ (level as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    )
}

/// A uniform random permutation of `0..n` into `perm` (Fisher-Yates).
fn shuffle(perm: &mut Vec<usize>, n: usize, rng: &mut SplitMix) {
    perm.clear();
    perm.extend(0..n);
    for i in (1..n).rev() {
        perm.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
}

/// Levels in groups of roughly equal work (longest first onto the least loaded thread):
/// `cost[l]` is level `l`'s multiply-adds per image.
fn partition(cost: &[f64], threads: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..cost.len()).collect();
    order.sort_by(|&a, &b| cost[b].total_cmp(&cost[a]));
    let mut groups: Vec<(f64, Vec<usize>)> =
        vec![(0.0, Vec::new()); threads.clamp(1, cost.len().max(1))];
    for level in order {
        if let Some(g) = groups.iter_mut().min_by(|a, b| a.0.total_cmp(&b.0)) {
            g.0 += cost[level];
            g.1.push(level);
        }
    }
    groups
        .into_iter()
        .map(|(_, g)| g)
        .filter(|g| !g.is_empty())
        .collect()
}

impl Trainer {
    /// Fresh decoders for `levels` on `backend`.
    pub fn new(levels: Vec<LevelShape>, settings: TrainSettings, backend: Backend) -> Trainer {
        let weights: Vec<Vec<BlockWeights>> = levels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                BlockWeights::decoder(
                    l.channels,
                    CONDITION_DIM,
                    settings.blocks as usize,
                    settings.seed.wrapping_add(1000 * i as u64),
                )
            })
            .collect();
        let flows = match backend {
            Backend::Cpu { threads } => Flows::Cpu {
                levels: weights
                    .iter()
                    .map(|w| LevelTrainer::new(w, settings.fiber_batch as usize))
                    .collect(),
                threads,
            },
            Backend::Burn(device) => Flows::Burn {
                decoders: weights
                    .iter()
                    .map(|w| Decoder::from_weights(w, &device))
                    .collect(),
                optimizers: levels
                    .iter()
                    .map(|_| AdamConfig::new().with_epsilon(cpu::adam::EPSILON).init())
                    .collect(),
                device,
            },
        };
        Trainer::assemble(levels, flows, settings)
    }

    fn assemble(levels: Vec<LevelShape>, flows: Flows, settings: TrainSettings) -> Trainer {
        let conditions = levels
            .iter()
            .map(|l| positional_fibers(CONDITION_DIM, l.height, l.width))
            .collect();
        Trainer {
            levels,
            flows,
            conditions,
            settings,
        }
    }

    /// The state to resume from before `next_epoch`.
    pub fn checkpoint(&self, next_epoch: u32) -> Result<Checkpoint, TrainError> {
        let mut levels = Vec::new();
        match &self.flows {
            Flows::Cpu {
                levels: trainers, ..
            } => {
                for t in trainers {
                    levels.push(SavedLevel {
                        blocks: t
                            .flow
                            .to_weights()
                            .into_iter()
                            .map(|weights| SavedBlock {
                                weights,
                                ids: [0; 6],
                            })
                            .collect(),
                        adam: t.adam.to_bytes(),
                    });
                }
            }
            Flows::Burn {
                decoders,
                optimizers,
                ..
            } => {
                for (decoder, optim) in decoders.iter().zip(optimizers) {
                    let adam = optim
                        .to_record()
                        .into_bytes()
                        .map_err(|e| TrainError::Record(e.to_string()))?;
                    levels.push(SavedLevel {
                        blocks: decoder
                            .blocks
                            .iter()
                            .map(|b| SavedBlock {
                                weights: b.to_weights(),
                                ids: b.param_ids(),
                            })
                            .collect(),
                        adam: adam.to_vec(),
                    });
                }
            }
        }
        Ok(Checkpoint { next_epoch, levels })
    }

    /// A trainer continuing from `saved` (read from `path`), which must hold decoders of the
    /// shapes of `levels` and `settings`, written by a trainer of the same kind (the CPU flow's
    /// optimizer state and burn's are not interchangeable).
    pub fn resume(
        saved: Checkpoint,
        path: &Path,
        levels: Vec<LevelShape>,
        settings: TrainSettings,
        backend: Backend,
    ) -> Result<Trainer, TrainError> {
        let expected = describe(
            levels
                .iter()
                .map(|l| (l.channels, settings.blocks as usize)),
        );
        if saved.describe() != expected {
            return Err(CheckpointError::Mismatch {
                path: path.to_path_buf(),
                found: saved.describe(),
                expected,
            }
            .into());
        }
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let flows = match backend {
            Backend::Cpu { threads } => {
                let mut trainers = Vec::new();
                for level in saved.levels {
                    if !Adam::is_own(&level.adam) {
                        return Err(corrupt(
                            "written by the burn trainer: resume it with --device burn-cpu \
                             (or the GPU it ran on), or start over"
                                .into(),
                        )
                        .into());
                    }
                    let weights: Vec<BlockWeights> =
                        level.blocks.into_iter().map(|b| b.weights).collect();
                    let flow = cpu::Flow::from_weights(&weights);
                    let adam = Adam::from_bytes(&level.adam, flow.params.len()).map_err(corrupt)?;
                    trainers.push(LevelTrainer::with_state(
                        flow,
                        adam,
                        settings.fiber_batch as usize,
                    ));
                }
                Flows::Cpu {
                    levels: trainers,
                    threads,
                }
            }
            Backend::Burn(device) => {
                let mut decoders = Vec::new();
                let mut optimizers = Vec::new();
                for level in saved.levels {
                    if Adam::is_own(&level.adam) {
                        return Err(corrupt(
                            "written by the CPU trainer: resume it with --device cpu, or start over"
                                .into(),
                        )
                        .into());
                    }
                    decoders.push(Decoder {
                        blocks: level
                            .blocks
                            .iter()
                            .map(|b| {
                                CouplingBlock::from_weights_with_ids(&b.weights, b.ids, &device)
                            })
                            .collect(),
                    });
                    let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(level.adam))
                        .map_err(|e| TrainError::Record(e.to_string()))?;
                    optimizers.push(
                        AdamConfig::new()
                            .with_epsilon(cpu::adam::EPSILON)
                            .init()
                            .load_record(record),
                    );
                }
                Flows::Burn {
                    decoders,
                    optimizers,
                    device,
                }
            }
        };
        Ok(Trainer::assemble(levels, flows, settings))
    }

    /// Every level's block weights, in FrEIA's conventions.
    pub fn weights(&self) -> Vec<Vec<BlockWeights>> {
        match &self.flows {
            Flows::Cpu { levels, .. } => levels.iter().map(|t| t.flow.to_weights()).collect(),
            Flows::Burn { decoders, .. } => decoders.iter().map(Decoder::to_weights).collect(),
        }
    }

    /// The level shapes.
    pub fn levels(&self) -> &[LevelShape] {
        &self.levels
    }

    /// One epoch over `images`, whose records are in `cache`.
    pub fn epoch(
        &mut self,
        epoch: u32,
        cache: &FeatureCache,
        images: &[CachedImage],
        progress: bool,
    ) -> Result<EpochLog, TrainError> {
        let start = Instant::now();
        let s = self.settings.clone();
        let lr = s.lr_at(epoch);
        let contrastive = s.contrastive_on(epoch);
        let mut rng = SplitMix::new(s.seed ^ (u64::from(epoch) << 32) ^ 0x5eed);
        let mut order: Vec<usize> = (0..images.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let mut rngs: Vec<SplitMix> = (0..self.levels.len())
            .map(|level| level_rng(s.seed, epoch, level))
            .collect();
        let mut batches: Vec<LevelBatch> =
            self.levels.iter().map(|_| LevelBatch::default()).collect();
        let bar = progress_bar(
            progress,
            images.len(),
            &format!(
                "epoch {} {{bar:40}} {{pos}}/{{len}} images, {{eta}} left",
                epoch + 1
            ),
        );
        let mut total = LevelSums::default();
        let mut per_level = vec![LevelSums::default(); self.levels.len()];
        let mut fibers = 0usize;
        // Without a terminal the bar is hidden: a log line a minute tells how far it got.
        let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut last_line = Instant::now();
        let mut done = 0usize;
        for chunk in order.chunks(s.image_batch as usize) {
            if progress && quiet && last_line.elapsed().as_secs() >= 60 {
                log::info!("epoch {}: {done}/{} images", epoch + 1, images.len());
                last_line = Instant::now();
            }
            done += chunk.len();
            let records = self.load(cache, images, chunk, epoch, contrastive)?;
            for (level, batch) in batches.iter_mut().enumerate() {
                self.level_batch(level, &records, batch);
            }
            // Summed in level order whatever thread ran a level: the same figures either way.
            let sums = self.train_batch(&batches, &mut rngs, lr, contrastive);
            for (level, sums) in per_level.iter_mut().zip(sums) {
                total.nf += sums.nf;
                total.term += sums.term;
                total.steps += sums.steps;
                total.term_steps += sums.term_steps;
                level.seconds += sums.seconds;
                level.fibers += sums.fibers;
                level.shared += sums.shared;
            }
            fibers += chunk.len()
                * self
                    .levels
                    .iter()
                    .map(|l| l.height * l.width)
                    .sum::<usize>();
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(EpochLog {
            epoch,
            lr,
            nf: total.nf / total.steps.max(1) as f64,
            contrastive: total.term / total.term_steps.max(1) as f64,
            steps: total.steps,
            fibers,
            seconds: start.elapsed().as_secs_f64(),
            level_seconds: per_level.iter().map(|l| l.seconds).collect(),
            level_fibers: per_level.iter().map(|l| l.fibers).collect(),
            level_shared: per_level.iter().map(|l| l.shared).collect(),
        })
    }

    /// The steps of every level on one image batch, per level.
    fn train_batch(
        &mut self,
        batches: &[LevelBatch],
        rngs: &mut [SplitMix],
        lr: f64,
        contrastive: bool,
    ) -> Vec<LevelSums> {
        let Trainer {
            levels: shapes,
            flows,
            conditions,
            settings,
        } = self;
        let mut out = vec![LevelSums::default(); shapes.len()];
        match flows {
            Flows::Cpu { levels, threads } => {
                let loss = StepLoss {
                    nf: settings.nf_loss,
                    objective: (contrastive && settings.objective != Objective::None)
                        .then_some(settings.objective),
                    margin: settings.likelihood_margin,
                };
                let fiber_batch = settings.fiber_batch as usize;
                let run = |level: usize, trainer: &mut LevelTrainer, rng: &mut SplitMix| {
                    let start = Instant::now();
                    let batch = &batches[level];
                    let fibers = Fibers {
                        real: &batch.real,
                        aug: batch.aug.as_deref(),
                        defect: &batch.mask,
                        condition: &conditions[level],
                        positions: shapes[level].height * shapes[level].width,
                    };
                    let mut perm = Vec::new();
                    shuffle(&mut perm, batch.mask.len(), rng);
                    let mut sums = LevelSums::default();
                    for rows in perm.chunks(fiber_batch) {
                        let step = trainer.step(&fibers, rows, &loss, lr);
                        sums.nf += step.nf;
                        sums.steps += 1;
                        sums.shared += step.shared;
                        if let Some(term) = step.term {
                            sums.term += term;
                            sums.term_steps += 1;
                        }
                    }
                    sums.fibers = batch.mask.len();
                    sums.seconds = start.elapsed().as_secs_f64();
                    sums
                };
                let cost: Vec<f64> = levels
                    .iter()
                    .zip(shapes.iter())
                    .map(|(t, l)| {
                        let sh = t.flow.shape();
                        let per_fiber = sh.hidden() * sh.subnet_input()
                            + sh.hidden() * sh.subnet_output()
                            + sh.channels * sh.channels;
                        (l.height * l.width * per_fiber) as f64
                    })
                    .collect();
                let groups = partition(&cost, *threads);
                let mut slots: Vec<Option<(&mut LevelTrainer, &mut SplitMix)>> =
                    levels.iter_mut().zip(rngs.iter_mut()).map(Some).collect();
                let mut work: Vec<Vec<(usize, &mut LevelTrainer, &mut SplitMix)>> = groups
                    .iter()
                    .map(|g| {
                        g.iter()
                            .filter_map(|&l| slots[l].take().map(|(t, r)| (l, t, r)))
                            .collect()
                    })
                    .collect();
                if work.len() <= 1 {
                    for (l, t, r) in work.pop().unwrap_or_default() {
                        out[l] = run(l, t, r);
                    }
                } else {
                    std::thread::scope(|scope| {
                        let run = &run;
                        let handles: Vec<_> = work
                            .into_iter()
                            .map(|group| {
                                scope.spawn(move || {
                                    group
                                        .into_iter()
                                        .map(|(l, t, r)| (l, run(l, t, r)))
                                        .collect::<Vec<_>>()
                                })
                            })
                            .collect();
                        for handle in handles {
                            match handle.join() {
                                Ok(done) => done.into_iter().for_each(|(l, sums)| out[l] = sums),
                                Err(panic) => std::panic::resume_unwind(panic),
                            }
                        }
                    });
                }
            }
            Flows::Burn {
                decoders,
                optimizers,
                device,
            } => {
                for (level, batch) in batches.iter().enumerate() {
                    let start = Instant::now();
                    out[level] = burn_steps(
                        BurnLevel {
                            decoders,
                            optimizers,
                            device,
                            level,
                            shape: &shapes[level],
                            condition: &conditions[level],
                            settings,
                        },
                        batch,
                        lr,
                        contrastive,
                        &mut rngs[level],
                    );
                    out[level].fibers = batch.mask.len();
                    out[level].seconds = start.elapsed().as_secs_f64();
                }
            }
        }
        out
    }

    /// The records of a batch: each image, and its augmentation for this epoch when needed.
    fn load(
        &self,
        cache: &FeatureCache,
        images: &[CachedImage],
        chunk: &[usize],
        epoch: u32,
        contrastive: bool,
    ) -> Result<Vec<(FeatureRecord, Option<FeatureRecord>)>, TrainError> {
        let read = |key: &RecordKey, image: &CachedImage| {
            cache.load(key)?.ok_or_else(|| TrainError::MissingRecord {
                image: image.image.clone(),
            })
        };
        chunk
            .iter()
            .map(|&i| {
                let image = &images[i];
                let real = read(&image.keys[0], image)?;
                let aug = if contrastive && image.keys.len() > 1 {
                    // Augmentations take turns over the epochs.
                    let k = 1 + epoch as usize % (image.keys.len() - 1);
                    Some(read(&image.keys[k], image)?)
                } else {
                    None
                };
                Ok((real, aug))
            })
            .collect()
    }

    /// Fibers of `level` for a batch of records, as rows of `C` values, into `batch` (its
    /// buffers reused from one image batch to the next).
    fn level_batch(
        &self,
        level: usize,
        records: &[(FeatureRecord, Option<FeatureRecord>)],
        batch: &mut LevelBatch,
    ) {
        let shape = &self.levels[level];
        let (c, hw) = (shape.channels, shape.height * shape.width);
        let fibers = |r: &FeatureRecord, out: &mut Vec<f32>| {
            let data = &r.levels[level].data;
            for p in 0..hw {
                out.extend((0..c).map(|ch| data[ch * hw + p]));
            }
        };
        batch.real.clear();
        batch.mask.clear();
        let all_aug = records.iter().all(|(_, a)| a.is_some());
        let mut aug = batch.aug.take().unwrap_or_default();
        aug.clear();
        for (r, a) in records {
            fibers(r, &mut batch.real);
            match (a, all_aug) {
                (Some(a), true) => {
                    fibers(a, &mut aug);
                    batch
                        .mask
                        .extend(a.masks[level].iter().map(|&m| f32::from(m)));
                }
                _ => batch.mask.extend(std::iter::repeat_n(0.0, hw)),
            }
        }
        batch.aug = all_aug.then_some(aug);
    }

    /// The trainer's own log p of every position of `record`'s level (`h x w`, row-major),
    /// to compare with the exported head.
    pub fn logp_map(&self, level: usize, record: &FeatureRecord) -> Vec<f32> {
        let shape = &self.levels[level];
        let (c, hw) = (shape.channels, shape.height * shape.width);
        let data = &record.levels[level].data;
        let mut rows = Vec::with_capacity(hw * c);
        for p in 0..hw {
            rows.extend((0..c).map(|ch| data[ch * hw + p]));
        }
        let pe = &self.conditions[level];
        match &self.flows {
            Flows::Cpu { levels, .. } => cpu::logp(&levels[level].flow, &rows, pe, 256),
            Flows::Burn { decoders, .. } => {
                let device = Device::flex();
                let decoder = decoders[level].valid();
                let x = Tensor::<2>::from_data(TensorData::new(rows, [hw, c]), &device);
                let cond = Tensor::<2>::from_data(
                    TensorData::new(pe.clone(), [hw, CONDITION_DIM]),
                    &device,
                );
                floats(&decoder.to_device(&device).forward(x, cond).logp)
            }
        }
    }
}

/// What the burn steps of one level work on.
struct BurnLevel<'a> {
    decoders: &'a mut Vec<Decoder>,
    optimizers: &'a mut [ModuleOptimizer],
    device: &'a Device,
    level: usize,
    shape: &'a LevelShape,
    condition: &'a [f32],
    settings: &'a TrainSettings,
}

/// burn's Adam steps of one level on one image batch.
fn burn_steps(
    at: BurnLevel,
    data: &LevelBatch,
    lr: f64,
    contrastive: bool,
    rng: &mut SplitMix,
) -> LevelSums {
    let BurnLevel {
        decoders,
        optimizers,
        device,
        level,
        shape,
        condition,
        settings: s,
    } = at;
    let (c, hw) = (shape.channels, shape.height * shape.width);
    let mut perm = Vec::new();
    shuffle(&mut perm, data.mask.len(), rng);
    let mut sums = LevelSums::default();
    for idx in perm.chunks(s.fiber_batch as usize) {
        let m = idx.len();
        let gather = |src: &[f32], width: usize, row: &dyn Fn(usize) -> usize| {
            let mut out = Vec::with_capacity(m * width);
            for &i in idx {
                let r = row(i);
                out.extend_from_slice(&src[r * width..(r + 1) * width]);
            }
            Tensor::<2>::from_data(TensorData::new(out, [m, width]), device)
        };
        let x = gather(&data.real, c, &|i| i);
        let cond = gather(condition, CONDITION_DIM, &|i| i % hw);
        let decoder = &decoders[level];
        let out = decoder.forward(x, cond.clone());
        let nf = match s.nf_loss {
            NfLoss::Reference => nf_reference(out.logp.clone(), c),
            NfLoss::Paper => nf_paper(out.z.clone(), out.log_jac_det.clone()),
        };
        let mut loss = nf.clone();
        if let (true, true, Some(aug)) = (contrastive, s.objective != Objective::None, &data.aug) {
            let x_aug = gather(aug, c, &|i| i);
            let mask: Vec<f32> = idx.iter().map(|&i| data.mask[i]).collect();
            let defect = Tensor::<1>::from_data(TensorData::new(mask, [m]), device);
            let out_aug = decoder.forward(x_aug, cond);
            let pair = PairedFibers {
                z_real: out.z,
                logp_real: out.logp,
                z_aug: out_aug.z,
                logp_aug: out_aug.logp,
                defect,
                channels: c,
            };
            if let Some(term) = objective_term(s.objective, &pair, s.likelihood_margin) {
                sums.term += floats(&term)[0] as f64;
                sums.term_steps += 1;
                loss = loss + term;
            }
        }
        sums.nf += floats(&nf)[0] as f64;
        sums.steps += 1;
        let grads = GradientsParams::from_grads(loss.backward(), decoder);
        let decoder = decoders.remove(level);
        let decoder = optimizers[level].step(lr, decoder, grads);
        decoders.insert(level, decoder);
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_spread_over_threads_by_work() {
        // Lite0 at 256 px: the stride-8 level alone weighs about what the other two do.
        assert_eq!(partition(&[1.9, 1.0, 0.95], 2), vec![vec![0], vec![1, 2]]);
        assert_eq!(partition(&[1.0, 3.0, 1.0], 1), vec![vec![1, 0, 2]]);
        assert_eq!(partition(&[1.0, 2.0], 8), vec![vec![1], vec![0]]);
        assert_eq!(partition(&[1.0], 0), vec![vec![0]]);
    }

    #[test]
    fn shuffles_are_permutations_and_differ_by_level() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        shuffle(&mut a, 100, &mut level_rng(7, 0, 0));
        shuffle(&mut b, 100, &mut level_rng(7, 0, 1));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(a, b);
    }
}
