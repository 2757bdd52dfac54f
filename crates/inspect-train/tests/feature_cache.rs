//! The feature cache: filled once by all workers, read back intact, keyed by extractor, image
//! and augmentation, damaged records recomputed. The extractor is a real ONNX model run by tract
//! (the brightness extractor: mean grey level over 8/16/32-pixel cells), so the expected
//! features can be reasoned about.

mod common;

use std::path::{Path, PathBuf};

use common::{defect_source, normal_images, Scratch};
use inspect_core::fixtures::brightness_extractor;
use inspect_core::tiler::{resize_rgb, Normalization};
use inspect_train::dataset::load_image;
use inspect_train::features::build::{BuildSummary, CacheBuild};
use inspect_train::features::cache::{decode, encode, FeatureCache, RecordKey};
use inspect_train::features::FeatureExtractor;
use inspect_train::synth::anomaly::downsample_mask;
use inspect_train::synth::bank::{file_hash, Synthesizer};
use inspect_train::synth::config::SynthesisSettings;

const SIDE: u32 = 64;

fn extractor(mean: f32) -> FeatureExtractor {
    FeatureExtractor::new(
        &brightness_extractor(SIDE as usize).unwrap(),
        Normalization {
            mean: [mean; 3],
            std: [1.0; 3],
        },
    )
    .unwrap()
}

fn synthesizer(dir: &Path) -> Synthesizer {
    defect_source(&dir.join("defects"));
    let path = dir.join("train.toml");
    std::fs::write(
        &path,
        "[synthesis]\ndefects = { images = \"defects/images\", masks = \"defects/masks\" }\n\
         window = 24\nmax_extent = 0.6\naugmentations_per_image = 2\nseed = 11\n",
    )
    .unwrap();
    Synthesizer::new(SynthesisSettings::load(&path).unwrap()).unwrap()
}

fn run(
    fx: &FeatureExtractor,
    synth: Option<&Synthesizer>,
    cache: &FeatureCache,
    workers: usize,
    images: &[PathBuf],
) -> BuildSummary {
    CacheBuild {
        extractor: fx,
        synthesizer: synth,
        cache,
        workers,
        progress: false,
    }
    .run(images)
    .unwrap()
}

/// Every record file under `dir`, sorted, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(dir).unwrap() {
        let sub = sub.unwrap().path();
        for f in std::fs::read_dir(&sub).unwrap() {
            let f = f.unwrap().path();
            out.push((
                f.strip_prefix(dir).unwrap().to_path_buf(),
                std::fs::read(&f).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn the_cache_holds_what_the_extractor_gives_and_is_filled_once() {
    let dir = Scratch::new("feature-cache");
    let synth = synthesizer(&dir.0);
    let mut images = normal_images(&dir.path("good"), 4);
    let broken = dir.path("good/broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\n not really").unwrap();
    images.push(broken);
    let fx = extractor(0.0);
    let cache = FeatureCache::open(&dir.path("cache"), fx.hash()).unwrap();

    let first = run(&fx, Some(&synth), &cache, 2, &images);
    assert_eq!(
        (first.computed, first.hits, first.unreadable, first.repaired),
        (12, 0, 1, 0),
        "4 images x (1 + 2 augmentations); the broken file is skipped"
    );
    assert_eq!(first.images.len(), 4);
    assert!(first.images.iter().all(|i| i.keys.len() == 3));

    for entry in &first.images {
        let resized = resize_rgb(&load_image(&entry.image).unwrap(), SIDE, SIDE);
        let hash = file_hash(&entry.image).unwrap();
        assert_eq!(entry.keys[0], RecordKey::Image { image: hash });
        let real = cache.load(&entry.keys[0]).unwrap().unwrap();
        assert_eq!(real.levels, fx.extract(&resized).unwrap());
        assert!(real.masks.is_empty());
        let shapes: Vec<_> = real
            .levels
            .iter()
            .map(|l| (l.name.as_str(), l.channels, l.height))
            .collect();
        assert_eq!(shapes, [("tap8", 1, 8), ("tap16", 1, 4), ("tap32", 1, 2)]);
        for (k, key) in entry.keys[1..].iter().enumerate() {
            let seed = synth.seed_for(&hash, k as u32);
            assert_eq!(
                *key,
                RecordKey::Augmented {
                    image: hash,
                    synthesis: *synth.fingerprint(),
                    seed
                }
            );
            let aug = cache.load(key).unwrap().unwrap();
            let expected = synth.augment(&resized, seed).unwrap().augmented;
            assert_eq!(aug.levels, fx.extract(&expected.image).unwrap());
            for (level, stride) in [8u32, 16, 32].iter().enumerate() {
                assert_eq!(aug.masks[level], downsample_mask(&expected.mask, *stride));
            }
            // The pasted crack is dark: the 8-px cells it covers lost brightness.
            let (r, a) = (&real.levels[0].data, &aug.levels[0].data);
            let darkest = r.iter().zip(a).map(|(r, a)| r - a).fold(0.0, f32::max);
            assert!(darkest > 5.0 / 255.0, "largest drop {darkest}");
        }
    }

    // A second pass computes nothing; one worker writes byte-identical records.
    let before = files(cache.dir());
    let second = run(&fx, Some(&synth), &cache, 2, &images);
    assert_eq!((second.computed, second.hits), (0, 12));
    assert_eq!(second.images, first.images);
    let solo_cache = FeatureCache::open(&dir.path("solo"), fx.hash()).unwrap();
    run(&fx, Some(&synth), &solo_cache, 1, &images);
    assert_eq!(files(solo_cache.dir()), before);

    // Damage two records (a flipped bit, a truncation): both are found and recomputed.
    let victims = [
        cache.path(&first.images[0].keys[1]),
        cache.path(&first.images[2].keys[0]),
    ];
    let mut bytes = std::fs::read(&victims[0]).unwrap();
    bytes[100] ^= 0x10;
    std::fs::write(&victims[0], bytes).unwrap();
    let bytes = std::fs::read(&victims[1]).unwrap();
    std::fs::write(&victims[1], &bytes[..bytes.len() / 2]).unwrap();
    assert!(cache.load(&first.images[0].keys[1]).is_err());
    let third = run(&fx, Some(&synth), &cache, 2, &images);
    assert_eq!((third.computed, third.repaired, third.hits), (2, 2, 10));
    assert_eq!(
        files(cache.dir()),
        before,
        "repaired records equal the originals"
    );

    // Another normalization is another extractor: its own folder, nothing reused.
    let shifted = extractor(0.25);
    assert_ne!(shifted.hash(), fx.hash());
    let other = FeatureCache::open(&dir.path("cache"), shifted.hash()).unwrap();
    assert_ne!(other.dir(), cache.dir());
    let fourth = run(&shifted, None, &other, 2, &images);
    assert_eq!((fourth.computed, fourth.hits), (4, 0));
    let r = other.load(&first.images[0].keys[0]).unwrap().unwrap();
    let base = cache.load(&first.images[0].keys[0]).unwrap().unwrap();
    for (a, b) in r.levels[0].data.iter().zip(&base.levels[0].data) {
        assert!((a - (b - 0.25)).abs() < 1e-5, "{a} vs {b} - 0.25");
    }
}

#[test]
fn records_reject_damage_of_every_kind() {
    let dir = Scratch::new("feature-record");
    let images = normal_images(&dir.path("good"), 1);
    let fx = extractor(0.0);
    let levels = fx
        .extract(&resize_rgb(&load_image(&images[0]).unwrap(), SIDE, SIDE))
        .unwrap();
    let record = inspect_train::features::cache::FeatureRecord {
        masks: levels
            .iter()
            .map(|l| vec![1; (l.height * l.width) as usize])
            .collect(),
        levels,
    };
    let bytes = encode(&record);
    assert_eq!(decode(&bytes).unwrap(), record);
    for cut in [0, 7, 40, bytes.len() - 1] {
        assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode(&longer).is_err());
    for at in [0, 12, bytes.len() / 2, bytes.len() - 1] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 1;
        assert!(decode(&flipped).is_err(), "bit flipped at {at}");
    }
    // A wrong extractor input size is an error naming the sizes.
    let err = fx.extract(&image::RgbImage::new(32, 32)).unwrap_err();
    assert!(err.to_string().contains("32x32"), "{err}");
}
