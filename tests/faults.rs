//! Dependencies failing: GitHub answering errors, rate limits and timeouts, the SMTP
//! server refusing or down, the IMAP connection cut or Dovecot restarted. The daemon
//! waits as told, never drops the message, never busy-loops, and catches up alone.

use crate::support;

use std::time::Duration;

use fake_github::{Fault, FaultMatch, Operation};
use support::proxy::{Mode, Proxy};
use support::stack::{PATIENCE, Stack, report};
use support::wait_for_async;

/// The delays the daemon announced in its `retry_in=` log fields, in seconds.
fn announced_delays(log: &str) -> Vec<f64> {
    log.split("retry_in=")
        .skip(1)
        .filter_map(|rest| {
            let token: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || c.is_ascii_alphabetic())
                .collect();
            if let Some(ms) = token.strip_suffix("ms") {
                ms.parse::<f64>().ok().map(|v| v / 1000.0)
            } else {
                token.strip_suffix('s').and_then(|s| s.parse().ok())
            }
        })
        .collect()
}

fn creates(stack: &Stack) -> usize {
    stack
        .github
        .requests()
        .iter()
        .filter(|r| r.operation == Some(Operation::Create))
        .count()
}

/// Delivers one report, runs the daemon until it is filed, and returns the daemon's log.
async fn deliver_and_finish(stack: &mut Stack, id: &str) -> String {
    stack
        .deliver(&report(id, &format!("Werkzeug: {id}"), "text"))
        .await;
    let mut daemon = stack.daemon(&["run"]);
    stack.wait_for_folder("Processed", 1).await;
    daemon.terminate();
    assert_eq!(stack.all_advisories().len(), 1, "exactly one advisory");
    assert_eq!(stack.replies().len(), 1, "the reporter got the reply");
    let log = daemon.log();
    assert_no_error_lines(&log);
    log
}

/// A transient failure is the daemon's WARN with its own words, never an ERROR line
/// (ours or a library's): ERROR is for what needs a person.
fn assert_no_error_lines(log: &str) {
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(
        errors.is_empty(),
        "ERROR lines for a transient failure:\n{}",
        errors.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_500_502_503_are_retried_until_it_answers() {
    let mut stack = Stack::start().await;
    for code in [500, 502, 503] {
        stack.github.push_fault_when(
            FaultMatch::operation(Operation::Create),
            Fault::status(code),
        );
    }
    let log = deliver_and_finish(&mut stack, "gh-5xx").await;
    assert_eq!(log.matches("will retry").count(), 3, "{log}");
    assert_eq!(creates(&stack), 4, "one attempt per retry, no busy loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_waited_out() {
    let mut stack = Stack::start().await;
    stack.github.push_fault_when(
        FaultMatch::operation(Operation::Create),
        Fault::Status {
            code: 429,
            headers: vec![("retry-after".into(), "4".into())],
        },
    );
    let log = deliver_and_finish(&mut stack, "gh-429").await;
    let delays = announced_delays(&log);
    assert!(delays.iter().any(|d| *d >= 4.0), "{delays:?}\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_rate_limit_403_is_waited_out() {
    let mut stack = Stack::start().await;
    stack.github.push_fault_when(
        FaultMatch::operation(Operation::Create),
        Fault::secondary_rate_limit(5),
    );
    let log = deliver_and_finish(&mut stack, "gh-403").await;
    let delays = announced_delays(&log);
    assert!(delays.iter().any(|d| *d >= 5.0), "{delays:?}\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_primary_rate_limit_waits_for_the_reset() {
    let mut stack = Stack::start().await;
    let reset = chrono::Utc::now().timestamp() + 6;
    stack.github.push_fault_when(
        FaultMatch::operation(Operation::Create),
        Fault::rate_limit_exhausted(reset),
    );
    let log = deliver_and_finish(&mut stack, "gh-reset").await;
    let delays = announced_delays(&log);
    assert!(delays.iter().any(|d| *d >= 4.0), "{delays:?}\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_timed_out_but_landed_is_adopted_not_duplicated() {
    let mut stack = Stack::start().await;
    // GitHub works on it longer than github.timeout_secs (3 s in the test config).
    stack.github.push_fault_when(
        FaultMatch::operation(Operation::Create),
        Fault::Delay(Duration::from_secs(5)),
    );
    let log = deliver_and_finish(&mut stack, "gh-timeout").await;
    assert!(
        log.contains("timed out") || log.contains("no answer within"),
        "{log}"
    );
    assert!(log.contains("adopted"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_github_connection_is_retried() {
    let mut stack = Stack::start().await;
    stack
        .github
        .push_fault_when(FaultMatch::operation(Operation::Create), Fault::Drop);
    let log = deliver_and_finish(&mut stack, "gh-drop").await;
    assert!(log.contains("will retry"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_451_then_recovery_delivers_the_reply_once() {
    let mut stack = Stack::start().await;
    stack.smtp.set_fault(Some("451 4.3.0 Try again later"));
    stack
        .deliver(&report("smtp-451", "Werkzeug: smtp", "text"))
        .await;
    let mut daemon = stack.daemon(&["run"]);
    wait_for_async(PATIENCE, "the refusal to be retried", || async {
        daemon.log().matches("will retry").count() >= 2
    })
    .await;
    assert!(stack.folder("Processed").await.is_empty(), "still waiting");
    stack.smtp.set_fault(None);
    stack.wait_for_folder("Processed", 1).await;
    daemon.terminate();
    assert_eq!(stack.replies().len(), 1);
    assert_eq!(
        stack.all_advisories().len(),
        1,
        "retrying the reply made no advisory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_server_down_for_a_while_gets_the_reply_when_it_returns() {
    let mut stack = Stack::start().await;
    let proxy = Proxy::start(stack.smtp.port()).await;
    let smtp_port = stack.smtp.port();
    stack.write_config(|t| {
        t.replace(
            &format!("port = {smtp_port}\n"),
            &format!("port = {}\n", proxy.port()),
        )
    });
    proxy.set_mode(Mode::Refuse);
    stack
        .deliver(&report("smtp-down", "Werkzeug: smtp down", "text"))
        .await;
    let mut daemon = stack.daemon(&["run"]);
    wait_for_async(PATIENCE, "several refused attempts", || async {
        proxy.accepted() >= 3
    })
    .await;
    proxy.set_mode(Mode::Pass);
    stack.wait_for_folder("Processed", 1).await;
    daemon.terminate();
    assert_eq!(stack.replies().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_550_quarantines_and_keeps_the_advisory() {
    let mut stack = Stack::start().await;
    stack.smtp.set_fault(Some("550 5.1.1 No such user"));
    stack
        .deliver(&report("smtp-550", "Werkzeug: bad address", "text"))
        .await;
    let once = stack.drain();
    assert_eq!(stack.folder("Quarantine").await.len(), 1);
    assert_eq!(stack.all_advisories().len(), 1, "the advisory stays");
    assert!(once.log().contains("exists, but"), "{}", once.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imap_connection_cut_mid_idle_reconnects_and_new_mail_still_arrives() {
    let mut stack = Stack::start().await;
    let proxy = Proxy::start(stack.imap.imaps_port()).await;
    let imaps = stack.imap.imaps_port();
    stack.write_config(|t| {
        t.replace(
            &format!("port = {imaps}\n"),
            &format!("port = {}\n", proxy.port()),
        )
    });
    let mut daemon = stack.daemon(&["run"]);
    wait_for_async(PATIENCE, "the daemon to be idle", || async {
        daemon_log_has(&daemon, "watching the mailbox")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut_all();
    stack
        .deliver(&report("imap-cut", "Werkzeug: after the cut", "text"))
        .await;
    stack.wait_for_folder("Processed", 1).await;
    daemon.terminate();
    assert!(proxy.accepted() >= 2, "it reconnected");
    assert_eq!(stack.all_advisories().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_restarted_in_place_is_reconnected_to() {
    let mut stack = Stack::start().await;
    let mut daemon = stack.daemon(&["run"]);
    wait_for_async(PATIENCE, "the daemon to be idle", || async {
        daemon_log_has(&daemon, "watching the mailbox")
    })
    .await;
    stack.imap.restart();
    stack
        .deliver(&report(
            "dovecot-restart",
            "Werkzeug: after restart",
            "text",
        ))
        .await;
    stack.wait_for_folder("Processed", 1).await;
    daemon.terminate();
    assert_eq!(stack.all_advisories().len(), 1);
}

fn daemon_log_has(daemon: &support::Process, text: &str) -> bool {
    daemon.log().contains(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_at_random_moments_during_a_backlog_lose_and_duplicate_nothing() {
    use rand::{Rng, SeedableRng};
    let mut stack = Stack::start().await;
    let proxy = Proxy::start(stack.imap.imaps_port()).await;
    let imaps = stack.imap.imaps_port();
    stack.write_config(|t| {
        t.replace(
            &format!("port = {imaps}\n"),
            &format!("port = {}\n", proxy.port()),
        )
    });
    let n = 10;
    for i in 0..n {
        stack
            .deliver(&report(
                &format!("cut-{i}"),
                &format!("Jinja2 cut {i}"),
                "text",
            ))
            .await;
    }
    let seed: u64 = rand::random();
    println!("cut test seed={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut daemon = stack.daemon(&["run"]);
    // Cut every IMAP connection again and again while the backlog drains: mid-FETCH,
    // mid-MOVE, mid-IDLE, wherever the cut lands.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
        proxy.cut_all();
    }
    stack.wait_for_folder("Processed", n).await;
    daemon.terminate();
    assert_eq!(stack.all_advisories().len(), n, "one advisory per report");
    let mut ids: Vec<String> = stack
        .replies()
        .iter()
        .filter_map(|r| support::header_value(r, "Message-ID"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        n,
        "every reporter answered, duplicates share a Message-ID"
    );
    assert_eq!(
        stack.folder("Processed").await.len(),
        n,
        "each message filed once"
    );
    assert!(stack.folder("INBOX").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_mailbox_with_new_uids_is_rescanned_without_duplicates() {
    let mut stack = Stack::start().await;
    stack.write_config(|t| {
        t.replace(
            "poll_interval_secs = 1",
            "poll_interval_secs = 1\ninstance_name = \"t1\"",
        )
    });
    let raw = report("uidv-1", "Werkzeug: before the change", "text");
    stack.deliver(&raw).await;
    stack.drain();
    // An accident: the claim folder is deleted and recreated (new UIDVALIDITY), and the
    // old message shows up in the inbox again next to a new one.
    let mut session = stack.mailbox().connect().await;
    session
        .delete("Processing.t1")
        .await
        .expect("the claim folder can be deleted");
    let _ = session.logout().await;
    stack.deliver(&raw).await;
    stack
        .deliver(&report("uidv-2", "Werkzeug: after the change", "text"))
        .await;
    stack.drain();
    assert_eq!(
        stack.all_advisories().len(),
        2,
        "the old report was not filed twice"
    );
    assert_eq!(stack.replies().len(), 2);
    assert_eq!(stack.folder("Processed").await.len(), 3, "nothing lost");
}

/// `GET path` on a loopback port: the status code and the body (status 0 while nothing
/// listens there yet).
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
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_github_credentials_pause_and_the_backlog_drains_once_restored() {
    let mut stack = Stack::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    stack.write_config(|t| {
        t.replace(
            "[retry]",
            &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[retry]\npause_probe_secs = 1"),
        )
    });
    stack.github.revoke_token("ghp_testtoken0123456789");
    for i in 0..3 {
        stack
            .deliver(&report(
                &format!("revoked-{i}"),
                &format!("Flask: revoked {i}"),
                "text",
            ))
            .await;
    }
    let mut daemon = stack.daemon(&["run"]);
    wait_for_async(PATIENCE, "healthz to say GitHub is paused", || async {
        let (status, body) = http_get(port, "/healthz");
        status == 503 && body.contains("GitHub pallets paused")
    })
    .await;
    assert!(
        stack.folder("Quarantine").await.is_empty(),
        "nothing quarantined"
    );
    assert!(stack.replies().is_empty(), "no reply without an advisory");
    assert!(stack.all_advisories().is_empty());
    let (_, metrics) = http_get(port, "/metrics");
    assert!(metrics.contains("advisory_bridge_paused 1"), "{metrics}");
    // The backlog is visible, and so is which server last answered.
    wait_for_async(PATIENCE, "the backlog gauge", || async {
        http_get(port, "/metrics")
            .1
            .contains("advisory_bridge_messages_waiting 3")
    })
    .await;
    let (_, metrics) = http_get(port, "/metrics");
    let last = |server: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "advisory_bridge_last_success_timestamp_seconds{{server=\"{server}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let now = chrono::Utc::now().timestamp();
    assert!(
        last("imap").is_some_and(|t| (now - 300..=now + 5).contains(&t)),
        "{metrics}"
    );
    assert_eq!(
        last("github"),
        None,
        "GitHub never answered yet:\n{metrics}"
    );
    assert!(
        metrics.contains("advisory_bridge_oldest_waiting_seconds "),
        "{metrics}"
    );

    stack.github.restore_token("ghp_testtoken0123456789");
    stack.wait_for_folder("Processed", 3).await;
    wait_for_async(PATIENCE, "healthz to recover", || async {
        http_get(port, "/healthz").0 == 200
    })
    .await;
    let (_, metrics) = http_get(port, "/metrics");
    for server in ["imap", "github", "smtp"] {
        assert!(
            metrics.contains(&format!(
                "advisory_bridge_last_success_timestamp_seconds{{server=\"{server}\"}}"
            )),
            "{server} answered:\n{metrics}"
        );
    }
    daemon.terminate();
    assert_eq!(stack.all_advisories().len(), 3);
    assert_eq!(stack.replies().len(), 3);
    let log = daemon.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("paused until the configuration is fixed"))
            .count(),
        1,
        "one ERROR line for the condition, not one per message:\n{log}"
    );
}
