//! Inputs the fuzzer (`fuzz/`) once found breaking the pipeline, kept so they never do
//! again: every file under `tests/fixtures/fuzz/` must go through parse, classify, route
//! and rendering without a panic and keep every invariant of `tests/invariants/mod.rs`.
//! See `tests/fixtures/fuzz/README.md` for what each one found.

use crate::invariants;

#[test]
fn every_input_the_fuzzer_found_now_keeps_the_invariants() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fuzz");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no regression inputs under {dir}");
    let pipeline = invariants::Pipeline::new();
    for path in files {
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Either outcome is fine (a parse error is a quarantine); a panic or a broken
        // invariant fails the test, and the line below names the file in its output.
        eprintln!("checking {}", path.display());
        let _ = pipeline.check(&raw);
    }
}
