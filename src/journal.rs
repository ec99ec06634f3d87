//! The SQLite journal: each report state, attempts, retries and outcomes.
