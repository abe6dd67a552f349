//! Fuzz target: arbitrary text frames on the agent WebSocket. The protocol reader may not
//! panic, and whatever it refuses comes back as an `error` message with a code and a
//! message, the shape the agent protocol promises.
//! Run with `cargo fuzz run agent_message` from this directory.

#![no_main]

use callgate::api::protocol::{parse, ServerMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(refusal) = parse(text) {
        assert!(!refusal.message.is_empty(), "{refusal:?}");
        let error = refusal.into_error();
        assert!(
            matches!(&error, ServerMessage::Error { code, .. } if code == "bad_request"),
            "{error:?}"
        );
        let wire = error.to_json();
        assert!(wire.starts_with(r#"{"type":"error""#), "{wire}");
    }
});
