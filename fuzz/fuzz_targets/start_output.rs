//! Fuzzes how each containerd dialect reads a shim's `start` output
//! (`Dialect::parse_start_output`) and the address helpers applied to what it accepts.
#![no_main]

use harness::dialect::{self, Dialect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // containerd reads the combined output as text and trims it.
    let text = String::from_utf8_lossy(data);
    let out = text.trim();
    for d in [Dialect::V1_6, Dialect::V1_7, Dialect::V2_0] {
        if let Ok((addr, _api)) = d.parse_start_output(out) {
            assert!(!addr.is_empty());
            let _ = dialect::socket_path(&addr);
            let _ = dialect::proc_net_unix_name(&addr);
            let _ = dialect::dial_address(&addr);
        }
    }
});
