//! Every shipped config in `firmware-config/` validates, and the board configs carry what their
//! vehicle needs.

use std::path::Path;

use edge_inspector::config::{AlertOutput, Config, PositionSettings, SourceSettings};

fn load(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("firmware-config")
        .join(name);
    Config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_shipped_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            count += 1;
        }
    }
    assert!(
        count >= 4,
        "expected the board configs and the desk replay, found {count}"
    );
}

#[test]
fn pi4_robot_uses_the_uart_and_a_usb_camera() {
    let c = load("pi4-tunnel-robot.toml");
    assert_eq!(c.alerts.output, AlertOutput::Serial);
    assert_eq!(c.alerts.port.as_deref(), Some(Path::new("/dev/ttyAMA0")));
    assert!(matches!(c.source, SourceSettings::V4l2 { .. }));
    assert!(c.gpio.is_some_and(|g| !g.required));
    // A robot in a tunnel: alerts survive link cuts and restarts.
    assert!(c.alerts.require_ack);
    assert!(c.journal.path.is_some());
    // Alerts placed by chainage from the trigger's encoder pulses.
    assert!(matches!(
        c.position,
        Some(PositionSettings::Odometer { metres_per_pulse, .. }) if metres_per_pulse == 0.02
    ));
}

#[test]
fn the_drone_frames_for_radio_and_syncs_every_alert() {
    use edge_inspector::alerts::Framing;
    use edge_inspector::config::FsyncMode;
    let c = load("pi5-drone.toml");
    assert_eq!(c.alerts.framing, Framing::Cobs);
    assert_eq!(c.journal.fsync, FsyncMode::Always);
    assert!(c.evidence.is_some());
    assert!(matches!(c.position, Some(PositionSettings::Gnss { .. })));
}

#[test]
fn desk_replay_reads_a_folder_to_stdout() {
    let c = load("desk-replay.toml");
    assert_eq!(c.alerts.output, AlertOutput::Stdout);
    assert!(matches!(c.source, SourceSettings::Folder { .. }));
}
