//! The `advisory-bridge` command line: parse arguments, load config, hand off.

fn main() {}
