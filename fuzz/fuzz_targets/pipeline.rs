//! Fuzz target: any bytes through parse, classify, route and the advisory, reply and
//! follow-up renderers, holding them to the invariants in `tests/invariants/mod.rs`
//! (the same the property tests check).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/invariants/mod.rs"]
mod invariants;

static PIPELINE: OnceLock<invariants::Pipeline> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let pipeline = PIPELINE.get_or_init(invariants::Pipeline::new);
    // A parse error is a valid outcome (the daemon quarantines); panics are findings.
    let _ = pipeline.check(data);
});
