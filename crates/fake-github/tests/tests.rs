//! The fake GitHub's own tests, in one test binary so they link once. The memory test is
//! its own binary (`tests/memory.rs`): it measures the resident set of its process.

mod support;

mod api;
mod auth;
mod cli;
mod git;
mod log;
