//! advisory-bridge: turns mail sent to a `security@` address into private GitHub draft
//! security advisories and answers each reporter with a threaded acknowledgement.
//!
//! The pipeline of one message, one module per stage (see `ARCHITECTURE.md`):
//! `source` -> `spool` -> `mail` (parse) -> `classify` -> `route` -> `render` -> `github`
//! -> `reply` -> `source` (file away), with `journal` recording every step and `daemon`
//! driving the loop. Only `source`, `spool`, `github`, `reply` and `journal` touch the
//! outside world; the other stages are pure functions.

#![warn(missing_docs)]

pub mod auth;
pub mod classify;
pub mod config;
pub mod daemon;
pub mod failure;
pub mod github;
pub mod journal;
pub mod mail;
pub mod metrics;
pub mod render;
pub mod reply;
pub mod route;
pub mod source;
pub mod spool;
pub mod thread;
pub mod tls;
