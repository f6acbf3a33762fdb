//! The bundled suite (`scenarios/**.yaml` of the checkout), compiled into the harness by
//! `harness/build.rs`, so that a harness installed or copied on its own runs it.

use super::{load_embedded, LoadError, Loaded};

include!(concat!(env!("OUT_DIR"), "/embedded_scenarios.rs"));

/// The embedded suite, parsed (names as `harness list` shows them, in name order). Empty when
/// the harness was built without the `scenarios/` directory next to its crate.
pub fn suite() -> Result<Vec<Loaded>, LoadError> {
    load_embedded(EMBEDDED_SCENARIOS)
}
