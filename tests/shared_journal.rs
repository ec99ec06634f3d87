//! Several instances on one mailbox and one PostgreSQL journal (`[journal] url`) behave
//! as one exactly-once daemon: every report gets one advisory and an answer, one notice
//! per change, the mail an instance claimed before dying is taken over once its lease
//! runs out, the watcher fails over, and a database restart is waited out.
//!
//! The report count defaults to what a 2-core machine handles in about a minute;
//! `ADVISORY_BRIDGE_SHARED_REPORTS` raises it (the 200, say).

use crate::support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fake_github::AdvisoryState;
use mail_parser::MessageParser;
use rand::{Rng, SeedableRng};
use support::postgres::PostgresServer;
use support::stack::{PATIENCE, Stack, report};
use support::{Process, ServerKind, daemon_binary, header_value, wait_for_async};

/// Short leases, so that a takeover happens within the test.
const LEASE_SECS: u64 = 3;

fn reports_wanted(default: usize) -> usize {
    std::env::var("ADVISORY_BRIDGE_SHARED_REPORTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Instances of the daemon sharing the stack's mailbox and one journal database, each
/// with its own state directory, name and log.
struct Fleet {
    configs: HashMap<&'static str, PathBuf>,
    running: HashMap<&'static str, Process>,
    starts: usize,
    dir: PathBuf,
}

impl Fleet {
    /// Writes one config per name from the stack's, with `extra` appended.
    fn new(stack: &Stack, pg: &PostgresServer, names: &[&'static str], extra: &str) -> Fleet {
        let base = std::fs::read_to_string(&stack.config_path).unwrap();
        let mut configs = HashMap::new();
        for name in names {
            let text =
                base.replace(
                    &stack.state_dir.display().to_string(),
                    &stack
                        .dir
                        .join(format!("state-{name}"))
                        .display()
                        .to_string(),
                )
                .replace(
                    "poll_interval_secs = 1",
                    &format!("poll_interval_secs = 1\ninstance_name = \"{name}\""),
                ) + &pg.journal_section(LEASE_SECS)
                    + extra;
            let path = stack.dir.join(format!("config-{name}.toml"));
            std::fs::write(&path, text).unwrap();
            configs.insert(*name, path);
        }
        Fleet {
            configs,
            running: HashMap::new(),
            starts: 0,
            dir: stack.dir.path().to_owned(),
        }
    }

    fn start(&mut self, name: &'static str) {
        self.starts += 1;
        let log = self.dir.join(format!("daemon-{name}-{}.log", self.starts));
        let config = self.configs[name].to_str().unwrap().to_owned();
        let process = Process::spawn(
            daemon_binary(),
            ["--config", config.as_str(), "run"],
            &[
                ("TEST_SMTP_PASSWORD", "smtp-secret"),
                ("ADVISORY_BRIDGE_LOG", "info,advisory_bridge=debug"),
            ],
            &log,
        );
        self.running.insert(name, process);
    }

    /// Waits until `name` watches the mailbox (its signal handlers are set by then).
    fn wait_ready(&self, name: &'static str) {
        support::wait_for(PATIENCE, &format!("{name} to watch the mailbox"), || {
            self.running[name].log().contains("watching the mailbox")
        });
    }

    /// SIGKILL, as a crash or a power cut would.
    fn kill(&mut self, name: &'static str) {
        if let Some(mut p) = self.running.remove(name) {
            p.kill();
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let path = entry.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("daemon-"))
            {
                out.push_str(&format!("==== {}\n", path.display()));
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
        out
    }

    /// The running instance whose latest log line about the watcher says it runs it.
    fn watcher_leader(&self) -> Option<&'static str> {
        self.running.iter().find_map(|(name, p)| {
            let log = p.log();
            let last_lead = log.rfind("this instance runs the notice watcher");
            let last_follow = log.rfind("another instance runs the notice watcher");
            (last_lead > last_follow).then_some(*name)
        })
    }

    fn terminate_all(&mut self) {
        let names: Vec<&'static str> = self.running.keys().copied().collect();
        for name in names {
            self.wait_ready(name);
        }
        for (name, mut p) in self.running.drain() {
            let status = p.terminate();
            assert!(
                status.success(),
                "{name} exited with {status:?}:\n{}",
                p.log()
            );
        }
    }
}

fn message_id(raw: &[u8]) -> String {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.message_id().map(str::to_owned))
        .unwrap_or_default()
}

/// Notices of `event` the SMTP server received.
fn notices(stack: &Stack, event: &str) -> Vec<Vec<u8>> {
    stack
        .replies()
        .into_iter()
        .filter(|r| {
            header_value(r, "Message-ID").is_some_and(|id| id.contains(&format!(".{event}@")))
        })
        .collect()
}

/// Delivers reports `range` of the run; returns their Message-IDs (without brackets).
async fn deliver(stack: &Stack, range: std::ops::Range<usize>) -> Vec<String> {
    let mut ids = Vec::new();
    for i in range {
        let local = format!("shared-{i}");
        stack
            .deliver(&report(
                &local,
                &format!("Flask: shared journal report {i}"),
                &format!("Report number {i}: the session cookie can be forged."),
            ))
            .await;
        ids.push(format!("{local}@example.net"));
    }
    ids
}

/// The exactly-once invariants over every report: each message filed once and nowhere
/// else, one advisory each, at least one answer each (a second only after a SIGKILL
/// between its send and its record, and then with the same Message-ID).
///
/// With `copies_filed`, a report's message may be in `Processed` more than once: it was
/// delivered twice, or a server without CONDSTORE and MOVE let two instances both copy
/// it into their claim folders; the instance that loses the report's claim files its
/// copy as one.
async fn assert_exactly_once(
    stack: &Stack,
    ids: &[String],
    instances: &[&str],
    copies_filed: bool,
    logs: &str,
) {
    let mut placed: HashMap<String, Vec<String>> = HashMap::new();
    let mut folders: Vec<String> = ["INBOX", "Processed", "Ignored", "Quarantine", "Held"]
        .iter()
        .map(|f| f.to_string())
        .collect();
    folders.extend(instances.iter().map(|i| stack.claim_folder(i)));
    for folder in &folders {
        for raw in stack.mailbox().folder_messages(folder).await {
            placed
                .entry(message_id(&raw))
                .or_default()
                .push(folder.clone());
        }
    }
    let descriptions: Vec<String> = stack
        .all_advisories()
        .into_iter()
        .map(|(_, a)| a["description"].as_str().unwrap_or("").to_owned())
        .collect();
    let replies = stack.replies();
    let (mut lost, mut duplicate_advisories, mut misplaced) = (vec![], vec![], vec![]);
    for id in ids {
        match placed.get(id).map(Vec::as_slice) {
            Some([only]) if only == "Processed" => {}
            Some(all) if copies_filed && all.iter().all(|f| f == "Processed") => {}
            other => misplaced.push(format!("{id}: {other:?}")),
        }
        let hash = advisory_bridge::mail::sha256_hex(
            advisory_bridge::mail::normalise_id(id)
                .expect("test ids are valid")
                .as_bytes(),
        );
        let marker = format!("report-id={hash}");
        match descriptions.iter().filter(|d| d.contains(&marker)).count() {
            0 => lost.push(id.clone()),
            1 => {}
            n => duplicate_advisories.push(format!("{id}: {n}")),
        }
        let mut answers: Vec<String> = replies
            .iter()
            .filter(|r| header_value(r, "In-Reply-To").as_deref() == Some(&format!("<{id}>")))
            .filter_map(|r| header_value(r, "Message-ID"))
            .collect();
        if answers.is_empty() {
            lost.push(format!("{id} (no answer)"));
        }
        answers.sort();
        answers.dedup();
        assert!(
            answers.len() <= 1,
            "two different answers to {id}: {answers:?}"
        );
    }
    assert!(
        lost.is_empty() && duplicate_advisories.is_empty() && misplaced.is_empty(),
        "lost: {lost:?}\nduplicate advisories: {duplicate_advisories:?}\nmisplaced: {misplaced:?}\n{logs}"
    );
    assert_eq!(stack.all_advisories().len(), ids.len(), "no stray advisory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_postgres_journal_handle_each_report_once_through_sigkills() {
    let stack = Stack::start().await;
    let pg = PostgresServer::start(&stack.dir.join("pg"));
    let seed: u64 = std::env::var("ADVISORY_BRIDGE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (ADVISORY_BRIDGE_CRASH_SEED replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let total = reports_wanted(120).max(20);
    let first = total / 3;
    let names = ["a", "b", "c"];
    let mut fleet = Fleet::new(&stack, &pg, &names, "");

    // b alone claims the first batch into its folder and dies with it there.
    let mut ids = deliver(&stack, 0..first).await;
    fleet.start("b");
    let b_folder = stack.claim_folder("b");
    wait_for_async(PATIENCE, "b to claim mail", || async {
        !stack.mailbox().folder_messages(&b_folder).await.is_empty()
    })
    .await;
    fleet.kill("b");
    let killed_at = Instant::now();
    let stranded = stack.mailbox().folder_messages(&b_folder).await.len();
    eprintln!("b killed with {stranded} message(s) in its claim folder");

    // The others take b's mail over once its lease has run out, not before.
    fleet.start("a");
    fleet.start("c");
    wait_for_async(PATIENCE, "b's claim folder to be taken over", || async {
        stack.mailbox().folder_messages(&b_folder).await.is_empty()
    })
    .await;
    let took = killed_at.elapsed();
    assert!(
        took <= Duration::from_secs(LEASE_SECS) * 3,
        "b's mail waited {took:?} for a lease of {LEASE_SECS} s"
    );

    // b comes back; more mail trickles in while one instance at a time is killed at a
    // random moment and restarted.
    fleet.start("b");
    let mut next = first;
    while next < total {
        let batch = rng.random_range(5..=15).min(total - next);
        ids.extend(deliver(&stack, next..next + batch).await);
        next += batch;
        let victim = names[rng.random_range(0..names.len())];
        let filed = stack.folder("Processed").await.len();
        let wait_for = filed + rng.random_range(0..=batch);
        wait_for_async(PATIENCE, "some of the batch to be filed", || async {
            stack.folder("Processed").await.len() >= wait_for
        })
        .await;
        fleet.kill(victim);
        fleet.start(victim);
    }
    wait_for_async(PATIENCE * 2, "every report filed", || async {
        stack.folder("Processed").await.len() >= total
    })
    .await;

    // The watcher runs on one instance; killed, another takes over its lock and every
    // change brings exactly one notice.
    let deadline = Instant::now() + PATIENCE;
    let leader = loop {
        if let Some(l) = fleet.watcher_leader() {
            break l;
        }
        assert!(Instant::now() < deadline, "no instance runs the watcher");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    fleet.kill(leader);
    let published: Vec<String> = stack
        .github
        .advisories("pallets/flask")
        .into_iter()
        .take(10)
        .map(|a| a["ghsa_id"].as_str().unwrap().to_owned())
        .collect();
    for ghsa in &published {
        stack
            .github
            .set_advisory_state("pallets/flask", ghsa, AdvisoryState::Published)
            .unwrap();
    }
    wait_for_async(PATIENCE, "a notice per published advisory", || async {
        notices(&stack, "published").len() >= published.len()
    })
    .await;
    fleet.start(leader);
    // The restarted instance may take the lock back: still no second notice.
    fleet.wait_ready(leader);
    fleet.terminate_all();
    let logs = fleet.logs();
    let sent = notices(&stack, "published");
    let mut distinct: Vec<String> = sent.iter().map(|n| message_id(n)).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        (sent.len(), distinct.len()),
        (published.len(), published.len()),
        "one notice per published advisory\n{logs}"
    );
    assert_exactly_once(&stack, &ids, &names, false, &logs).await;
    assert!(logs.contains("took over the mail of an instance whose lease ran out"));
}

/// `GET path` on a loopback port: the status code and the body (0 while nothing listens).
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_wait_out_a_database_restart_and_resume() {
    let stack = Stack::start().await;
    let mut pg = PostgresServer::start(&stack.dir.join("pg"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let names = ["x", "y"];
    let mut fleet = Fleet::new(&stack, &pg, &names, "");
    // x serves /healthz.
    let x_config = fleet.configs["x"].clone();
    let text = std::fs::read_to_string(&x_config).unwrap().replace(
        "[retry]",
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[retry]"),
    );
    std::fs::write(&x_config, text).unwrap();
    let total = reports_wanted(40).max(10);
    fleet.start("x");
    fleet.start("y");
    let mut ids = deliver(&stack, 0..total / 2).await;
    wait_for_async(PATIENCE, "some reports filed", || async {
        stack.folder("Processed").await.len() >= total / 4
    })
    .await;

    pg.stop();
    // The backlog grows while the database is away.
    ids.extend(deliver(&stack, total / 2..total).await);
    wait_for_async(
        PATIENCE,
        "healthz to say the journal is unreachable",
        || async {
            let (status, body) = http_get(port, "/healthz");
            status == 503 && body.contains("journal database unreachable")
        },
    )
    .await;
    for (name, p) in fleet.running.iter_mut() {
        assert!(
            p.is_running(),
            "{name} waits, it does not exit:\n{}",
            p.log()
        );
    }

    pg.start_again();
    wait_for_async(PATIENCE * 2, "every report filed", || async {
        stack.folder("Processed").await.len() >= total
    })
    .await;
    wait_for_async(PATIENCE, "healthz to be healthy again", || async {
        http_get(port, "/healthz").0 == 200
    })
    .await;
    fleet.terminate_all();
    let logs = fleet.logs();
    assert!(
        logs.contains("the journal's database is reachable again; resuming"),
        "{logs}"
    );
    assert_exactly_once(&stack, &ids, &names, false, &logs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_server_without_condstore_or_move_make_one_advisory_per_report() {
    // Dovecot announcing neither CONDSTORE nor MOVE: the IMAP claim is a plain keyword
    // and COPY + EXPUNGE, which two instances can both win; the journal's claim decides.
    let kind = ServerKind::Dovecot(vec![
        "--capabilities".into(),
        "IMAP4rev1 LITERAL+ SASL-IR IDLE NAMESPACE UIDPLUS".into(),
    ]);
    let stack = Stack::start_on(kind).await;
    let pg = PostgresServer::start(&stack.dir.join("pg"));
    let names = ["p", "q"];
    let mut fleet = Fleet::new(&stack, &pg, &names, "");
    fleet.start("p");
    fleet.start("q");
    // Every report arrives twice (the same message, as a retrying sender's server
    // would deliver it): the two copies are often claimed by different instances, and
    // only the journal's claim keeps them from both answering.
    let total = reports_wanted(30).max(10);
    let ids = deliver(&stack, 0..total).await;
    deliver(&stack, 0..total).await;
    wait_for_async(PATIENCE * 2, "every copy filed", || async {
        stack.folder("Processed").await.len() >= 2 * total
    })
    .await;
    fleet.terminate_all();
    let logs = fleet.logs();
    let replies = stack.replies();
    for id in &ids {
        let answers = replies
            .iter()
            .filter(|r| header_value(r, "In-Reply-To").as_deref() == Some(&format!("<{id}>")))
            .count();
        assert_eq!(answers, 1, "one answer to {id}, not one per copy\n{logs}");
    }
    eprintln!(
        "copies that waited for another instance's claim: {}",
        logs.matches("another instance works on this report")
            .count()
    );
    assert!(
        logs.contains("each report is claimed in the shared journal: safe for several instances"),
        "{logs}"
    );
    assert!(
        !logs.contains("two instances may both handle one message"),
        "{logs}"
    );
    assert_exactly_once(&stack, &ids, &names, true, &logs).await;
}
