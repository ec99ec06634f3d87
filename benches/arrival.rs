//! Arrival-to-advisory latency, end to end: the real binary (`run`, IDLE) against a real
//! Dovecot, the SMTP sink and the fake GitHub. Each sample appends one report and times
//! until its advisory exists and until its reply has arrived. Prints p50/p90/max.
//!
//! `cargo bench --bench arrival` (env `ARRIVAL_SAMPLES`, default 20). Dovecot announces
//! a new message to IDLE clients about 0.5 s after the APPEND by design: that is the
//! floor of this figure, not the daemon.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use support::stack::{PATIENCE, Stack, report};
use support::wait_for_async;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let samples: usize = std::env::var("ARRIVAL_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let mut stack = Stack::start().await;
        let mut daemon = stack.daemon(&["run"]);
        wait_for_async(PATIENCE, "the daemon to be ready", || async {
            stack
                .mailbox()
                .folders()
                .await
                .iter()
                .any(|f| f == "Processed")
        })
        .await;
        let mut to_advisory = Vec::new();
        let mut to_reply = Vec::new();
        for i in 0..samples {
            let before = stack.all_advisories().len();
            let replies = stack.replies().len();
            stack
                .deliver(&report(
                    &format!("bench-{i}"),
                    "Werkzeug: timing sample",
                    "The debugger PIN can be guessed.",
                ))
                .await;
            let appended = Instant::now();
            let mut advisory_at = None;
            loop {
                if advisory_at.is_none() && stack.all_advisories().len() > before {
                    advisory_at = Some(appended.elapsed());
                }
                if advisory_at.is_some() && stack.replies().len() > replies {
                    break;
                }
                assert!(appended.elapsed() < PATIENCE, "sample {i} never finished");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            to_advisory.push(advisory_at.expect("set above"));
            to_reply.push(appended.elapsed());
        }
        daemon.terminate();
        for (name, mut v) in [
            ("append->advisory", to_advisory),
            ("append->reply", to_reply),
        ] {
            v.sort();
            println!(
                "{name}: samples={} p50={:?} p90={:?} max={:?}",
                v.len(),
                percentile(&v, 0.5),
                percentile(&v, 0.9),
                v[v.len() - 1]
            );
        }
    });
}
