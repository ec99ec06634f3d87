//! advisory-bridge: turns mail sent to a `security@` address into private GitHub draft
//! security advisories and answers each reporter with a threaded acknowledgement.
//!
//! The pipeline of one message, one module per stage (see `ARCHITECTURE.md`):
//! `mailbox` (claim, fetch) -> `engine` (spool, `pipeline`: parse, classify, route,
//! render; GitHub; reply) -> `mailbox::Mailbox::settle` (journal, then file away), with
//! `journal` recording every step, `watcher` sending notices on its own, and `daemon`
//! supervising. Only `source`, `spool`, `github`, `reply` (through `smtp`) and `journal` touch the
//! outside world; `pipeline` and the stages it calls are pure functions.

#![warn(missing_docs)]

pub mod auth;
pub mod classify;
pub mod config;
pub mod credit;
pub mod daemon;
pub mod engine;
pub mod failure;
pub mod github;
pub mod journal;
pub mod mail;
pub mod mailbox;
pub mod metrics;
pub mod openpgp;
pub mod pipeline;
pub mod render;
pub mod reply;
pub mod route;
pub mod smtp;
pub mod source;
pub mod spool;
pub mod thread;
pub mod tls;
pub mod triage;
pub mod watcher;
