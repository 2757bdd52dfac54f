//! The whole trainer on a small real problem: a real ONNX extractor run by tract (mean colour
//! of 8 and 16-pixel cells, 4 channels), images the test makes, synthetic cracks, the fusion
//! objective; then the bundle it writes, read by the daemon's engine and scorer.
#![cfg(feature = "train")]

mod common;

use burn::tensor::Device;
use common::{defect_source, normal_images, Scratch};
use inspect_core::bundle::Bundle;
use inspect_core::detector::{Detector, Tiling};
use inspect_core::engine::ExtractorPrecision;
use inspect_core::fixtures::concrete_frame;
use inspect_core::onnx::{Dim, ModelBuilder, Padding};
use inspect_core::tiler::{Normalization, PixelBox, TileGrid};
use inspect_train::dataset::load_image;
use inspect_train::losses::Objective;
use inspect_train::score_choice::{HeldOutFold, PostProcessing};
use inspect_train::synth::bank::Synthesizer;
use inspect_train::synth::config::SynthesisSettings;
use inspect_train::train::calibrate::{
    calibrate_bundle, calibrate_bundle_on, calibration_sample, HeldOut, ThresholdSample,
};
use inspect_train::train::settings::TrainSettings;
use inspect_train::train::Backend;
use inspect_train::train::{run_fit, FitJob};

const SIDE: usize = 64;

/// Taps `tap8` (4 x 8 x 8) and `tap16` (4 x 4 x 4): cell means of R, G, B and R - B.
fn colour_cells() -> Vec<u8> {
    let mut b = ModelBuilder::new("colour-cells");
    let x = b.input("image", &[1.into(), 3.into(), SIDE.into(), SIDE.into()]);
    #[rustfmt::skip]
    let w = [
        1.0, 0.0, 0.0,
        0.0, 1.0, 0.0,
        0.0, 0.0, 1.0,
        2.0, 0.0, -2.0,
    ];
    let mixed = b.conv(&x, &w, [4, 3, 1, 1], None, 1, Padding::Symmetric(0), 1);
    for stride in [8usize, 16] {
        b.average_pool(&mixed, stride);
        let tap = b.name_last_output(&format!("tap{stride}"));
        let side = SIDE / stride;
        b.output(
            &tap,
            &[1.into(), 4.into(), Dim::Fixed(side), Dim::Fixed(side)],
        );
    }
    b.to_bytes().unwrap()
}

#[test]
fn fit_trains_exports_and_calibrates_a_bundle_the_daemon_agrees_with() {
    let dir = Scratch::new("train-fit");
    defect_source(&dir.path("defects"));
    let images = normal_images(&dir.path("good"), 20);
    let config = dir.path("train.toml");
    std::fs::write(
        &config,
        "[synthesis]\ndefects = { images = \"defects/images\", masks = \"defects/masks\" }\n\
         window = 40\nmax_extent = 0.6\naugmentations_per_image = 2\nseed = 5\n\
         [training]\nepochs = 4\nimage_batch = 4\nfiber_batch = 32\nlr = 1e-3\nblocks = 2\n\
         objective = \"fusion\"\ncontrastive_start_epoch = 1\nholdout_fraction = 0.2\n\
         false_alarm_rate = 0.1\nschedule = \"cosine\"\nwarmup_epochs = 1\n\
         level_weights = [1.0, 0.5]\nsmoothing_sigma = 2.0\ntop_fraction = 0.05\n",
    )
    .unwrap();
    let settings = TrainSettings::load(&config).unwrap();
    assert_eq!(settings.objective, Objective::Fusion);
    let synth = Synthesizer::new(SynthesisSettings::load(&config).unwrap()).unwrap();
    let extractor = colour_cells();
    let normalization = Normalization {
        mean: [0.5; 3],
        std: [0.25; 3],
    };
    let out = dir.path("bundle");
    let mut lines = Vec::new();
    let report = run_fit(
        FitJob {
            extractor: &extractor,
            extractor_name: "colour-cells".into(),
            normalization,
            images: images.clone(),
            synthesizer: Some(&synth),
            cache_root: &dir.path("cache"),
            settings,
            backend: Backend::Cpu { threads: 2 },
            workers: 2,
            progress: false,
            out: &out,
            provenance: toml::Table::new(),
            checkpoint: None,
            resume: false,
            holdout: None,
        },
        &mut |log| lines.push(log.to_string()),
    )
    .unwrap();

    // The loop: 4 epochs logged, L_NF going down, the contrastive term on from epoch 2.
    assert_eq!(report.epochs.len(), 4);
    assert_eq!(lines.len(), 4);
    println!("{}", lines.join("\n"));
    let (first, last) = (&report.epochs[0], &report.epochs[3]);
    assert!(last.nf < first.nf, "L_NF {} -> {}", first.nf, last.nf);
    assert_eq!(first.contrastive, 0.0, "off in the first epoch");
    assert!(last.contrastive != 0.0);
    let n_train = report.train_images.len();
    let n_holdout = report.holdout_images.len();
    assert_eq!(n_train + n_holdout, 20);
    assert!(n_holdout >= 1 && n_train >= 10, "{n_train} / {n_holdout}");
    // Steps: per batch and level, ceil(fibers / 32); 64 and 16 fibers per image.
    let batches: Vec<usize> = report.train_images.chunks(4).map(|c| c.len()).collect();
    let steps: usize = batches
        .iter()
        .map(|&b| (b * 64).div_ceil(32) + (b * 16).div_ceil(32))
        .sum();
    assert_eq!(first.steps, steps);

    // The bundle: the daemon's engine gives the trainer's own log p (burn) on the same image.
    let bundle = Bundle::load(&out).unwrap();
    let m = bundle.manifest.clone();
    assert_eq!(m.levels.len(), 2);
    assert_eq!((m.levels[0].stride, m.levels[1].stride), (8, 16));
    assert_eq!(m.threshold.method, "false-alarm-rate");
    // The score's post-processing comes from [training] and was calibrated with.
    assert_eq!(
        (
            m.score.level_weights.clone(),
            m.score.smoothing_sigma,
            m.score.top_fraction
        ),
        (vec![1.0, 0.5], 2.0, 0.05)
    );
    let mut detector = Detector::new(bundle, ExtractorPrecision::F32, m.threshold.value).unwrap();
    for entry in report.train_images.iter().take(3) {
        let maps = detector
            .image_level_maps(&load_image(&entry.image).unwrap())
            .unwrap();
        let record = report.cache.load(&entry.keys[0]).unwrap().unwrap();
        for (level, daemon) in maps.iter().enumerate() {
            let trainer = report.trainer.logp_map(level, &record);
            let worst = trainer
                .iter()
                .zip(daemon)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-4,
                "level {level}: |trainer - daemon| = {worst:.2e}"
            );
        }
    }

    // Calibration: on the held-out images at most 10% of tiles alarm; the threshold is the
    // holdout score it says; a frame with a large dark stain scores above it.
    let c = &report.calibration;
    assert!(c.holdout_alarms <= (0.1 * n_holdout as f64).floor() as usize);
    assert_eq!(m.threshold.value, c.threshold);
    assert_eq!(m.score.level_offsets, c.level_offsets);
    let stained = concrete_frame(
        160,
        120,
        77,
        &[PixelBox {
            x: 40,
            y: 30,
            width: 60,
            height: 50,
        }],
    );
    let (_, score) = detector.detect_image(&stained).unwrap();
    println!(
        "stained frame scores {:.4}; threshold {:.4}; held-out scores {:?}",
        score.score, c.threshold, c.holdout_scores
    );
    assert!(score.score > c.threshold, "a large stain must alarm");
    assert!(score.region.is_some());

    // Calibrating the written bundle again (`inspect-train calibrate`) with another tile
    // post-processing changes only the manifest's score and threshold; with the fit's own it
    // gives back exactly what fit wrote.
    let train_paths: Vec<_> = report
        .train_images
        .iter()
        .map(|i| i.image.clone())
        .collect();
    let sample = calibration_sample(&train_paths);
    let plain = PostProcessing {
        level_weights: Vec::new(),
        smoothing_sigma: 0.0,
        top_fraction: 0.0,
        frame_weight: 0.0,
    };
    let whole = HeldOut {
        images: report.holdout_images.clone(),
        tiling: None,
    };
    let again = calibrate_bundle(&out, &plain, &sample, &whole, 0.1).unwrap();
    let m2 = Bundle::load(&out).unwrap().manifest;
    assert_eq!(m2.score.top_fraction, 0.0);
    assert!(m2.score.level_weights.is_empty());
    assert_eq!(m2.threshold.value, again.threshold);
    assert_eq!(m2.files, m.files, "the model files are untouched");
    let fits_own = PostProcessing::of(&m.score);
    // Held-out images cut as the daemon cuts frames: one score per tile.
    let tiling = Tiling {
        tile_size: 64,
        overlap: 0,
    };
    let cut = HeldOut {
        images: report.holdout_images.clone(),
        tiling: Some(tiling),
    };
    let tiled = calibrate_bundle(&out, &fits_own, &sample, &cut, 0.1).unwrap();
    let first = load_image(&report.holdout_images[0]).unwrap();
    let per_image = TileGrid::new(first.width(), first.height(), 64, 0)
        .tiles
        .len();
    assert!(per_image > 1);
    assert_eq!(tiled.holdout_scores.len(), per_image * n_holdout);
    // With a frame weight of 1 each held-out tile is scored against its frame's mean: every
    // frame's scores sum to 0, so all of them do, and the bundle carries the weight.
    let framed = PostProcessing {
        frame_weight: 1.0,
        ..fits_own.clone()
    };
    let relative = calibrate_bundle(&out, &framed, &sample, &cut, 0.1).unwrap();
    assert_eq!(relative.holdout_scores.len(), tiled.holdout_scores.len());
    let sum: f32 = relative.holdout_scores.iter().sum();
    let spread: f32 = relative.holdout_scores.iter().map(|s| s.abs()).sum();
    assert!(
        sum.abs() < 1e-3 * spread.max(1.0),
        "sum {sum}, spread {spread}"
    );
    assert!(spread > 0.0, "the tiles of a frame differ");
    assert_eq!(Bundle::load(&out).unwrap().manifest.score.frame_weight, 1.0);

    // Out of fold: a fold's held-out images scored by the fold's bundle. With the bundle as its
    // own single fold, the sample is the one its own held-out images gave.
    let fold_images = dir.path("fold-images");
    std::fs::create_dir_all(&fold_images).unwrap();
    for image in &report.holdout_images {
        std::fs::copy(image, fold_images.join(image.file_name().unwrap())).unwrap();
    }
    let folds = [HeldOutFold {
        bundle: out.clone(),
        images: fold_images,
    }];
    let out_of_fold = ThresholdSample::OutOfFold {
        folds: &folds,
        tiling: Some(tiling),
    };
    let pooled = calibrate_bundle_on(&out, &fits_own, &sample, out_of_fold, 0.1).unwrap();
    assert_eq!(pooled.holdout_scores, tiled.holdout_scores);
    assert_eq!(pooled.threshold, tiled.threshold);
    // A fold whose score constants were fixed for another smoothing is refused by name.
    let smoothed = PostProcessing {
        smoothing_sigma: fits_own.smoothing_sigma + 4.0,
        ..fits_own.clone()
    };
    let err = calibrate_bundle_on(&out, &smoothed, &sample, out_of_fold, 0.1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&out.display().to_string()) && err.contains("calibrate the fold"),
        "{err}"
    );
    calibrate_bundle(&out, &fits_own, &sample, &whole, 0.1).unwrap();
    let m3 = Bundle::load(&out).unwrap().manifest;
    assert_eq!((m3.score, m3.threshold), (m.score, m.threshold));
}

#[test]
fn a_run_resumed_from_its_checkpoint_ends_where_an_unbroken_run_ends() {
    resumes_exactly(
        Backend::Cpu { threads: 2 },
        Backend::Burn(Device::flex().autodiff()),
    );
    resumes_exactly(
        Backend::Burn(Device::flex().autodiff()),
        Backend::Cpu { threads: 1 },
    );
}

/// An unbroken run on `backend` against one resumed from its checkpoint; `other` must refuse
/// that checkpoint (the optimizer states differ in kind).
fn resumes_exactly(backend: Backend, other: Backend) {
    let dir = Scratch::new("train-resume");
    defect_source(&dir.path("defects"));
    let images = normal_images(&dir.path("good"), 10);
    let config = dir.path("train.toml");
    std::fs::write(
        &config,
        "[synthesis]\ndefects = { images = \"defects/images\", masks = \"defects/masks\" }\n\
         window = 40\nmax_extent = 0.6\nseed = 5\n\
         [training]\nepochs = 3\nimage_batch = 3\nfiber_batch = 48\nlr = 1e-3\nblocks = 2\n\
         objective = \"boundary\"\ncontrastive_start_epoch = 1\nholdout_fraction = 0.2\n",
    )
    .unwrap();
    let synth = Synthesizer::new(SynthesisSettings::load(&config).unwrap()).unwrap();
    let extractor = colour_cells();
    let snapshot = dir.path("after-two-epochs.ckpt");
    // A run into `dir/name` on `backend`: the epochs it reported, its weights and its head, or
    // the error that stopped it.
    let run = |backend: Backend, name: &str, checkpoint: &std::path::Path, resume: bool| {
        let out = dir.path(name);
        let mut epochs_seen = Vec::new();
        let report = run_fit(
            FitJob {
                extractor: &extractor,
                extractor_name: "colour-cells".into(),
                normalization: Normalization {
                    mean: [0.5; 3],
                    std: [0.25; 3],
                },
                images: images.clone(),
                synthesizer: Some(&synth),
                cache_root: &dir.path("cache"),
                settings: TrainSettings::load(&config).unwrap(),
                backend,
                workers: 1,
                progress: false,
                out: &out,
                provenance: toml::Table::new(),
                checkpoint: Some(checkpoint),
                resume,
                holdout: None,
            },
            &mut |log| {
                epochs_seen.push(log.epoch);
                // Called before the epoch's own checkpoint is written: during the third
                // epoch's report the file holds the state after two, as after a crash.
                if log.epoch == 2 && !resume {
                    std::fs::copy(checkpoint, &snapshot).unwrap();
                }
            },
        )
        .map_err(|e| e.to_string())?;
        let weights = report.trainer.weights();
        Ok::<_, String>((
            epochs_seen,
            weights,
            std::fs::read(out.join("head.onnx")).unwrap(),
        ))
    };
    // Folders that do not exist yet are made before training, not after the first epoch.
    let whole = run(
        backend.clone(),
        "runs/whole",
        &dir.path("runs/checkpoints/whole.ckpt"),
        false,
    )
    .unwrap();
    assert_eq!(whole.0, vec![0, 1, 2]);
    let saved = inspect_train::train::checkpoint::Checkpoint::load(&snapshot).unwrap();
    assert_eq!(saved.next_epoch, 2);
    assert!(
        saved.levels.iter().all(|l| !l.adam.is_empty()),
        "Adam state saved"
    );

    let resumed = run(backend.clone(), "resumed", &snapshot, true).unwrap();
    assert_eq!(resumed.0, vec![2], "only the third epoch is trained again");
    // (assert! rather than assert_eq!: a failure would print megabytes of weights)
    assert!(resumed.1 == whole.1, "weights differ from the unbroken run");
    assert!(
        resumed.2 == whole.2,
        "head.onnx differs from the unbroken run"
    );

    // Another kind of trainer refuses it, and says which kind wrote it.
    let refuse = |backend: Backend| match run(backend, "refused", &snapshot, true) {
        // (not expect_err: its message would print megabytes of weights)
        Ok(_) => panic!("the checkpoint is refused"),
        Err(message) => message,
    };
    let message = refuse(other);
    assert!(message.contains("written by the"), "{message}");

    // A checkpoint of other decoders is refused with both shapes named.
    let mut fewer = saved.clone();
    fewer.levels.pop();
    fewer.save(&snapshot).unwrap();
    let message = refuse(backend);
    assert!(
        message.contains("after-two-epochs.ckpt") && message.contains("C=4 x 2 blocks"),
        "{message}"
    );
    // A damaged one too.
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&snapshot, bytes).unwrap();
    let err = inspect_train::train::checkpoint::Checkpoint::load(&snapshot).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn fit_sets_the_threshold_on_a_held_out_folder_cut_as_the_daemon_cuts_frames() {
    let dir = Scratch::new("train-fit-holdout");
    let images = normal_images(&dir.path("good"), 8);
    let frames = normal_images(&dir.path("other-pass"), 3);
    let config = dir.path("train.toml");
    std::fs::write(
        &config,
        "[training]\nepochs = 1\nwarmup_epochs = 0\nimage_batch = 4\nfiber_batch = 32\n\
         blocks = 1\nfalse_alarm_rate = 0.1\n",
    )
    .unwrap();
    let tiling = Tiling {
        tile_size: 64,
        overlap: 16,
    };
    let report = run_fit(
        FitJob {
            extractor: &colour_cells(),
            extractor_name: "colour-cells".into(),
            normalization: Normalization {
                mean: [0.5; 3],
                std: [0.25; 3],
            },
            images: images.clone(),
            synthesizer: None,
            cache_root: &dir.path("cache"),
            settings: TrainSettings::load(&config).unwrap(),
            backend: Backend::Cpu { threads: 1 },
            workers: 1,
            progress: false,
            out: &dir.path("bundle"),
            provenance: toml::Table::new(),
            checkpoint: None,
            resume: false,
            holdout: Some(HeldOut {
                images: frames.clone(),
                tiling: Some(tiling),
            }),
        },
        &mut |_| {},
    )
    .unwrap();
    // Every training image trains; the threshold comes from every tile of the other pass.
    assert_eq!(report.train_images.len(), images.len());
    assert_eq!(report.holdout_images, frames);
    let per_frame = TileGrid::new(160, 120, 64, 16).tiles.len();
    assert_eq!(
        report.calibration.holdout_scores.len(),
        per_frame * frames.len()
    );
    let m = Bundle::load(&dir.path("bundle")).unwrap().manifest;
    assert_eq!(m.threshold.value, report.calibration.threshold);
}
