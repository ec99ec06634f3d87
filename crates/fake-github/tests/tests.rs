//! The fake GitHub's own tests, in one test binary so they link once.

mod support;

mod api;
mod auth;
mod cli;
mod git;
mod log;
mod memory;
