//! Fuzz target: arbitrary text through the SDP parser (trunk offers and answers arrive from the
//! network). It may not panic, and what parses must print to SDP that parses again, since the
//! gateway re-offers what it parsed.
//! Run with `cargo fuzz run parse_sdp` from this directory.

#![no_main]

use callgate::sdp::SessionDescription;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sdp) = SessionDescription::parse(text) {
        let printed = sdp.to_string();
        if let Err(e) = SessionDescription::parse(&printed) {
            panic!("printed SDP does not parse again: {e:?}\n{printed}");
        }
    }
});
