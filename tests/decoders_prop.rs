//! Property tests of every decoder that reads bytes a peer, a radio or a power cut controls:
//! commands (JSON and binary), COBS frames, binary messages, and journal replay. None may panic,
//! and what encodes must decode to itself. They run on stable and under qemu for the boards; the
//! coverage-guided cargo-fuzz targets in `fuzz/` (nightly, `fuzz/run.sh`) search the same
//! decoders, and the camera frame decoders, far deeper.

use std::time::{Duration, UNIX_EPOCH};

use edge_inspector::alerts::cobs::{self, Splitter, MAX_PAYLOAD};
use edge_inspector::alerts::{Alert, Command, FsyncPolicy, Journal, Reply, Status};
use inspect_core::tiler::PixelBox;
use inspect_protocol::{Fix, Position};
use proptest::prelude::*;

fn text<const N: usize>(s: &str) -> heapless::String<N> {
    heapless::String::try_from(s).unwrap()
}

fn pixel_box() -> impl Strategy<Value = PixelBox> {
    (0u32..4096, 0u32..4096, 0u32..4096, 0u32..4096).prop_map(|(x, y, width, height)| PixelBox {
        x,
        y,
        width,
        height,
    })
}

// Positions on the grid the JSON line writes (millimetres, 1e-7 degrees), both kinds and none.
fn position() -> impl Strategy<Value = Option<Position>> {
    let fix = prop_oneof![
        (-10_000_000_000i64..10_000_000_000).prop_map(|mm| Fix::Chainage {
            metres: mm as f64 / 1000.0
        }),
        (
            -900_000_000i64..=900_000_000,
            -1_800_000_000i64..=1_800_000_000
        )
            .prop_map(|(lat, lon)| Fix::Gnss {
                lat: lat as f64 / 1e7,
                lon: lon as f64 / 1e7,
            }),
    ];
    proptest::option::of(
        (fix, any::<u32>(), any::<bool>()).prop_map(|(fix, age_ms, stale)| Position {
            fix,
            age_ms,
            stale,
        }),
    )
}

fn alert() -> impl Strategy<Value = Alert> {
    (
        (any::<u64>(), position()),
        any::<u64>(),
        any::<u64>(),
        0u64..(1 << 45),
        0usize..65536,
        pixel_box(),
        any::<f32>(),
        any::<f32>(),
        pixel_box(),
        any::<f32>(),
        "[A-Za-z0-9._-]{1,32}",
        "[0-9a-f]{12}",
    )
        .prop_map(
            |(
                (boot, position),
                seq,
                frame,
                ms,
                tile_index,
                tile,
                score,
                threshold,
                region,
                area,
                device,
                model,
            )| {
                Alert {
                    boot,
                    position,
                    device: text(&device),
                    seq,
                    frame,
                    time: UNIX_EPOCH + Duration::from_millis(ms),
                    tile_index,
                    tile,
                    score,
                    threshold,
                    region,
                    area_fraction: area,
                    model: text(&model),
                }
            },
        )
}

// NaN != NaN: compare floats by their bits.
fn same(a: &Alert, b: &Alert) -> bool {
    let bits = |a: &Alert| {
        (
            a.score.to_bits(),
            a.threshold.to_bits(),
            a.area_fraction.to_bits(),
        )
    };
    let mut a2 = a.clone();
    let mut b2 = b.clone();
    (a2.score, a2.threshold, a2.area_fraction) = (0.0, 0.0, 0.0);
    (b2.score, b2.threshold, b2.area_fraction) = (0.0, 0.0, 0.0);
    a2 == b2 && bits(a) == bits(b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn command_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Command::from_json(&bytes);
        let _ = Command::from_binary(&bytes);
        let _ = Reply::from_binary(&bytes);
        let _ = Alert::from_binary(&bytes);
        let _ = Status::from_binary(&bytes);
        let _ = cobs::decode(&bytes);
    }

    #[test]
    fn json_commands_with_any_values_decode_or_are_refused(
        kind in "(ack|get_status|set_threshold|pause|resume|get_evidence|[a-z_]{0,12})",
        seq in proptest::option::of(any::<i64>()),
        value in proptest::option::of(any::<f64>()),
        junk in "[ -~]{0,40}",
    ) {
        let mut line = format!("{{\"type\":\"{kind}\"");
        if let Some(s) = seq { line += &format!(",\"seq\":{s}"); }
        if let Some(v) = value.filter(|v| v.is_finite()) { line += &format!(",\"value\":{v}"); }
        line += &format!(",\"note\":{}}}", serde_json::to_string(&junk).unwrap());
        match Command::from_json(line.as_bytes()) {
            Ok(c) => {
                prop_assert_eq!(c.name(), kind.as_str());
                // What decodes re-encodes to the same command.
                prop_assert_eq!(Command::from_json(c.to_json().as_bytes()), Ok(c));
            }
            Err(r) => prop_assert!(!r.message.is_empty()),
        }
    }

    #[test]
    fn cobs_frames_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD)) {
        let frame = cobs::encode(&payload).unwrap();
        prop_assert!(!frame[..frame.len() - 1].contains(&0));
        let decoded = cobs::decode(&frame[..frame.len() - 1]).unwrap();
        prop_assert_eq!(decoded.as_slice(), payload.as_slice());
    }

    #[test]
    fn a_noisy_stream_yields_only_checked_frames(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 1..8),
        noise in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
    ) {
        let mut stream = Vec::new();
        for p in &payloads {
            stream.extend_from_slice(&cobs::encode(p).unwrap());
        }
        let clean = stream.clone();
        for (at, byte) in &noise {
            let i = at % stream.len();
            stream[i] ^= byte | 1;
        }
        let mut splitter = Splitter::new();
        let good: Vec<Vec<u8>> = stream
            .iter()
            .filter_map(|&b| splitter.push(b))
            .filter_map(Result::ok)
            .map(|p| p.to_vec())
            .collect();
        if noise.is_empty() || stream == clean {
            prop_assert_eq!(good, payloads);
        } else {
            // Corruption can only lose frames (CRC-32 lets a random one through with
            // probability 2^-32), never invent them.
            for g in &good {
                prop_assert!(payloads.contains(g));
            }
        }
    }

    #[test]
    fn alerts_round_trip_in_binary(a in alert()) {
        let back = Alert::from_binary(&a.to_binary()).unwrap();
        // Frame coordinates travel as u16; the strategy stays below 4096 as the config does.
        prop_assert!(same(&back, &a), "{:?} != {:?}", back, a);
        prop_assert!(a.to_line().is_ok());
    }

    #[test]
    fn journal_replay_of_any_bytes_never_panics(
        tail in proptest::collection::vec(any::<u8>(), 0..400),
        keep in 0usize..3,
    ) {
        let dir = std::env::temp_dir().join(format!("ei-prop-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("alerts.journal");
        let _ = std::fs::remove_file(&path);
        {
            let mut j = Journal::open(&path, 1 << 16, FsyncPolicy::Never).unwrap();
            let b = PixelBox { x: 1, y: 1, width: 1, height: 1 };
            for f in 0..keep as u64 {
                let mut a = Alert {
                    device: text("d"), seq: 0, frame: f, time: UNIX_EPOCH, tile_index: 0,
                    tile: b, score: 1.0, threshold: 0.5, region: b, area_fraction: 0.1,
                    model: text("m"), boot: 1, position: None,
                };
                j.append(&mut a).unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&tail);
        std::fs::write(&path, &bytes).unwrap();
        let j = Journal::open(&path, 1 << 16, FsyncPolicy::Never).unwrap();
        // The good records before the garbage are all still there (random bytes forming a
        // valid record with a matching CRC-32 are as likely as a 2^-32 coincidence).
        prop_assert!(j.unacked() >= keep as u64);
        prop_assert!(j.next_seq() >= keep as u64);
    }

    #[test]
    fn signed_messages_verify_and_any_changed_byte_is_refused(
        alert in alert(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        cobs_framing in any::<bool>(),
    ) {
        use inspect_protocol::signing::{Direction, LinkKey, Signer, Verifier};
        use inspect_protocol::wire::{Deframer, Framing};
        use inspect_protocol::DeviceMessage;
        let framing = if cobs_framing { Framing::Cobs } else { Framing::Json };
        let key = LinkKey::from_bytes([11; 32]);
        let mut signer = Signer::new(key.clone(), 1, Direction::FromDevice);
        let time = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let message = DeviceMessage::Alert(alert);
        let Ok(wire) = message.encode_signed(framing, "d", time, false, &mut signer) else {
            // A message too long for its framing is refused whole, never cut.
            return Ok(());
        };
        let receive = |bytes: &[u8]| -> Vec<Result<Vec<u8>, ()>> {
            let mut verifier = Verifier::new(key.clone(), Direction::FromDevice, 0);
            let mut deframer = Deframer::new(framing);
            let mut out = Vec::new();
            for &b in bytes {
                if let Some(Ok(unframed)) = deframer.push(b) {
                    out.push(verifier.verify(unframed).map(|plain| match plain {
                        inspect_protocol::wire::Unframed::Line(m)
                        | inspect_protocol::wire::Unframed::Binary(m) => m.to_vec(),
                    }).map_err(|_| ()));
                }
            }
            out
        };
        let got = receive(&wire);
        prop_assert_eq!(got.len(), 1);
        let plain = got[0].clone().unwrap();
        let expected = match framing {
            Framing::Json => message.to_line("d", time).unwrap().as_bytes().to_vec(),
            Framing::Cobs => message.to_binary().to_vec(),
        };
        prop_assert_eq!(plain, expected);
        // One byte changed anywhere: nothing that verifies comes out.
        let mut changed = wire.to_vec();
        let i = at.index(changed.len());
        changed[i] ^= flip;
        prop_assert!(receive(&changed).iter().all(|r| r.is_err()));
    }

    #[test]
    fn nmea_lines_of_any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        use edge_inspector::position::nmea::{parse, LineAssembler};
        let mut lines = LineAssembler::default();
        lines.push(&bytes, |line| {
            let _ = parse(line);
        });
        let _ = parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn nmea_fixes_read_back_however_the_bytes_are_split(
        lat_e6 in 0u64..90_000_000,
        lon_e6 in 0u64..180_000_000,
        south in any::<bool>(),
        west in any::<bool>(),
        rmc in any::<bool>(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        use edge_inspector::position::nmea::{parse, LineAssembler, Reading};
        // Degrees and minutes with 4 decimals, as receivers write them.
        let (lat, lon) = (lat_e6 as f64 / 1e6, lon_e6 as f64 / 1e6);
        let dm = |v: f64, width: usize| {
            let (deg, min) = (v.trunc(), (v.fract() * 60.0 * 1e4).round() / 1e4);
            let (deg, min) = if min >= 60.0 { (deg + 1.0, 0.0) } else { (deg, min) };
            format!("{:0width$}{:07.4}", deg as u32, min)
        };
        let (lat_text, lon_text) = (dm(lat, 2), dm(lon, 3));
        let (ns, ew) = (if south { "S" } else { "N" }, if west { "W" } else { "E" });
        let body = if rmc {
            format!("GNRMC,083559.00,A,{lat_text},{ns},{lon_text},{ew},0.004,77.52,091202,,,A")
        } else {
            format!("GPGGA,092725.00,{lat_text},{ns},{lon_text},{ew},1,08,1.01,499.6,M,48.0,M,,")
        };
        let sum = body.bytes().fold(0u8, |a, b| a ^ b);
        let stream = format!("noise${body}*{sum:02X}\r\n").into_bytes();
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        at.sort_unstable();
        let mut readings = Vec::new();
        let mut assembler = LineAssembler::default();
        let mut from = 0;
        for cut in at.into_iter().chain([stream.len()]) {
            assembler.push(&stream[from..cut], |line| readings.push(parse(line)));
            from = cut;
        }
        prop_assert_eq!(readings.len(), 1);
        let sign = |neg: bool| if neg { -1.0 } else { 1.0 };
        match readings[0] {
            Ok(Reading::Fix { lat: got_lat, lon: got_lon }) => {
                // Four decimals of a minute: within 1e-5 minutes, about 2 cm.
                prop_assert!((got_lat - sign(south) * lat).abs() < 2e-6, "{} vs {}", got_lat, lat);
                prop_assert!((got_lon - sign(west) * lon).abs() < 2e-6, "{} vs {}", got_lon, lon);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
