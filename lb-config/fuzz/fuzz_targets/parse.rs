//! Any text read as keepalived.conf: the reader must answer with a model or diagnostics,
//! never panic or hang. Includes are not followed (they would read whatever the fuzzer
//! names on this machine), however the text spells them (`${A}lude` included).
#![no_main]

use std::path::Path;

use lb_config::{Interfaces, Options};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let options = Options {
        config_id: "fuzz".into(),
        strict: false,
        interfaces: Interfaces::Unchecked,
        follow_includes: false,
    };
    let _ = lb_config::parse_with(text, Path::new("/nonexistent/fuzz.conf"), &options);
});
