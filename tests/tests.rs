//! Every integration test of advisory-bridge, in one test binary so the suite links the
//! dependency graph once (as ripgrep does). Each module is a set of scenarios named for
//! what a user sees; `support` is the harness (real servers, the fake GitHub, fixtures)
//! and `invariants` the rules every message keeps through the pure pipeline.

mod invariants;
mod support;

mod attachments;
mod conversation;
mod dev_stack;
mod encrypted;
mod faults;
mod fuzz_regressions;
mod github_client;
mod hostile;
mod hostile_mail;
mod imap_source;
mod infra;
mod interop;
mod journal_upgrade;
mod maintainers;
mod package;
mod pipeline;
mod properties;
mod recovery;
mod rendered;
mod shared_journal;
mod smtp_reply;
mod triage;
