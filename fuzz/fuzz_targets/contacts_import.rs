//! Fuzz target: arbitrary CSV bodies for `POST /v1/contacts:import`. The reader may not
//! panic; a refusal names a line or the body, and every row it accepts holds an E.164
//! number and a clean, bounded name.
//! Run with `cargo fuzz run contacts_import` from this directory.

#![no_main]

use callgate::api::contacts::parse_import;
use callgate::store::contacts::MAX_FIELD;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_import(text, Some("44"), 0) {
        Ok(rows) => {
            assert!(!rows.is_empty());
            for row in rows {
                let digits = row.number.strip_prefix('+').expect("E.164 starts with +");
                assert!((8..=15).contains(&digits.len()), "{}", row.number);
                assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{}", row.number);
                assert!(!row.name.is_empty() && row.name.chars().count() <= MAX_FIELD);
                assert!(!row.name.chars().any(char::is_control), "{:?}", row.name);
                if let Some(id) = &row.prospect_id {
                    assert!(!id.is_empty() && id.chars().count() <= MAX_FIELD);
                }
            }
        }
        Err(e) => assert!(e.starts_with("line ") || e.starts_with("body:"), "{e}"),
    }
});
