//! Any text read as keepalived.conf: the reader must answer with a model or diagnostics,
//! never panic or hang. Inputs that include other files are skipped (they would read
//! whatever the fuzzer names on this machine).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("include") {
        return;
    }
    let _ = lb_config::parse(text, Path::new("/nonexistent/fuzz.conf"));
});
