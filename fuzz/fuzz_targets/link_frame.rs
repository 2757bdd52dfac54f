//! A byte stream off the link, as the monitor reads it, in both framings: cut by the protocol's
//! `Deframer` (COBS frames split at zeros and checked by CRC, or JSON lines), then decoded as
//! alert, status, reply or evidence chunk. Nothing may panic; every COBS frame that passes the
//! CRC re-frames to itself; a message that decodes re-encodes, in the framing it came in, to
//! bytes that decode to the same message.
#![no_main]

use inspect_protocol::cobs;
use inspect_protocol::{Deframer, DeviceMessage, Framing, Unframed};
use libfuzzer_sys::fuzz_target;
use std::time::UNIX_EPOCH;

/// Decodes every message of `bytes` in `framing`.
fn receive(framing: Framing, bytes: &[u8]) -> Vec<DeviceMessage<'static>> {
    let mut deframer = Deframer::new(framing);
    let mut messages = Vec::new();
    for &byte in bytes {
        let Some(Ok(unframed)) = deframer.push(byte) else {
            continue;
        };
        if let Unframed::Binary(payload) = unframed {
            let frame = cobs::encode(payload).expect("a decoded payload fits a frame");
            assert_eq!(
                cobs::decode(&frame[..frame.len() - 1]).as_deref(),
                Ok(payload)
            );
        }
        if let Ok(message) = DeviceMessage::decode(unframed) {
            messages.push(message.into_owned());
        }
    }
    messages
}

fuzz_target!(|bytes: &[u8]| {
    for framing in [Framing::Json, Framing::Cobs] {
        for message in receive(framing, bytes) {
            // A decoded line may be too long to re-send (e.g. a long reply text); never a panic.
            let Ok(wire) = message.encode(framing, "fuzz", UNIX_EPOCH, false) else {
                continue;
            };
            let again = receive(framing, &wire);
            assert_eq!(again.len(), 1, "{message:?} re-encoded to {wire:?}");
            // Compared in binary form: it keeps NaN's bits where `==` would fail.
            assert_eq!(again[0].to_binary(), message.to_binary(), "{message:?}");
        }
    }
});
