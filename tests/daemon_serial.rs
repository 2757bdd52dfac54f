//! The real `inspectd` on 1280x720 frames with planted defects, alerting over a real
//! pseudo-terminal: exactly the tiles carrying a defect are reported, with their frame-pixel boxes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use inspect_core::bundle::{sha256_hex, MANIFEST_FILE};
use inspect_core::tiler::{PixelBox, TileGrid};
use serde_json::Value;
use serialport::SerialPort;

fn read_available(master: &mut serialport::TTYPort, until: impl Fn(&str) -> bool) -> String {
    master.set_timeout(Duration::from_millis(500)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !until(&text) {
        match master.read(&mut buf) {
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("reading the pty: {e}"),
        }
    }
    text
}

#[test]
fn planted_defects_are_reported_exactly_over_a_pty() {
    let dir = Scratch::new("serial");
    let bundle = bundle(&dir.0);
    let frames = dir.path("frames");
    std::fs::create_dir_all(&frames).unwrap();
    // Grid of 1280x720 with 256-px tiles, 32 overlap: columns at 0,224,448,672,896,1024 and rows at
    // 0,224,448,464. Each defect lies wholly inside some tiles and wholly outside the others.
    let a = patch(100, 100, 48); // tile 0 only
    let b = patch(560, 300, 48); // tile 8 (row 1, column 2) only
    let c = patch(1100, 600, 48); // overlap of columns 4-5 and rows 2-3: tiles 16, 17, 22, 23
    let planted: Vec<Vec<PixelBox>> = vec![vec![a, b], vec![c], vec![]];
    for (i, defects) in planted.iter().enumerate() {
        frame(
            &frames.join(format!("frame_{i:03}.png")),
            i as u64 + 7,
            defects,
        );
    }
    // An unreadable frame between good ones: skipped and counted, never fatal.
    std::fs::write(
        frames.join("frame_001_torn.png"),
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
    )
    .unwrap();

    let (mut master, slave) = serialport::TTYPort::pair().unwrap();
    let port = slave.name().unwrap();
    let config = config(
        &dir.0,
        &bundle,
        &frames,
        &format!("output = \"serial\"\nport = \"{port}\"\nbaud = 115200"),
    );
    let mut child = common::inspectd()
        .args(["--config", config.to_str().unwrap()])
        .spawn()
        .unwrap();
    let text = read_available(&mut master, |t| {
        t.lines()
            .any(|l| l.contains("\"status\"") && l.contains("\"frames\":3"))
    });
    let status = child.wait().unwrap();
    assert!(status.success(), "inspectd exited with {status}");
    drop(slave);

    let lines: Vec<Value> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect();
    let alerts: Vec<&Value> = lines.iter().filter(|v| v["type"] == "alert").collect();
    let model_id = &sha256_hex(&std::fs::read(bundle.join(MANIFEST_FILE)).unwrap())[..12];

    let grid = TileGrid::new(1280, 720, 256, 32);
    let mut reported: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
    // Without a journal file the numbering starts from the clock, then counts up by one.
    let first = alerts
        .first()
        .and_then(|a| a["seq"].as_u64())
        .unwrap_or_default();
    for (i, alert) in alerts.iter().enumerate() {
        assert_eq!(
            alert["seq"],
            first + i as u64,
            "sequence numbers count up by one: {alert}"
        );
        assert_eq!(alert["v"], 2);
        assert_eq!(alert["device"], "test-rig");
        assert_eq!(alert["model"], model_id);
        assert!(alert["score"].as_f64().unwrap() > alert["threshold"].as_f64().unwrap());
        let frame = alert["frame"].as_u64().unwrap();
        let index = alert["tile"]["index"].as_u64().unwrap() as usize;
        let pbox = |v: &Value| PixelBox {
            x: v["x"].as_u64().unwrap() as u32,
            y: v["y"].as_u64().unwrap() as u32,
            width: v["w"].as_u64().unwrap() as u32,
            height: v["h"].as_u64().unwrap() as u32,
        };
        let tile = pbox(&alert["tile"]);
        assert_eq!(tile, grid.tiles[index].rect, "tile box in frame pixels");
        // The region must overlap the defect of that tile and stay close around it.
        let region = pbox(&alert["region"]);
        assert!(
            tile.contains(&region),
            "region {region:?} outside tile {tile:?}"
        );
        let defect = planted[frame as usize]
            .iter()
            .find(|d| tile.contains(d))
            .unwrap_or_else(|| panic!("alert on tile {index} of frame {frame} has no defect"));
        assert!(region.intersects(defect), "{region:?} misses {defect:?}");
        let margin = PixelBox {
            x: defect.x - 40,
            y: defect.y - 40,
            width: defect.width + 80,
            height: defect.height + 80,
        };
        assert!(margin.contains(&region), "{region:?} far from {defect:?}");
        let area = alert["region"]["area"].as_f64().unwrap();
        assert!(area > 0.0 && area < 0.2, "area fraction {area}");
        reported.entry(frame).or_default().insert(index);
    }
    let expected: BTreeMap<u64, BTreeSet<usize>> = [
        (0, BTreeSet::from([0, 8])),
        (1, BTreeSet::from([16, 17, 22, 23])),
    ]
    .into();
    assert_eq!(reported, expected);

    let last = lines.iter().rev().find(|v| v["type"] == "status").unwrap();
    assert_eq!(last["frames"], 3);
    assert_eq!(last["skipped_frames"], 1);
    assert_eq!(last["alerts"], 6);
    assert_eq!(last["dropped_alerts"], 0);
}
