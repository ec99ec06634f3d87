//! End to end, with the real binary against a real Dovecot, a real SMTP server and the
//! fake GitHub: a report mailed to security@ becomes a draft advisory in the right
//! repository and the reporter gets one threaded reply.

use crate::support;

use std::time::Duration;

use fake_github::{Fault, FaultMatch, Operation};
use mail_parser::MessageParser;
use serde_json::Value;
use support::stack::{PATIENCE, SECURITY_ADDRESS, Stack, fixture, report};
use support::{header_value, wait_for_async};

/// The advisory whose description carries the marker of the report with this
/// Message-ID, with its repository.
fn advisory_for(stack: &Stack, message_id: &str) -> Option<(String, Value)> {
    let id = advisory_bridge::mail::normalise_id(message_id).expect("a real Message-ID");
    let hash = advisory_bridge::mail::sha256_hex(id.as_bytes());
    let marker = format!("report-id={hash}");
    stack
        .all_advisories()
        .into_iter()
        .find(|(_, a)| a["description"].as_str().unwrap_or("").contains(&marker))
}

fn description(advisory: &Value) -> &str {
    advisory["description"].as_str().unwrap_or("")
}

fn message_id_of(raw: &[u8]) -> String {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.message_id().map(str::to_owned))
        .expect("fixture has a Message-ID")
}

/// Replies addressed (envelope) to `rcpt`.
fn replies_to(stack: &Stack, rcpt: &str) -> Vec<Vec<u8>> {
    stack
        .replies()
        .into_iter()
        .filter(|r| {
            header_value(r, "X-Sink-Rcpt-To")
                .is_some_and(|v| v.to_lowercase().contains(&rcpt.to_lowercase()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_about_werkzeug_becomes_a_draft_in_werkzeug_and_the_reporter_gets_a_threaded_reply()
 {
    let mut stack = Stack::start().await;
    // Started before the mail arrives: the IDLE path.
    let mut daemon = stack.daemon(&["run"]);
    stack.wait_for_daemon_folders().await;

    let raw = stack.deliver_fixture("plain-werkzeug.eml").await;
    let message_id = message_id_of(&raw);
    wait_for_async(PATIENCE, "the advisory and the reply", || async {
        advisory_for(&stack, &message_id).is_some() && !stack.replies().is_empty()
    })
    .await;

    let (repo, advisory) = advisory_for(&stack, &message_id).expect("advisory exists");
    assert_eq!(repo, "pallets/werkzeug");
    assert_eq!(advisory["state"], "draft");
    let ghsa = advisory["ghsa_id"].as_str().expect("ghsa id").to_owned();
    assert_eq!(
        advisory["vulnerabilities"][0]["package"],
        serde_json::json!({"ecosystem": "pip", "name": "werkzeug"})
    );
    let text = description(&advisory);
    assert!(text.contains("becomes **public**"), "{text}");
    assert!(
        !text.contains("@example"),
        "no reporter address by default: {text}"
    );
    assert!(
        stack
            .github
            .requests()
            .iter()
            .all(|r| r.violations.is_empty()),
        "every request matched GitHub's description"
    );

    let replies = stack.replies();
    assert_eq!(replies.len(), 1, "exactly one reply");
    let reply = &replies[0];
    let parsed = MessageParser::default().parse(reply).expect("reply parses");
    assert_eq!(
        parsed.in_reply_to().as_text(),
        Some(message_id.as_str()),
        "threaded under the report"
    );
    let references = header_value(reply, "References").expect("References set");
    assert!(references.contains(&message_id), "{references}");
    assert_eq!(
        header_value(reply, "Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    let subject = parsed.subject().unwrap_or_default();
    assert!(subject.starts_with("Re: "), "{subject}");
    assert!(subject.contains(&ghsa), "{subject}");
    let body = parsed.body_text(0).unwrap_or_default();
    assert!(body.contains(&ghsa), "{body}");
    assert!(body.contains("volunteers"), "{body}");
    assert!(body.contains("CVE"), "{body}");
    assert!(
        parsed
            .from()
            .and_then(|f| f.first())
            .and_then(|a| a.address())
            == Some(SECURITY_ADDRESS)
    );
    let reply_id = parsed.message_id().unwrap_or_default().to_owned();
    assert!(reply_id.starts_with("advisory-bridge."), "{reply_id}");

    stack.wait_for_folder("Processed", 1).await;
    assert!(
        stack.folder("INBOX").await.is_empty(),
        "nothing left behind"
    );
    let status = daemon.terminate();
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status:?}\n{}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains("ghp_testtoken"),
        "the token never appears in logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_drained_by_once_and_each_report_lands_where_it_belongs() {
    let mut stack = Stack::start().await;
    // Mail that arrived while the daemon was down: the backlog path.
    let cases = [
        (
            "plain-werkzeug.eml",
            "pallets/werkzeug",
            "the subject names",
        ),
        ("html-latin1.eml", "pallets/flask", ""),
        ("shift-jis.eml", "pallets/jinja", "the subject names"),
        (
            "patch-and-binary.eml",
            "pallets/markupsafe",
            "the subject names",
        ),
        (
            "plus-address.eml",
            "pallets/werkzeug",
            "sent to the <code>&#43;werkzeug</code> address",
        ),
        ("github-link.eml", "pallets/jinja", "links to"),
        ("subject-alias.eml", "pallets/click", "the subject names"),
        ("no-project.eml", "pallets/flask", "default repository"),
    ];
    let mut ids = Vec::new();
    for (name, _, _) in &cases {
        let raw = stack.deliver_fixture(name).await;
        ids.push(message_id_of(&raw));
    }
    stack.deliver_fixture("auto-reply.eml").await;
    stack.deliver_fixture("bounce.eml").await;

    let mut once = stack.daemon(&["once"]);
    let status = once.wait(Duration::from_secs(120));
    assert!(
        status.success(),
        "once drains the backlog: {status:?}\n{}",
        once.log()
    );

    for ((name, repo, reason), id) in cases.iter().zip(&ids) {
        let (got, advisory) =
            advisory_for(&stack, id).unwrap_or_else(|| panic!("{name}: no advisory"));
        assert_eq!(&got, repo, "{name} routed to {repo}");
        assert!(
            description(&advisory).contains(reason),
            "{name}: routing reason `{reason}` shown:\n{}",
            description(&advisory)
        );
    }
    assert_eq!(
        stack.all_advisories().len(),
        cases.len(),
        "noise made no advisory"
    );

    // Charsets decoded into readable text.
    let (_, latin1) = advisory_for(&stack, &ids[1]).unwrap();
    assert!(description(&latin1).contains("é") || description(&latin1).contains("ü"));
    let (_, sjis) = advisory_for(&stack, &ids[2]).unwrap();
    assert!(
        description(&sjis)
            .chars()
            .any(|c| ('\u{3040}'..='\u{30ff}').contains(&c)),
        "Japanese text decoded: {}",
        description(&sjis)
    );
    // The patch is shown inline, the binary listed with its hash and kept on disk.
    let (_, patch) = advisory_for(&stack, &ids[3]).unwrap();
    let d = description(&patch);
    assert!(d.contains("SHA-256"), "{d}");
    assert!(d.contains("diff") || d.contains("+++"), "patch inline: {d}");
    let kept = std::fs::read_dir(stack.state_dir.join("attachments"))
        .expect("attachments kept")
        .count();
    assert!(kept >= 1);

    // One reply per report; none to the auto-reply or the bounce.
    assert_eq!(stack.replies().len(), cases.len(), "one reply per report");
    assert!(replies_to(&stack, "mailer-daemon").is_empty());
    assert_eq!(stack.folder("Processed").await.len(), cases.len());
    assert_eq!(stack.folder("Ignored").await.len(), 2);
    assert!(stack.folder("INBOX").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_reply_gets_no_reply_and_no_advisory() {
    let mut stack = Stack::start().await;
    stack.deliver_fixture("auto-reply.eml").await;
    let once = stack.drain();
    assert!(stack.all_advisories().is_empty());
    assert!(stack.replies().is_empty());
    assert_eq!(stack.folder("Ignored").await.len(), 1);
    assert!(once.log().contains("auto-submitted"), "{}", once.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_in_the_middle_of_a_backlog_creates_no_duplicate_on_restart() {
    let mut stack = Stack::start().await;
    let n = 8;
    for i in 0..n {
        stack
            .deliver(&report(
                &format!("backlog-{i}"),
                &format!("Werkzeug issue number {i}"),
                "The debugger PIN can be guessed.",
            ))
            .await;
    }
    let mut first = stack.daemon(&["run"]);
    wait_for_async(PATIENCE, "a first advisory", || async {
        !stack.all_advisories().is_empty()
    })
    .await;
    first.kill();

    let mut second = stack.daemon(&["run"]);
    stack.wait_for_folder("Processed", n).await;
    second.terminate();

    let advisories = stack.all_advisories();
    assert_eq!(advisories.len(), n, "one advisory per report, none twice");
    for i in 0..n {
        let id = format!("backlog-{i}@example.net");
        assert!(
            advisory_for(&stack, &id).is_some(),
            "report {i} has its advisory"
        );
    }
    // A reply may be sent twice only in the window between the SMTP server's acceptance
    // and our record of it, and then with the same Message-ID.
    let mut ids: Vec<String> = stack
        .replies()
        .iter()
        .filter_map(|r| header_value(r, "Message-ID"))
        .collect();
    assert!(ids.len() >= n);
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        n,
        "every reporter answered, duplicates share a Message-ID"
    );
    assert!(stack.folder("INBOX").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_github_is_retried_until_it_answers_and_a_422_quarantines() {
    let mut stack = Stack::start().await;
    stack
        .github
        .push_fault_when(FaultMatch::operation(Operation::Create), Fault::status(503));
    stack
        .deliver(&report("retry-1", "Click: retried", "text"))
        .await;
    let mut daemon = stack.daemon(&["run"]);
    stack.wait_for_folder("Processed", 1).await;
    assert_eq!(stack.github.advisories("pallets/click").len(), 1);
    assert!(daemon.log().contains("will retry"), "{}", daemon.log());

    stack.github.push_fault_when(
        FaultMatch::operation(Operation::Create),
        Fault::Json {
            code: 422,
            headers: Vec::new(),
            body: serde_json::json!({
                "message": "Validation Failed",
                "errors": [{"resource": "RepositoryAdvisory", "field": "summary", "code": "invalid"}],
                "documentation_url": "https://docs.github.com/rest",
                "status": "422"
            }),
        },
    );
    stack
        .deliver(&report("permanent-1", "Click: refused", "text"))
        .await;
    stack.wait_for_folder("Quarantine", 1).await;
    assert_eq!(stack.github.advisories("pallets/click").len(), 1);
    assert_eq!(
        stack.replies().len(),
        1,
        "no reply for the quarantined report"
    );
    daemon.terminate();
    assert!(daemon.log().contains("quarantined"), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_the_advisory_and_the_reply_and_touches_nothing() {
    let mut stack = Stack::start().await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile.eml");
    let mut preview = stack.daemon(&["preview", path.to_str().unwrap()]);
    assert!(
        preview.wait(Duration::from_secs(60)).success(),
        "{}",
        preview.log()
    );
    let out = preview.log();
    let start = out.find('{').expect("JSON output");
    let json: Value = serde_json::from_str(&out[start..]).expect("valid JSON");
    assert_eq!(json["outcome"], "advisory");
    assert_eq!(json["repository"], "pallets/flask");
    let d = json["advisory"]["description"].as_str().unwrap();
    assert!(!d.contains("<img"), "{d}");
    assert!(!d.contains("<script"), "{d}");
    assert_eq!(d.matches("<!-- advisory-bridge").count(), 1, "{d}");
    assert!(
        json["reply"]["body"]
            .as_str()
            .unwrap()
            .contains("GHSA-xxxx-xxxx-xxxx")
    );
    assert!(stack.github.requests().is_empty(), "GitHub untouched");
    assert!(!stack.state_dir.exists(), "no state written");
    let _ = fixture("hostile.eml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reaches_every_server_and_names_what_is_wrong() {
    let mut stack = Stack::start().await;
    let mut ok = stack.daemon(&["check"]);
    let status = ok.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", ok.log());
    assert!(ok.log().contains("ok      IMAP"), "{}", ok.log());
    assert!(ok.log().contains("ok      SMTP"), "{}", ok.log());
    assert!(
        ok.log().contains(
            "ok      GitHub pallets: 5 repositories with advisories read and write, through the token of github.token_file"
        ),
        "{}",
        ok.log()
    );
    assert!(
        ok.log()
            .contains("ok      GitHub pallets-eco: 1 repository"),
        "{}",
        ok.log()
    );

    // A token that can read advisories but not write them is caught before any report.
    stack.github.add_token(fake_github::TokenSpec::new(
        "read-only-token",
        "pallets",
        fake_github::Access::Read,
    ));
    let read_only = stack.dir.join("read-only-token");
    std::fs::write(&read_only, "read-only-token").unwrap();
    let token_file = std::fs::read_to_string(&stack.config_path)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("token_file = \"")
                .map(|v| v.trim_end_matches('"').to_owned())
        })
        .unwrap();
    stack.write_config(|t| t.replace(&token_file, &read_only.display().to_string()));
    let mut ro = stack.daemon(&["check"]);
    assert!(!ro.wait(Duration::from_secs(60)).success());
    let log = ro.log();
    assert!(
        log.contains("FAILED  GitHub advisories of pallets/werkzeug")
            && log.contains("can read but not write"),
        "{log}"
    );
    assert!(stack.all_advisories().is_empty(), "check created nothing");
    stack.write_config(|t| t);

    let wrong = stack.dir.join("wrong-password");
    std::fs::write(&wrong, "not-the-password-42").unwrap();
    let security = stack.imap.security();
    stack.write_config(|t| {
        t.replace(
            &security.password_file.display().to_string(),
            &wrong.display().to_string(),
        )
    });
    let mut bad = stack.daemon(&["check"]);
    let status = bad.wait(Duration::from_secs(60));
    assert!(!status.success());
    let log = bad.log();
    assert!(log.contains("FAILED  IMAP"), "{log}");
    assert!(!log.contains("not-the-password-42"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_sender_waits_in_held_and_a_released_report_goes_through() {
    let mut stack = Stack::start().await;
    stack.write_config(|t| {
        t.replace(
            "max_advisories_per_sender_per_day = 1000",
            "max_advisories_per_sender_per_day = 2",
        )
        .replace(
            "max_replies_per_sender_per_day = 1000",
            "max_replies_per_sender_per_day = 1",
        )
    });
    for i in 0..4 {
        stack
            .deliver(&report(
                &format!("flood-{i}"),
                &format!("Werkzeug flood {i}"),
                "text",
            ))
            .await;
    }
    let once = stack.drain();
    assert_eq!(
        stack.all_advisories().len(),
        2,
        "the limit held the rest back"
    );
    assert_eq!(stack.replies().len(), 1, "one reply, then the reply limit");
    let held = stack.folder("Held").await;
    assert_eq!(
        held.len(),
        2,
        "nothing dropped: the rest waits for a person"
    );
    assert!(once.log().contains("held"), "{}", once.log());

    // A fresh copy of a held report sent again does not release it: it is held too.
    stack.deliver(&held[0]).await;
    stack.drain();
    assert_eq!(stack.all_advisories().len(), 2, "a copy releases nothing");
    assert_eq!(stack.folder("Held").await.len(), 3);

    // A person releases one by moving it back into the inbox.
    stack.mailbox().move_first("Held", "INBOX").await;
    stack.drain();
    assert_eq!(
        stack.all_advisories().len(),
        3,
        "the released report went through"
    );
}

/// A report carrying `Authentication-Results` headers.
fn report_with_auth(id: &str, results: &[&str]) -> Vec<u8> {
    let mut raw = String::new();
    for r in results {
        raw.push_str(&format!("Authentication-Results: {r}\r\n"));
    }
    raw.push_str(&String::from_utf8(report(id, "Click: forged?", "text")).unwrap());
    raw.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_failing_dmarc_at_a_trusted_server_gets_a_marked_advisory_and_no_reply() {
    let mut stack = Stack::start().await;
    stack.write_config(|t| {
        t.replace(
            "[retry]",
            "[authentication]\ntrusted_authserv_ids = [\"mx.test\"]\n\n[retry]",
        )
    });
    // The attacker's own header claims a pass; only the trusted server's counts.
    stack
        .deliver(&report_with_auth(
            "forged-1",
            &[
                "evil.example; dmarc=pass header.from=example.net",
                "mx.test; spf=fail smtp.mailfrom=example.net; dmarc=fail header.from=example.net",
            ],
        ))
        .await;
    // A failure claimed by an untrusted server is ignored: this sender gets a reply.
    stack
        .deliver(&report_with_auth(
            "honest-1",
            &["evil.example; dmarc=fail header.from=example.net"],
        ))
        .await;
    stack.drain();

    let (_, forged) = advisory_for(&stack, "forged-1@example.net").expect("advisory still created");
    assert!(
        description(&forged).contains("unauthenticated sender"),
        "{}",
        description(&forged)
    );
    let (_, honest) = advisory_for(&stack, "honest-1@example.net").expect("advisory");
    assert!(
        !description(&honest).contains("evil.example"),
        "untrusted header not shown"
    );
    let replies = stack.replies();
    assert_eq!(replies.len(), 1, "only the honest report is answered");
    assert_eq!(
        header_value(&replies[0], "In-Reply-To").as_deref(),
        Some("<honest-1@example.net>")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spam_by_flag_or_by_score_is_ignored_without_an_advisory() {
    let mut stack = Stack::start().await;
    stack.write_config(|t| t.replace("[retry]", "[spam]\nscore_threshold = 5.0\n\n[retry]"));
    let with = |header: &str, id: &str| {
        let mut raw = format!("{header}\r\n").into_bytes();
        raw.extend(report(id, "Flask: cheap pills", "buy now"));
        raw
    };
    stack.deliver(&with("X-Spam-Flag: YES", "spam-flag")).await;
    stack
        .deliver(&with("X-Spam-Score: 7.5", "spam-score"))
        .await;
    stack.deliver(&with("X-Spam-Score: 1.2", "ham-score")).await;
    stack.drain();
    assert_eq!(stack.folder("Ignored").await.len(), 2);
    assert_eq!(stack.all_advisories().len(), 1);
    assert!(advisory_for(&stack, "ham-score@example.net").is_some());
    assert_eq!(stack.replies().len(), 1, "no reply to spam");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_finds_its_advisory_even_after_the_journal_was_lost() {
    let mut stack = Stack::start().await;
    stack
        .deliver(&report(
            "thread-1",
            "Jinja2: sandbox escape",
            "first report",
        ))
        .await;
    stack.drain();
    let ack = stack.replies().pop().expect("acknowledged");
    let ack_id = header_value(&ack, "Message-ID").expect("our reply has a Message-ID");

    std::fs::remove_dir_all(&stack.state_dir).expect("wipe the state directory");
    let follow_up = format!(
        "From: Rita Reporter <rita@example.net>\r\n\
         To: {SECURITY_ADDRESS}\r\n\
         Subject: Re: Jinja2: sandbox escape\r\n\
         Date: Tue, 24 Nov 2026 11:00:00 +0000\r\n\
         Message-ID: <thread-2@example.net>\r\n\
         In-Reply-To: {ack_id}\r\n\
         References: <thread-1@example.net> {ack_id}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Here is a proof of concept: @pallets/maintainers <b>see</b>.\r\n"
    );
    stack.deliver(follow_up.as_bytes()).await;
    stack.drain();

    let advisories = stack.all_advisories();
    assert_eq!(
        advisories.len(),
        1,
        "the follow-up made no advisory of its own"
    );
    let d = description(&advisories[0].1);
    assert!(d.contains("Follow-up"), "{d}");
    assert!(d.contains("proof of concept"), "{d}");
    assert!(!d.contains("<b>"), "neutralised: {d}");
    assert_eq!(d.matches("advisory-bridge report-id=").count(), 1, "{d}");
    assert_eq!(d.matches("advisory-bridge followup-id=").count(), 1, "{d}");
    assert_eq!(stack.folder("Processed").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_once_the_mailbox_is_selected_and_stopping_on_sigterm() {
    let stack = Stack::start().await;
    let socket_path = stack.dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut daemon = support::Process::spawn(
        support::daemon_binary(),
        ["--config", stack.config_path.to_str().unwrap(), "run"],
        &[
            ("TEST_SMTP_PASSWORD", "smtp-secret"),
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ],
        &stack.dir.join("daemon-notify.log"),
    );
    let mut heard = String::new();
    let read_until = |what: &str, heard: &mut String| {
        let end = std::time::Instant::now() + PATIENCE;
        let mut buf = [0u8; 4096];
        while !heard.contains(what) {
            assert!(std::time::Instant::now() < end, "no {what} in {heard:?}");
            if let Ok(n) = socket.recv(&mut buf) {
                heard.push_str(&String::from_utf8_lossy(&buf[..n]));
                heard.push('\n');
            }
        }
    };
    read_until("READY=1", &mut heard);
    assert!(
        stack
            .mailbox()
            .folders()
            .await
            .iter()
            .any(|f| f == "Processed"),
        "READY comes after the mailbox is set up"
    );
    support::send_signal(daemon.pid(), "TERM");
    read_until("STOPPING=1", &mut heard);
    let status = daemon.wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_mode_files_a_private_vulnerability_report_github_accepts() {
    let mut stack = Stack::start().await;
    stack.write_config(|t| {
        t.replace(
            "min_mutation_interval_ms",
            "mode = \"triage\"\nmin_mutation_interval_ms",
        )
    });
    let raw = stack.deliver_fixture("plain-werkzeug.eml").await;
    stack.drain();
    let (repo, advisory) = advisory_for(&stack, &message_id_of(&raw)).expect("reported");
    assert_eq!(repo, "pallets/werkzeug");
    assert_eq!(advisory["state"], "triage");
    let reports: Vec<_> = stack
        .github
        .requests()
        .into_iter()
        .filter(|r| r.operation == Some(Operation::Report))
        .collect();
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0].violations.is_empty(),
        "{:?}",
        reports[0].violations
    );
    assert_eq!(stack.replies().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_each_reply_is_kept_in_the_sent_folder() {
    let mut stack = Stack::start().await;
    stack.write_config(|t| {
        t.replace(
            "poll_interval_secs = 1",
            "poll_interval_secs = 1\nsent_folder = \"Sent\"",
        )
    });
    stack.deliver_fixture("plain-werkzeug.eml").await;
    stack.drain();
    let sent = stack.folder("Sent").await;
    assert_eq!(sent.len(), 1);
    let reply = &stack.replies()[0];
    assert_eq!(
        header_value(&sent[0], "Message-ID"),
        header_value(reply, "Message-ID"),
        "the copy is the reply that went out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_recent_reports_and_filters_by_state() {
    let mut stack = Stack::start().await;
    stack.deliver_fixture("plain-werkzeug.eml").await;
    stack.deliver_fixture("auto-reply.eml").await;
    stack.drain();
    let mut all = stack.daemon(&["status"]);
    assert!(all.wait(Duration::from_secs(30)).success());
    let out = all.log();
    assert!(out.contains("pallets/werkzeug"), "{out}");
    assert!(out.contains("GHSA-"), "{out}");
    assert!(out.contains(" sent"), "{out}");
    assert!(out.contains("ignored"), "{out}");
    for line in out.lines() {
        assert!(
            line.chars().count() <= 100,
            "wider than 100 columns: {line:?}"
        );
    }
    let mut long = stack.daemon(&["status", "--long"]);
    assert!(long.wait(Duration::from_secs(30)).success());
    let out = long.log();
    assert!(
        out.contains("sent to"),
        "the long form names the address:\n{out}"
    );
    let mut filtered = stack.daemon(&["status", "--state", "ignored"]);
    assert!(filtered.wait(Duration::from_secs(30)).success());
    let out = filtered.log();
    assert!(out.contains("auto-submitted"), "{out}");
    assert!(!out.contains("pallets/werkzeug"), "{out}");
    let mut wrong = stack.daemon(&["status", "--state", "bogus"]);
    assert!(!wrong.wait(Duration::from_secs(30)).success());
    assert!(wrong.log().contains("unknown state"), "{}", wrong.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_trace_level_no_secret_and_no_report_text_reaches_the_log() {
    let mut stack = Stack::start().await;
    let body = "the-secret-exploit-steps-7d1e";
    stack
        .deliver(&report("trace-1", "Flask: trace check", body))
        .await;
    let mut once = stack.daemon_logging(&["once"], "trace");
    let status = once.wait(Duration::from_secs(120));
    assert!(status.success(), "{status:?}\n{}", once.log());
    assert_eq!(stack.all_advisories().len(), 1);
    let log = once.log();
    assert!(
        log.lines().filter(|l| l.contains("TRACE")).count() > 10,
        "the daemon really logged at trace level:\n{log}"
    );
    let imap_password = stack.imap.security().password;
    for (what, secret) in [
        ("the IMAP password", imap_password.as_str()),
        ("the SMTP password", "smtp-secret"),
        ("the GitHub token", "ghp_testtoken0123456789"),
        ("the marker key", &"5e".repeat(32)),
        ("the report's text", body),
    ] {
        for line in log.lines() {
            assert!(!line.contains(secret), "{what} in a log line: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_organisations_one_github_app_each_report_lands_in_its_repository() {
    use fake_github::{AppSpec, InstallationSpec, keys};
    let mut stack = Stack::start_with(support::ServerKind::dovecot(), |o| {
        fake_github::FakeOptions {
            // No token: everything goes through the App's two installations, whose tokens
            // see only their own organisation and expire quickly (refreshes are exercised).
            token: String::new(),
            apps: vec![AppSpec::new(4242, keys::APP_PUBLIC_KEY_PEM)],
            installations: vec![
                InstallationSpec::new(31, 4242, "pallets"),
                InstallationSpec::new(32, 4242, "pallets-eco"),
            ],
            installation_token_ttl: Duration::from_secs(2),
            ..o
        }
    })
    .await;
    let key = stack.dir.join("app-key.pem");
    std::fs::write(&key, keys::APP_PRIVATE_KEY_PEM).unwrap();
    let token_line = std::fs::read_to_string(&stack.config_path)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("token_file = "))
        .unwrap()
        .to_owned();
    stack.write_config(|t| {
        t.replace(
            &token_line,
            &format!("app_id = 4242\nprivate_key_file = \"{}\"", key.display()),
        )
    });
    for i in 0..2 {
        stack
            .deliver(&report(
                &format!("app-flask-{i}"),
                &format!("Flask: issue {i}"),
                "text",
            ))
            .await;
        let eco = format!(
            "From: Rita Reporter <rita@example.net>\r\nTo: security+flask-sqlalchemy@palletsprojects.com\r\n\
             Subject: Session fixation {i}\r\nMessage-ID: <app-eco-{i}@example.net>\r\n\
             Content-Type: text/plain\r\n\r\nA problem in the extension.\r\n"
        );
        stack.deliver(eco.as_bytes()).await;
    }
    let once = stack.drain();
    assert_eq!(
        stack.github.advisories("pallets/flask").len(),
        2,
        "{}",
        once.log()
    );
    assert_eq!(
        stack
            .github
            .advisories("pallets-eco/flask-sqlalchemy")
            .len(),
        2,
        "{}",
        once.log()
    );
    assert_eq!(stack.replies().len(), 4);
    assert!(stack.folder("Quarantine").await.is_empty());
    assert!(
        once.log().contains("using the GitHub App's installation"),
        "{}",
        once.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_login_in_the_signature_is_prefilled_as_the_reporter_credit() {
    let mut stack = Stack::start().await;
    stack.github.add_user("danaok");
    stack
        .deliver(&report(
            "credit-1",
            "Click: shell injection",
            "the details\r\n\r\n-- \r\nDana (@danaok on GitHub)",
        ))
        .await;
    stack
        .deliver(&report(
            "credit-2",
            "Click: another one",
            "more details\r\n\r\n-- \r\nGitHub: nobody-by-this-name",
        ))
        .await;
    let once = stack.drain();
    let advisories = stack.github.advisories("pallets/click");
    assert_eq!(advisories.len(), 2, "{}", once.log());
    let credits = |summary: &str| {
        advisories
            .iter()
            .find(|a| a["summary"].as_str().is_some_and(|s| s.contains(summary)))
            .map(|a| a["credits"].clone())
            .expect("the advisory")
    };
    assert_eq!(
        credits("shell injection"),
        serde_json::json!([{"login": "danaok", "type": "reporter"}])
    );
    assert_eq!(
        credits("another one"),
        serde_json::json!([]),
        "an unknown login is not credited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_systemd_credentials_from_the_credentials_dir_and_warns_of_an_unreadable_config()
 {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = Stack::start().await;
    // The secret as the Debian package keeps it, the config as the unit refers to it.
    let credentials = stack.dir.join("credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    let text = std::fs::read_to_string(&stack.config_path).unwrap();
    let password_file = text
        .lines()
        .find_map(|l| l.strip_prefix("password_file = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("the IMAP password file")
        .to_owned();
    std::fs::copy(&password_file, credentials.join("imap-password")).unwrap();
    stack.write_config(|text| {
        text.replacen(
            &format!("password_file = \"{password_file}\""),
            "password_file = \"/run/credentials/advisory-bridge.service/imap-password\"",
            1,
        )
    });
    std::fs::set_permissions(&stack.config_path, std::fs::Permissions::from_mode(0o640)).unwrap();

    let dir = credentials.to_str().unwrap().to_owned();
    let mut check = stack.daemon(&["check", "--credentials-dir", &dir]);
    let status = check.wait(Duration::from_secs(120));
    let out = check.log();
    assert!(status.success(), "check failed: {status:?}\n{out}");
    assert!(out.contains("ok      IMAP"), "{out}");
    assert!(
        out.contains("has mode 0640: the service runs as a dynamic user and cannot read it"),
        "the unreadable config is pointed out:\n{out}"
    );

    // Without the secret there, the error names where it looked.
    std::fs::remove_file(credentials.join("imap-password")).unwrap();
    let mut check = stack.daemon(&["check", "--credentials-dir", &dir]);
    let status = check.wait(Duration::from_secs(120));
    let out = check.log();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("cannot read secret file {dir}/imap-password")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_report_costs_one_github_request_however_many_advisories_the_repository_holds() {
    let mut stack = Stack::start().await;
    // A repository with a history: 250 advisories from a month ago.
    let month_ago = chrono::Utc::now() - chrono::Duration::days(30);
    for n in 0..250 {
        let ghsa = stack
            .github
            .insert_advisory(
                "pallets/click",
                &serde_json::json!({
                    "summary": format!("old {n}"),
                    "description": "an older advisory",
                    "vulnerabilities": [{"package": {"ecosystem": "pip", "name": "click"}}],
                }),
            )
            .expect("inserted");
        stack
            .github
            .backdate_advisory("pallets/click", &ghsa, month_ago)
            .expect("backdated");
    }
    let dated = |id: &str| {
        String::from_utf8(report(id, "Click: cost", "details"))
            .unwrap()
            .replace(
                "Date: Tue, 24 Nov 2026 10:00:00 +0000",
                &format!("Date: {}", chrono::Utc::now().to_rfc2822()),
            )
    };
    let count = |stack: &Stack, op: Operation| {
        stack
            .github
            .requests()
            .iter()
            .filter(|r| r.operation == Some(op))
            .count()
    };

    // A first start on a backlog: the mail arrived before the journal existed, so it may
    // have been handled under a journal that is gone. One listing of the repository's
    // marked advisories answers for every such report.
    stack.github.clear_requests();
    stack.deliver(dated("backlog-1").as_bytes()).await;
    stack.deliver(dated("backlog-2").as_bytes()).await;
    let once = stack.drain();
    assert_eq!(
        stack.github.advisories("pallets/click").len(),
        252,
        "{}",
        once.log()
    );
    assert_eq!(
        count(&stack, Operation::List),
        3,
        "250 advisories: three pages, once"
    );
    assert_eq!(count(&stack, Operation::Create), 2);

    // A running daemon's journal (made two days ago): a report it has never seen costs
    // the create and nothing else.
    let journal = rusqlite::Connection::open(stack.state_dir.join("journal.sqlite3")).unwrap();
    let born = (chrono::Utc::now() - chrono::Duration::days(2))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    journal
        .execute(
            "UPDATE meta SET value = ?1 WHERE key = 'journal_started_at'",
            [born],
        )
        .unwrap();
    drop(journal);
    stack.github.clear_requests();
    stack.deliver(dated("cost-1").as_bytes()).await;
    let once = stack.drain();
    assert_eq!(
        stack.github.advisories("pallets/click").len(),
        253,
        "{}",
        once.log()
    );
    let requests = stack.github.requests();
    assert_eq!(
        requests.iter().map(|r| r.operation).collect::<Vec<_>>(),
        vec![Some(Operation::Create)],
        "no marker scan for a report new to a running journal"
    );
}
