//! The field crew's workflow end to end, with the real binaries (docs/FIELD.md): drive once
//! through a new site recording it (`inspectd` with `[record]`, chainage from a simulated
//! odometer), enroll a model for the site (`inspect-train enroll`), inspect the site with that
//! model while `inspect-monitor` acknowledges, logs and fetches evidence over a serial cable,
//! and hand over the report (`inspect-monitor report`), rendered by headless Chromium.
//!
//! Needs the other packages' binaries in the same target folder (tests/run.sh builds them);
//! skipped under an emulator, where the monitor cannot open a serial port.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use serialport::SerialPort;

/// Writes `count` frames into `dir` with `positions.csv`: chainage `start + step * i`, as an
/// odometer gives it; `defects(i)` are planted in frame `i`.
fn drive(
    dir: &Path,
    count: u64,
    start: f64,
    step: f64,
    defects: impl Fn(u64) -> Vec<inspect_core::tiler::PixelBox>,
) -> BTreeMap<String, f64> {
    std::fs::create_dir_all(dir).unwrap();
    let mut csv = String::from("file,frame,time,source,chainage_m,lat,lon,age_ms,stale\n");
    let mut chainage = BTreeMap::new();
    for i in 0..count {
        let name = format!("f{i:03}.png");
        inspect_core::fixtures::concrete_frame(512, 384, 40 + i, &defects(i))
            .save(dir.join(&name))
            .unwrap();
        let metres = start + step * i as f64;
        csv += &format!("{name},{i},2026-12-04T10:00:00.000Z,odometer,{metres:.3},,,0,false\n");
        chainage.insert(name, metres);
    }
    std::fs::write(dir.join("positions.csv"), csv).unwrap();
    chainage
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}: {text}");
    text
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|name| PathBuf::from("/usr/bin").join(name))
        .find(|p| p.is_file())
}

#[test]
fn record_enroll_inspect_and_report_a_site() {
    if std::env::var_os("EDGE_INSPECTOR_RUNNER").is_some() {
        eprintln!("skipped under an emulator: the monitor cannot open a serial port there");
        return;
    }
    let dir = Scratch::new("field");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    // 1. Record: one defect-free pass, 16 frames 0.5 m apart from 1000 m, with a generic model.
    let pass = dir.path("pass");
    drive(&pass, 16, 1000.0, 0.5, |_| Vec::new());
    let recording = dir.path("recording");
    let generic = bundle(&dir.0);
    let config = config(&dir.0, &generic, &pass, "output = \"stdout\"");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!("[record]\ndir = \"{}\"\nevery = 1\n", recording.display());
    std::fs::write(&config, text).unwrap();
    let log = run(inspectd()
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info"));
    assert!(log.contains("recorded 16 frames"), "{log}");

    // 2. Enroll: the site's model from the recording, synthetic cracks from a defect bank.
    let bank = dir.path("bank");
    std::fs::create_dir_all(bank.join("images")).unwrap();
    std::fs::create_dir_all(bank.join("masks")).unwrap();
    for i in 0..3u32 {
        let crack = |x: u32, y: u32| (10..110).contains(&x) && y.abs_diff(20 + i * 20 + x / 3) < 2;
        image::RgbImage::from_fn(120, 90, |x, y| {
            image::Rgb(if crack(x, y) {
                [50, 25, 20]
            } else {
                [160, 155, 150]
            })
        })
        .save(bank.join(format!("images/c{i}.png")))
        .unwrap();
        image::GrayImage::from_fn(120, 90, |x, y| {
            image::Luma([if crack(x, y) { 255 } else { 0 }])
        })
        .save(bank.join(format!("masks/c{i}.png")))
        .unwrap();
    }
    let train_config = dir.path("enroll.toml");
    std::fs::write(
        &train_config,
        "[synthesis]\ndefects = { images = \"bank/images\", masks = \"bank/masks\" }\n\
         window = 0\nmargin = 8\nscale = [0.8, 1.0]\nmax_rotation_deg = 30\nflip = true\n\
         max_extent = 0.6\naugmentations_per_image = 1\nseed = 7\n\
         [training]\nepochs = 1\nwarmup_epochs = 0\nimage_batch = 8\nfiber_batch = 256\nlr = 2e-4\nblocks = 2\n\
         objective = \"fusion\"\ncontrastive_start_epoch = 0\nseed = 7\nfalse_alarm_rate = 0.01\n",
    )
    .unwrap();
    let site_bundle = dir.path("site-bundle");
    let out = run(Command::new(workspace_binary("inspect-train"))
        .args(["enroll", "--recording", recording.to_str().unwrap()])
        .args(["--config", train_config.to_str().unwrap()])
        .arg("--extractor")
        .arg(root.join("demo/lite0-bundle/extractor.onnx"))
        .args(["--extractor-name", "efficientnet-lite0-2-levels-int8"])
        .args([
            "--tile-size",
            "256",
            "--overlap",
            "32",
            "--holdout-every",
            "4",
        ])
        .args(["--max-tiles", "40", "--out", site_bundle.to_str().unwrap()]));
    let summary: Value =
        serde_json::from_slice(&std::fs::read(site_bundle.join("enrollment.json")).unwrap())
            .unwrap();
    assert_eq!(summary["frames"], 16, "{out}");
    assert_eq!(summary["holdout_frames"], 4);
    assert!(summary["training_tiles"].as_u64().unwrap() <= 40);

    // 3. Inspect the site with defects at chainage 2000-2006 m, the monitor on the cable.
    let site = dir.path("site");
    let chainage = drive(&site, 4, 2000.0, 2.0, |i| {
        vec![inspect_core::fixtures::square(120 + 60 * i as u32, 150, 56)]
    });
    let (master_a, slave_a) = pty();
    let (master_b, slave_b) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    let cable = null_modem(master_a, master_b, stop.clone());
    let logs = dir.path("logs");
    let mut monitor = common::binary(&workspace_binary("inspect-monitor"))
        .arg("--port")
        .arg(slave_b.name().unwrap())
        .args(["--log-dir", logs.to_str().unwrap(), "--fetch-evidence"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let config = common::config(
        &dir.0,
        &site_bundle,
        &site,
        &format!(
            "output = \"serial\"\nport = \"{}\"\nrequire_ack = true\nack_timeout_ms = 1000",
            slave_a.name().unwrap()
        ),
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace("path = ", "loop = true\nframe_interval_ms = 500\npath = ");
    text += &format!("[evidence]\ndir = \"{}\"\n", dir.path("evidence").display());
    std::fs::write(&config, text).unwrap();
    let daemon = inspectd()
        .args(["--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Until the monitor has logged alerts of every frame of a pass with their evidence.
    let deadline = Instant::now() + Duration::from_secs(180);
    let fetched = |logs: &Path| -> (usize, usize) {
        let text = std::fs::read_to_string(logs.join("alerts.jsonl")).unwrap_or_default();
        let seqs: Vec<u64> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["seq"].as_u64())
            .collect();
        let with = seqs
            .iter()
            .filter(|s| logs.join(format!("evidence/{s:012}-heatmap.png")).is_file())
            .count();
        (seqs.len(), with)
    };
    loop {
        let (alerts, with_evidence) = fetched(&logs);
        if alerts >= 4 && with_evidence >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{alerts} alerts, {with_evidence} with evidence"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(&daemon, libc::SIGTERM);
    let daemon_log = {
        let out = daemon.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    signal(&monitor, libc::SIGTERM);
    monitor.wait().unwrap();
    let mut monitor_out = String::new();
    monitor
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut monitor_out)
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    cable.join().unwrap();
    drop((slave_a, slave_b));

    // Every logged alert lies at its frame's chainage.
    let logged: Vec<Value> = std::fs::read_to_string(logs.join("alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!logged.is_empty(), "{daemon_log}\n{monitor_out}");
    let names: Vec<&String> = chainage.keys().collect();
    for a in &logged {
        let file = names[(a["frame"].as_u64().unwrap() % 4) as usize];
        assert_eq!(a["pos"]["chainage_m"], chainage[file], "{a}");
    }

    // 4. The report: every alert at its chainage, in the page and the CSV.
    let report = dir.path("report.html");
    let out = run(common::binary(&workspace_binary("inspect-monitor")).args([
        "report",
        "--log-dir",
        logs.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
        "--section-m",
        "5",
    ]));
    assert!(out.contains(&format!("{} alerts", logged.len())), "{out}");
    let html = std::fs::read_to_string(&report).unwrap();
    // Nothing is loaded from elsewhere (the SVG's namespace is a name, not a request).
    for loads in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(loads), "{loads}: the page must open offline");
    }
    assert!(html.contains("<svg"), "the strip is drawn");
    for a in &logged {
        let seq = a["seq"].as_u64().unwrap();
        let metres = a["pos"]["chainage_m"].as_f64().unwrap();
        let row = html
            .lines()
            .find(|l| l.contains(&format!("data-seq=\"{seq}\"")))
            .unwrap_or_else(|| panic!("alert {seq} not in the report"));
        assert!(row.contains(&format!("{metres:.2} m")), "{row}");
        // Sections of 5 m: 2000-2005 holds frames at 2000, 2002, 2004; 2005-2010 the last.
        let section = (metres / 5.0).floor() as i64;
        assert!(
            row.contains(&format!("data-section=\"{section}\"")),
            "{row}"
        );
    }
    let with_images = html.matches("src=\"data:image/jpeg;base64,").count();
    assert!(with_images >= 4, "{with_images} thumbnails");
    let csv = std::fs::read_to_string(report.with_extension("csv")).unwrap();
    assert_eq!(csv.lines().count(), logged.len() + 1);

    // 5. Headless Chromium renders it: the script ran without errors (its count of shown rows
    // is in the DOM) and the screenshot shows the alerts' markers.
    let Some(chromium) = chromium() else {
        panic!("chromium is missing: tests/setup.sh installs it (apt-get install chromium)");
    };
    let browser = |extra: &[&str]| {
        Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .args(["--enable-logging=stderr", "--v=0"])
            .args(extra)
            .arg(format!("file://{}", report.display()))
            .output()
            .unwrap()
    };
    let dom = browser(&["--dump-dom", "--virtual-time-budget=2000"]);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    let console = String::from_utf8_lossy(&dom.stderr);
    assert!(
        dom_text.contains(&format!("<b id=\"shown\">{}</b>", logged.len())),
        "the filter script did not run: {console}"
    );
    for line in console.lines().filter(|l| l.contains("CONSOLE")) {
        assert!(
            !line.contains("Uncaught") && !line.contains("rror"),
            "{line}"
        );
    }
    let shot = dir.path("report.png");
    let out = browser(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1100,900",
        "--hide-scrollbars",
    ]);
    assert!(shot.is_file(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = image::open(&shot).unwrap().into_rgb8();
    // The markers are orange to red (see the report's severity colours).
    let markers = png
        .pixels()
        .filter(|p| p.0[0] > 200 && p.0[1] < 215 && p.0[2] < 60)
        .count();
    assert!(markers > 50, "{markers} marker pixels in the screenshot");
    if let Ok(keep) = std::env::var("FIELD_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
