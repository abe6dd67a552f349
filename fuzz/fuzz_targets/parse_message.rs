//! Fuzz target: arbitrary bytes through both SIP framings (UDP datagram, TCP stream). Neither
//! may panic, a stream may not claim more bytes than it was given, and whatever parses must
//! print (`to_bytes`) to a message that parses again, since we forward what we parsed. Printing
//! normalises (header spacing, Content-Length), so a message at the size limit may print a
//! few bytes over it; the limit is for what arrives, and such a print is not re-parsed.
//! Run with `cargo fuzz run parse_message` from this directory.

#![no_main]

use callgate::sip::message::{Message, MAX_MESSAGE_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::parse_datagram(data) {
        let printed = message.to_bytes();
        if printed.len() <= MAX_MESSAGE_SIZE {
            if let Err(e) = Message::parse_datagram(&printed) {
                panic!("printed datagram does not parse again: {e:?}\n{printed:?}");
            }
        }
    }
    if let Ok((message, used)) = Message::parse_stream(data) {
        assert!(
            used <= data.len(),
            "consumed {used} of {} bytes",
            data.len()
        );
        let printed = message.to_bytes();
        if printed.len() > MAX_MESSAGE_SIZE {
            return;
        }
        match Message::parse_stream(&printed) {
            Ok((_, again)) => assert_eq!(again, printed.len(), "printed message framed short"),
            Err(e) => panic!("printed stream message does not parse again: {e:?}\n{printed:?}"),
        }
    }
});
