//! Fuzzes the reaper's OCI parsing: `config.json` (`reaper::spec::parse_config`) and an exec's
//! JSON `Process` (`reaper::spec::parse_process`). Bad input must be an InvalidArgument.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reaper::error::Error;
use reaper::spec;

fuzz_target!(|data: &[u8]| {
    match spec::parse_config(data, "config.json") {
        Ok(b) => {
            assert!(!b.process.args.is_empty() && !b.process.args[0].is_empty());
            let _ = spec::group_of(&b.annotations, "c1");
            let _ = spec::is_sandbox(&b.annotations);
        }
        Err(e) => assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}"),
    }
    match spec::parse_process(data, "exec e1 spec") {
        Ok(p) => assert!(!p.args.is_empty() && !p.args[0].is_empty()),
        Err(e) => assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}"),
    }
});
