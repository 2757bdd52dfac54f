//! A byte stream off the link, as the monitor reads it: COBS frames split at zeros, checked by
//! CRC, then decoded as alert, status, reply or evidence chunk. Nothing may panic; every frame
//! that passes the CRC re-frames to itself; a message that decodes re-encodes to a payload that
//! decodes to the same message, and its JSON line is valid JSON.
#![no_main]

use inspect_protocol::cobs::{self, Splitter};
use inspect_protocol::command::EvidenceChunk;
use inspect_protocol::{Alert, Reply, Status};
use libfuzzer_sys::fuzz_target;
use std::time::UNIX_EPOCH;

fn json(line: Result<inspect_protocol::Line, inspect_protocol::message::LineTooLong>) {
    if let Ok(line) = line {
        serde_json::from_str::<serde_json::Value>(&line).expect("lines are JSON");
    }
}

fuzz_target!(|bytes: &[u8]| {
    let mut splitter = Splitter::new();
    for &byte in bytes {
        let Some(Ok(payload)) = splitter.push(byte) else {
            continue;
        };
        let frame = cobs::encode(&payload).expect("a decoded payload fits a frame");
        assert_eq!(
            cobs::decode(&frame[..frame.len() - 1]).as_deref(),
            Ok(&payload[..])
        );

        if let Ok(alert) = Alert::from_binary(&payload) {
            let again = Alert::from_binary(&alert.to_binary()).expect("re-encoded alert decodes");
            assert_eq!(again.to_binary(), alert.to_binary());
            json(alert.to_line());
        }
        if let Ok(status) = Status::from_binary(&payload) {
            let again =
                Status::from_binary(&status.to_binary()).expect("re-encoded status decodes");
            assert_eq!(again.to_binary(), status.to_binary());
            json(status.to_line());
        }
        if let Ok(reply) = Reply::from_binary(&payload) {
            let again = Reply::from_binary(&reply.to_binary()).expect("re-encoded reply decodes");
            assert_eq!(again.to_binary(), reply.to_binary());
            json(reply.to_line("fuzz", UNIX_EPOCH));
        }
        if let Ok(chunk) = EvidenceChunk::from_binary(&payload) {
            let again = chunk.to_binary();
            assert_eq!(
                EvidenceChunk::from_binary(&again).map(|c| c.data),
                Ok(chunk.data)
            );
            json(chunk.to_line("fuzz", UNIX_EPOCH));
        }
    }
});
