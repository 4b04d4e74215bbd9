//! Any bytes as an IPVS sync message: the decoder answers with the records (and those
//! skipped) or a reason, never a panic; what it accepts encodes back to a message that
//! decodes to the same records. The same bytes as a resync message: decoded, or a reason.
#![no_main]

use lb_sync::{resync::Resync, wire::Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = Message::decode(data) {
        let again = Message::decode(&decoded.message.encode()).expect("re-encoded message decodes");
        assert!(again.skipped.is_empty());
        assert_eq!(again.message, decoded.message);
    }
    if let Ok(resync) = Resync::decode(data) {
        assert_eq!(&resync.encode()[..], data);
    }
});
