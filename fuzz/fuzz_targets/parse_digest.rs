//! Fuzz target: arbitrary WWW-Authenticate / Authorization values (challenges come from trunks,
//! credentials from callers). Neither parser may panic, and what parses must print to a value
//! that parses again.
//! Run with `cargo fuzz run parse_digest` from this directory.

#![no_main]

use callgate::sip::digest::{Authorization, Challenge};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(challenge) = Challenge::parse(text) {
        let printed = challenge.to_string();
        if let Err(e) = Challenge::parse(&printed) {
            panic!("printed challenge does not parse again: {e:?}\n{printed}");
        }
    }
    if let Ok(credentials) = Authorization::parse(text) {
        let printed = credentials.to_string();
        if let Err(e) = Authorization::parse(&printed) {
            panic!("printed credentials do not parse again: {e:?}\n{printed}");
        }
    }
});
