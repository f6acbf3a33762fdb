//! Fuzzes the scenario YAML loader (`harness::scenario::load_str`): any text must give a
//! scenario or a `file:line:col` error, never a panic, hang or stack overflow.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = harness::scenario::load_str(Path::new("fuzz.yaml"), text) {
        // Every error names the file first.
        assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
    }
});
