//! Fuzz target: any bytes through parse, classify, route and the advisory, reply and
//! follow-up renderers, holding them to the invariants in `tests/invariants/mod.rs`
//! (the same the property tests check).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/invariants/mod.rs"]
mod invariants;

static PIPELINE: OnceLock<invariants::Pipeline> = OnceLock::new();

fn init() -> invariants::Pipeline {
    // libFuzzer's panic hook aborts on every panic, even one that is caught. mail-parser
    // has debug assertions (built in here because the target runs with
    // `--debug-assertions`) that `mail::parse` catches and turns into a quarantine, as
    // in any debug build of the daemon; those are not findings. Every other panic, and a
    // mail-parser panic that escapes `mail::parse`, still aborts.
    let libfuzzer_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_mail_parser = info
            .location()
            .is_some_and(|l| l.file().contains("/mail-parser-"));
        if !in_mail_parser {
            libfuzzer_hook(info);
        }
    }));
    invariants::Pipeline::new()
}

fuzz_target!(|data: &[u8]| {
    let pipeline = PIPELINE.get_or_init(init);
    // A parse error is a valid outcome (the daemon quarantines); panics are findings.
    let _ = pipeline.check(data);
});
