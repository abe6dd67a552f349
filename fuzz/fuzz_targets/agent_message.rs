//! Fuzz target: arbitrary text frames on the agent WebSocket. The protocol reader may not
//! panic, and whatever it refuses comes back as an `error` message with a code, the shape
//! the agent protocol promises.
//! Run with `cargo fuzz run agent_message` from this directory.

#![no_main]

use callgate::api::agent::{parse_message, AgentMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let AgentMessage::Invalid(error) = parse_message(text) {
        assert_eq!(error["type"], "error", "{error}");
        assert!(error["code"].is_string(), "{error}");
        assert!(error["message"].is_string(), "{error}");
    }
});
