//! The triage shield's cost per new report against a journal of earlier ones: the
//! fingerprint of one report, loading every earlier fingerprint from a real SQLite
//! journal, and comparing with all of them. Prints the figures; fails on nothing.
//!
//! `cargo bench --bench triage` (env `TRIAGE_EARLIER`, default 10000).

use std::time::Instant;

use advisory_bridge::journal::{Journal, NewEntry};
use advisory_bridge::mail::{Limits, ReportId, parse};
use advisory_bridge::triage;

fn report(n: usize) -> Vec<u8> {
    format!(
        "From: R{n} <r{n}@example.net>\r\nTo: security@palletsprojects.com\r\n\
         Subject: report {n}\r\nMessage-ID: <bench-{n}@example.net>\r\n\
         Content-Type: text/plain\r\n\r\n\
         Report number {n}: the function f{n} in module m{} mishandles input {} when the \
         option o{} is set, so an attacker can reach {} through a crafted request.\r\n",
        n % 97,
        n * 7,
        n % 13,
        n % 31
    )
    .into_bytes()
}

fn main() {
    let earlier: usize = std::env::var("TRIAGE_EARLIER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let limits = Limits {
        max_message_bytes: 1 << 22,
        max_parts: 64,
        max_depth: 8,
        max_attachments: 16,
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let journal = Journal::open(dir.path()).expect("the journal opens");
        let reports: Vec<_> = (0..earlier)
            .map(|n| parse(&report(n), &limits).expect("parses"))
            .collect();
        journal
            .call(move |db| {
                let now = chrono::Utc::now();
                for (n, r) in reports.iter().enumerate() {
                    let entry = NewEntry {
                        report_id: r.report_id.clone(),
                        message_id: r.message_id.clone(),
                        spool_path: format!("spool/{n}"),
                        sender: None,
                        subject: None,
                        content_hash: None,
                    };
                    db.record_seen(&entry, now)?;
                    db.record_advisory(&r.report_id, &format!("GHSA-{n}"), "https://x", now)?;
                    let f = triage::fingerprint(r).expect("a fingerprint");
                    db.record_fingerprint(&r.report_id, &f, "", None, now)?;
                }
                Ok(())
            })
            .await
            .expect("the journal takes the earlier reports");

        let new = parse(&report(earlier + 1), &limits).expect("parses");
        let started = Instant::now();
        let rounds = 20;
        let mut fingerprint = None;
        for _ in 0..rounds {
            fingerprint = triage::fingerprint(&new);
        }
        let fingerprint = fingerprint.expect("a fingerprint");
        let per_fingerprint = started.elapsed() / rounds;

        let started = Instant::now();
        let mut stored = Vec::new();
        for _ in 0..rounds {
            let except = ReportId("none".into());
            stored = journal
                .call(move |db| db.fingerprints_with_advisory(&except))
                .await
                .expect("the fingerprints load");
        }
        let per_load = started.elapsed() / rounds;

        let started = Instant::now();
        let mut best = None;
        for _ in 0..rounds {
            best = triage::best_match(&fingerprint, stored.iter().map(|(f, g, _, _)| (f, g)));
        }
        let per_compare = started.elapsed() / rounds;
        println!("triage: {} earlier reports with advisories", stored.len());
        println!("  fingerprint of one report:          {per_fingerprint:?}");
        println!("  load every earlier fingerprint:     {per_load:?}");
        println!("  compare with all of them:           {per_compare:?}");
        println!(
            "  per new report, in all:             {:?} (best match: {:?})",
            per_fingerprint + per_load + per_compare,
            best.map(|(s, g)| format!("{g} at {s:.2}"))
        );
    });
}
