//! The loop that moves each message through the pipeline stages.
