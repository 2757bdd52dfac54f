//! The peer's commands, as the daemon reads them off the link: a JSON line or a binary payload,
//! and the signature check in front of them on a signed link.
//! Nothing may panic; a command that decodes re-encodes to itself in both framings; a refusal
//! says why.
#![no_main]

use inspect_protocol::cobs;
use inspect_protocol::signing::{Direction, LinkKey, Verifier};
use inspect_protocol::wire::Unframed;
use inspect_protocol::Command;
use libfuzzer_sys::fuzz_target;

fn check(decoded: Result<Command, inspect_protocol::command::Rejected>) {
    match decoded {
        Ok(command) => {
            assert_eq!(
                Command::from_json(command.to_json().as_bytes()),
                Ok(command)
            );
            assert_eq!(Command::from_binary(&command.to_binary()), Ok(command));
        }
        Err(rejected) => assert!(!rejected.message.is_empty(), "a refusal names its reason"),
    }
}

fuzz_target!(|bytes: &[u8]| {
    check(Command::from_json(bytes));
    check(Command::from_binary(bytes));
    // The same bytes as a COBS frame off a radio link.
    if let Ok(payload) = cobs::decode(bytes) {
        check(Command::from_binary(&payload));
    }
    // A signed link checks the signature first: refuse or hand back the message unsigned.
    let mut verifier = Verifier::new(LinkKey::from_bytes([7; 32]), Direction::ToDevice, 0);
    for unframed in [Unframed::Line(bytes), Unframed::Binary(bytes)] {
        if let Ok(plain) = verifier.verify(unframed) {
            let (Unframed::Line(m) | Unframed::Binary(m)) = plain;
            assert!(m.len() < bytes.len(), "the signature is stripped");
        }
    }
});
