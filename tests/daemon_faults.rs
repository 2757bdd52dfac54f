//! Faults a field technician will meet: bad config, tampered or incomplete bundle, bad frames.
//! Fatal ones stop `inspectd` with a non-zero exit and a message naming the culprit; per-frame
//! ones are skipped and the daemon goes on.

mod common;

use common::*;
use serde_json::Value;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn setup(name: &str) -> (Scratch, std::path::PathBuf, std::path::PathBuf) {
    let dir = Scratch::new(name);
    let bundle = bundle(&dir.0);
    let frames = dir.path("frames");
    std::fs::create_dir_all(&frames).unwrap();
    frame(&frames.join("a.png"), 1, &[patch(100, 100, 48)]);
    let config = config(&dir.0, &bundle, &frames, "output = \"stdout\"");
    (dir, bundle, config)
}

#[test]
fn stdout_mode_prints_json_lines_and_check_config_passes() {
    let (_dir, _bundle, config) = setup("stdout");
    let out = run_inspectd(&["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let alerts: Vec<&Value> = lines.iter().filter(|v| v["type"] == "alert").collect();
    assert_eq!(alerts.len(), 1, "{stdout}");
    assert_eq!(alerts[0]["tile"]["index"], 0);
    assert_eq!(lines.last().unwrap()["type"], "status");

    let check = run_inspectd(&["check-config", config.to_str().unwrap()]);
    assert!(check.status.success(), "{}", stderr(&check));
    let said = String::from_utf8(check.stdout).unwrap();
    assert!(
        said.contains("configuration is valid") && said.contains("bundle verified"),
        "{said}"
    );
}

#[test]
fn bad_config_names_key_value_and_range() {
    let (dir, _bundle, config) = setup("badconfig");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("overlap = 32", "overlap = 300");
    let bad = dir.path("bad.toml");
    std::fs::write(&bad, text).unwrap();
    for args in [
        vec!["--config", bad.to_str().unwrap()],
        vec!["check-config", bad.to_str().unwrap()],
    ] {
        let out = run_inspectd(&args);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("bad.toml"), "{err}");
        assert!(err.contains("`tiling.overlap` = 300"), "{err}");
        assert!(err.contains("0 to 128"), "{err}");
    }
    let typo = dir.path("typo.toml");
    std::fs::write(
        &typo,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("tile_size", "tilesize"),
    )
    .unwrap();
    let err = stderr(&run_inspectd(&["check-config", typo.to_str().unwrap()]));
    assert!(err.contains("unknown field `tilesize`"), "{err}");
}

#[test]
fn tampered_bundle_is_refused_naming_the_file() {
    let (_dir, bundle, config) = setup("tampered");
    let head = bundle.join("head.onnx");
    let mut bytes = std::fs::read(&head).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&head, bytes).unwrap();
    let out = run_inspectd(&["--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("head.onnx") && err.contains("SHA-256"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "no alert may come from a refused bundle"
    );
}

#[test]
fn missing_model_file_is_refused_naming_the_file() {
    let (_dir, bundle, config) = setup("missing");
    std::fs::remove_file(bundle.join("extractor.onnx")).unwrap();
    let out = run_inspectd(&["--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("extractor.onnx"), "{err}");
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn frames_of_another_size_are_counted_and_skipped() {
    let (dir, _bundle, config) = setup("framesize");
    let frames = dir.path("frames");
    // The first frame (a.png, 1280x720) sets the size; a smaller one between two good ones.
    inspect_core::fixtures::concrete_frame(640, 480, 3, &[])
        .save(frames.join("b.png"))
        .unwrap();
    frame(&frames.join("c.png"), 2, &[]);
    let out = run_inspectd(&["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let last: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["frames"], 2);
    assert_eq!(last["skipped_frames"], 1);
    assert!(
        stderr(&out).contains("b.png: frame of 640x480 skipped: frames must be 1280x720"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unreadable_frames_are_skipped_and_an_all_bad_folder_is_fatal() {
    let (dir, _bundle, config) = setup("badframes");
    let frames = dir.path("frames");
    std::fs::write(frames.join("b.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    frame(&frames.join("c.png"), 2, &[]);
    let out = run_inspectd(&["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let last: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["frames"], 2);
    assert_eq!(last["skipped_frames"], 1);
    assert!(
        stderr(&out).contains("b.jpg"),
        "the skipped file is named in the log"
    );

    for f in ["a.png", "c.png"] {
        std::fs::remove_file(frames.join(f)).unwrap();
    }
    let out = run_inspectd(&["--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no readable PNG or JPEG frames"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_refused_bundle_falls_back_to_the_last_known_good_and_inspection_goes_on() {
    use inspect_core::bundle::trust::{SecretKey, SIGNATURE_FILE};
    use inspect_core::bundle::{write_manifest, Bundle, MANIFEST_FILE};
    let (dir, primary, config) = setup("signed-bundles");
    let fallback = inspect_core::fixtures::brightness_bundle_in(&dir.path("previous")).unwrap();
    let secret = SecretKey::from_seed([5; 32]);
    let sign = |bundle: &std::path::Path, version: u64| {
        let mut manifest = Bundle::load(bundle).unwrap().manifest;
        manifest.bundle_version = version;
        write_manifest(bundle, &manifest).unwrap();
        let bytes = std::fs::read(bundle.join(MANIFEST_FILE)).unwrap();
        std::fs::write(bundle.join(SIGNATURE_FILE), secret.sign(&bytes)).unwrap();
    };
    sign(&primary, 3);
    sign(&fallback, 2);
    let version_file = dir.path("bundle.version");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[source]",
        &format!(
            "public_key = \"{}\"\nfallback_bundle = \"{}\"\nversion_file = \"{}\"\n[source]",
            secret.public().to_hex(),
            fallback.display(),
            version_file.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let alerts = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("\"type\":\"alert\""))
            .count()
    };
    // Signed and current: it runs, and its version is remembered.
    let out = run_inspectd(&["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(alerts(&out), 1);
    assert_eq!(std::fs::read_to_string(&version_file).unwrap().trim(), "3");
    // Changed after signing: refused, the previous bundle inspects instead.
    let manifest = primary.join(MANIFEST_FILE);
    let good = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        good.replace("bundle_version = 3", "bundle_version = 4"),
    )
    .unwrap();
    let out = run_inspectd(&["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("signature does not match"), "{log}");
    assert!(log.contains("loading the last-known-good bundle"), "{log}");
    assert_eq!(alerts(&out), 1, "inspection went on with the fallback");
    // An older release, properly signed: rollback refused.
    std::fs::write(&manifest, &good).unwrap();
    sign(&primary, 1);
    let out = run_inspectd(&["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rollback refused"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&version_file).unwrap().trim(), "3");
    // Both refused: the daemon stops with the primary's reason.
    std::fs::remove_file(fallback.join(SIGNATURE_FILE)).unwrap();
    let out = run_inspectd(&["--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("rollback refused"),
        "{}",
        stderr(&out)
    );
}
