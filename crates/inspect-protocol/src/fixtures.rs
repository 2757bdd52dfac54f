//! Sample alerts for the unit tests of every module that handles them (message, binary,
//! journal, link, monitor): one definition instead of a copy per test module.

use std::time::{Duration, UNIX_EPOCH};

use crate::message::Alert;
use crate::position::{Fix, Position};
use crate::PixelBox;

/// A short identifier; panics if `s` does not fit in `N` bytes (test input only).
pub fn id<const N: usize>(s: &str) -> heapless::String<N> {
    heapless::String::try_from(s).expect("test id fits")
}

/// An alert numbered `seq` for frame `frame`, taken `frame` x 100 ms after the epoch, on tile 3
/// of device "dev" (boot id 7) with model "0123456789ab"; score 2.5 over threshold 1.0; at
/// chainage `frame` x 0.25 m.
pub fn alert(seq: u64, frame: u64) -> Alert {
    let b = PixelBox {
        x: 10,
        y: 20,
        width: 30,
        height: 40,
    };
    Alert {
        device: id("dev"),
        seq,
        frame,
        time: UNIX_EPOCH + Duration::from_millis(frame * 100),
        tile_index: 3,
        tile: b,
        score: 2.5,
        threshold: 1.0,
        region: b,
        area_fraction: 0.25,
        model: id("0123456789ab"),
        boot: 7,
        position: Some(Position {
            fix: Fix::Chainage {
                metres: frame as f64 * 0.25,
            },
            age_ms: 12,
            stale: false,
        }),
    }
}

/// A realistic alert: seq 41, frame 1203, a 40x36 region inside tile 9 (256 px at 224, 224),
/// from boot 0x5eed0000c0ffee01 at a GNSS fix in Lyon 0.8 s old.
pub fn sample_alert() -> Alert {
    Alert {
        device: id("robot-7"),
        seq: 41,
        frame: 1203,
        time: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
        tile_index: 9,
        tile: PixelBox {
            x: 224,
            y: 224,
            width: 256,
            height: 256,
        },
        score: 2.5,
        threshold: 1.25,
        region: PixelBox {
            x: 300,
            y: 310,
            width: 40,
            height: 36,
        },
        area_fraction: 0.0234,
        model: id("0123456789ab"),
        boot: 0x5eed_0000_c0ff_ee01,
        position: Some(Position {
            fix: Fix::Gnss {
                lat: 45.764043,
                lon: 4.835659,
            },
            age_ms: 800,
            stale: false,
        }),
    }
}
