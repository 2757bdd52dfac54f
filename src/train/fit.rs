//! The CFlow-AD training loop on cached features: per image batch and level, the fibers of the
//! real images (and of their augmentations, at the same positions) are shuffled together and cut
//! into chunks of `fiber_batch`; each chunk is one Adam step of that level's decoder.

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
use crate::fixtures::SplitMix;
use crate::flow::coupling::floats;
use crate::flow::positional::{positional_fibers, CONDITION_DIM};
use crate::flow::{CouplingBlock, Decoder};
use crate::losses::{nf_paper, nf_reference, objective_term, NfLoss, PairedFibers};
use crate::records::progress_bar;

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
        )
    }
}

/// The decoders of every level and their optimizers.
pub struct Trainer {
    levels: Vec<LevelShape>,
    decoders: Vec<Decoder>,
    optimizers: Vec<ModuleOptimizer>,
    settings: TrainSettings,
    device: Device,
}

/// Fibers of one level for a batch of images: row `image * hw + position`.
struct LevelBatch {
    real: Vec<f32>,
    aug: Option<Vec<f32>>,
    mask: Vec<f32>,
}

impl Trainer {
    /// Fresh decoders for `levels` on `device` (which should have autodiff on).
    pub fn new(levels: Vec<LevelShape>, settings: TrainSettings, device: Device) -> Trainer {
        let decoders = levels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Decoder::new(
                    l.channels,
                    CONDITION_DIM,
                    settings.blocks as usize,
                    settings.seed.wrapping_add(1000 * i as u64),
                    &device,
                )
            })
            .collect();
        let optimizers = levels
            .iter()
            .map(|_| AdamConfig::new().with_epsilon(1e-8).init())
            .collect();
        Trainer {
            levels,
            decoders,
            optimizers,
            settings,
            device,
        }
    }

    /// The state to resume from before `next_epoch`.
    pub fn checkpoint(&self, next_epoch: u32) -> Result<Checkpoint, TrainError> {
        let mut levels = Vec::new();
        for (decoder, optim) in self.decoders.iter().zip(&self.optimizers) {
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
        Ok(Checkpoint { next_epoch, levels })
    }

    /// A trainer continuing from `saved` (read from `path`), which must hold decoders of the
    /// shapes of `levels` and `settings`.
    pub fn resume(
        saved: Checkpoint,
        path: &Path,
        levels: Vec<LevelShape>,
        settings: TrainSettings,
        device: Device,
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
        let mut decoders = Vec::new();
        let mut optimizers = Vec::new();
        for level in saved.levels {
            decoders.push(Decoder {
                blocks: level
                    .blocks
                    .iter()
                    .map(|b| CouplingBlock::from_weights_with_ids(&b.weights, b.ids, &device))
                    .collect(),
            });
            let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(level.adam))
                .map_err(|e| TrainError::Record(e.to_string()))?;
            optimizers.push(
                AdamConfig::new()
                    .with_epsilon(1e-8)
                    .init()
                    .load_record(record),
            );
        }
        Ok(Trainer {
            levels,
            decoders,
            optimizers,
            settings,
            device,
        })
    }

    /// The decoders, one per level.
    pub fn decoders(&self) -> &[Decoder] {
        &self.decoders
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
        let s = &self.settings;
        let lr = s.lr_at(epoch);
        let contrastive = s.contrastive_on(epoch);
        let mut rng = SplitMix::new(s.seed ^ (u64::from(epoch) << 32) ^ 0x5eed);
        let mut order: Vec<usize> = (0..images.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let bar = progress_bar(
            progress,
            images.len(),
            &format!(
                "epoch {} {{bar:40}} {{pos}}/{{len}} images, {{eta}} left",
                epoch + 1
            ),
        );
        let (mut nf_sum, mut term_sum, mut steps, mut term_steps, mut fibers) =
            (0.0, 0.0, 0usize, 0usize, 0usize);
        let batch = s.image_batch as usize;
        // Without a terminal the bar is hidden: a log line a minute tells how far it got.
        let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut last_line = Instant::now();
        let mut done = 0usize;
        for chunk in order.chunks(batch) {
            if progress && quiet && last_line.elapsed().as_secs() >= 60 {
                log::info!("epoch {}: {done}/{} images", epoch + 1, images.len());
                last_line = Instant::now();
            }
            done += chunk.len();
            let records = self.load(cache, images, chunk, epoch, contrastive)?;
            for level in 0..self.levels.len() {
                let data = self.level_batch(level, &records);
                let (nf, term, n, t) = self.steps(level, &data, lr, contrastive, &mut rng);
                nf_sum += nf;
                term_sum += term;
                steps += n;
                term_steps += t;
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
            nf: nf_sum / steps.max(1) as f64,
            contrastive: term_sum / term_steps.max(1) as f64,
            steps,
            fibers,
            seconds: start.elapsed().as_secs_f64(),
        })
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

    /// Fibers of `level` for a batch of records, as rows of `C` values.
    fn level_batch(
        &self,
        level: usize,
        records: &[(FeatureRecord, Option<FeatureRecord>)],
    ) -> LevelBatch {
        let shape = &self.levels[level];
        let (c, hw) = (shape.channels, shape.height * shape.width);
        let n = records.len() * hw;
        let fibers = |r: &FeatureRecord, out: &mut Vec<f32>| {
            let data = &r.levels[level].data;
            for p in 0..hw {
                out.extend((0..c).map(|ch| data[ch * hw + p]));
            }
        };
        let mut real = Vec::with_capacity(n * c);
        let all_aug = records.iter().all(|(_, a)| a.is_some());
        let mut aug = all_aug.then(|| Vec::with_capacity(n * c));
        let mut mask = Vec::with_capacity(n);
        for (r, a) in records {
            fibers(r, &mut real);
            match (a, aug.as_mut()) {
                (Some(a), Some(out)) => {
                    fibers(a, out);
                    mask.extend(a.masks[level].iter().map(|&m| f32::from(m)));
                }
                _ => mask.extend(std::iter::repeat_n(0.0, hw)),
            }
        }
        LevelBatch { real, aug, mask }
    }

    /// The Adam steps of one level on one image batch: returns (sum of L_NF, sum of the
    /// contrastive term, steps, steps with the term).
    fn steps(
        &mut self,
        level: usize,
        data: &LevelBatch,
        lr: f64,
        contrastive: bool,
        rng: &mut SplitMix,
    ) -> (f64, f64, usize, usize) {
        let shape = self.levels[level].clone();
        let (c, hw) = (shape.channels, shape.height * shape.width);
        let n = data.mask.len();
        let pe = positional_fibers(CONDITION_DIM, shape.height, shape.width);
        let mut perm: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            perm.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let (mut nf_sum, mut term_sum, mut steps, mut term_steps) = (0.0, 0.0, 0, 0);
        let s = &self.settings;
        for idx in perm.chunks(s.fiber_batch as usize) {
            let m = idx.len();
            let gather = |src: &[f32], width: usize, row: &dyn Fn(usize) -> usize| {
                let mut out = Vec::with_capacity(m * width);
                for &i in idx {
                    let r = row(i);
                    out.extend_from_slice(&src[r * width..(r + 1) * width]);
                }
                Tensor::<2>::from_data(TensorData::new(out, [m, width]), &self.device)
            };
            let x = gather(&data.real, c, &|i| i);
            let cond = gather(&pe, CONDITION_DIM, &|i| i % hw);
            let decoder = &self.decoders[level];
            let out = decoder.forward(x, cond.clone());
            let nf = match s.nf_loss {
                NfLoss::Reference => nf_reference(out.logp.clone(), c),
                NfLoss::Paper => nf_paper(out.z.clone(), out.log_jac_det.clone()),
            };
            let mut loss = nf.clone();
            if let (true, Some(aug)) = (contrastive, &data.aug) {
                let x_aug = gather(aug, c, &|i| i);
                let mask: Vec<f32> = idx.iter().map(|&i| data.mask[i]).collect();
                let defect = Tensor::<1>::from_data(TensorData::new(mask, [m]), &self.device);
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
                    term_sum += floats(&term)[0] as f64;
                    term_steps += 1;
                    loss = loss + term;
                }
            }
            nf_sum += floats(&nf)[0] as f64;
            steps += 1;
            let grads = GradientsParams::from_grads(loss.backward(), decoder);
            let decoder = self.decoders.remove(level);
            let decoder = self.optimizers[level].step(lr, decoder, grads);
            self.decoders.insert(level, decoder);
        }
        (nf_sum, term_sum, steps, term_steps)
    }

    /// burn's log p of every position of `record`'s level (`h x w`, row-major): the trainer's
    /// own score, to compare with the exported head.
    pub fn logp_map(&self, level: usize, record: &FeatureRecord) -> Vec<f32> {
        let shape = &self.levels[level];
        let (c, hw) = (shape.channels, shape.height * shape.width);
        let data = &record.levels[level].data;
        let mut rows = Vec::with_capacity(hw * c);
        for p in 0..hw {
            rows.extend((0..c).map(|ch| data[ch * hw + p]));
        }
        let device = Device::flex();
        let decoder = self.decoders[level].valid();
        let x = Tensor::<2>::from_data(TensorData::new(rows, [hw, c]), &device);
        let pe = positional_fibers(CONDITION_DIM, shape.height, shape.width);
        let cond = Tensor::<2>::from_data(TensorData::new(pe, [hw, CONDITION_DIM]), &device);
        floats(&decoder.to_device(&device).forward(x, cond).logp)
    }
}
