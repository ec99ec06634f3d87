//! The scale benchmark: every figure of "fast at every size", measured on the project's
//! own stack (a private Dovecot, the SMTP sink, the fake GitHub) against the real binary,
//! each beside its baseline from the same run: the naive script `benches/naive-bridge.py`
//! (imaplib + POST + smtplib, no guarantees) or the floor of the part we cannot beat
//! (Dovecot's own IDLE notification). Prints one line per figure; never fails on a figure.
//!
//! `cargo bench --bench scale`. Environment: `SCALE_BACKLOGS` (default `1000,5000`, the
//! backlog sizes; the second one spreads over 20 repositories), `SCALE_SAMPLES` (arrival
//! samples, default 20), `SCALE_ONLY` (comma-separated figure names to run: `ehlo`,
//! `arrival`, `backlog`, `requests`, `imap`, `fsync`, `memory`). GitHub pacing is off
//! (`min_mutation_interval_ms = 0`): the figures measure the daemon, not the pacing.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::stack::{PATIENCE, SECURITY_ADDRESS, Stack, report};
use support::{Process, ServerKind, daemon_binary};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn wanted(figure: &str) -> bool {
    match std::env::var("SCALE_ONLY") {
        Ok(only) => only.split(',').any(|f| f.trim() == figure),
        Err(_) => true,
    }
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`).
fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `n` bench repositories (`pallets/bench-00`, …), for the fake and the config.
fn bench_repos(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("pallets/bench-{i:02}")).collect()
}

/// A stack whose fake GitHub also knows `extra` repositories, and whose config lists
/// them, with pacing off and the flood limits out of the way; `extra_config` is appended.
async fn stack(extra: &[String], extra_config: &str) -> Stack {
    let repos = extra.to_vec();
    let stack = Stack::start_with(ServerKind::dovecot(), move |mut o| {
        o.repos.extend(repos);
        // A backlog of 5,000 runs over GitHub's hourly budget; the figures are not
        // about the rate limit.
        o.rate_limit = 10_000_000;
        o
    })
    .await;
    let mut sections = String::new();
    for r in extra {
        sections.push_str(&format!("\n[[repository]]\nname = \"{r}\"\n"));
    }
    let extra_config = extra_config.to_owned();
    stack.write_config(move |text| {
        let text = text
            .replace(
                "min_mutation_interval_ms = 100",
                "min_mutation_interval_ms = 0",
            )
            .replace(
                "max_advisories_per_sender_per_day = 1000",
                "max_advisories_per_sender_per_day = 1000000",
            )
            .replace(
                "max_replies_per_sender_per_day = 1000",
                "max_replies_per_sender_per_day = 1000000",
            );
        format!("{text}{sections}{extra_config}")
    });
    stack
}

/// Appends `n` small reports over one IMAP session; report `i` names repository
/// `repos[i % len]` in its subject (routing by name), or none when `repos` is empty.
async fn fill(stack: &Stack, n: usize, tag: &str, repos: &[String]) {
    let mut session = stack.mailbox().connect().await;
    for i in 0..n {
        let subject = match repos {
            [] => format!("Flask: report {i}"),
            _ => {
                let name = repos[i % repos.len()].split('/').nth(1).unwrap_or("flask");
                format!("{name}: report {i}")
            }
        };
        let body = format!(
            "Report {i} of the backlog: the session cookie can be forged when SECRET_KEY is short.\r\n\
             Steps: set SECRET_KEY to 'a', sign a cookie, replay it.\r\n"
        );
        let raw = report(&format!("{tag}-{i}"), &subject, &body);
        session
            .append("INBOX", None, None, &raw)
            .await
            .expect("APPEND works");
    }
    let _ = session.logout().await;
}

/// Advisories in every repository the fake knows, counted without copying them.
fn advisory_total(stack: &Stack, extra: &[String]) -> usize {
    support::stack::REPOSITORIES
        .iter()
        .map(|r| r.to_string())
        .chain(extra.iter().cloned())
        .map(|r| stack.github.advisory_count(&r))
        .sum()
}

/// Polls the fake until `n` advisories exist; returns when each new advisory was first
/// seen, relative to `start`.
async fn advisory_times(
    stack: &Stack,
    n: usize,
    start: Instant,
    extra: &[String],
) -> Vec<Duration> {
    let mut seen = Vec::with_capacity(n);
    let mut last = 0;
    while seen.len() < n {
        let now_total = advisory_total(stack, extra);
        for _ in last..now_total {
            seen.push(start.elapsed());
        }
        last = now_total;
        assert!(
            start.elapsed() < Duration::from_secs(3600),
            "the backlog never drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

/// How many messages `folder` holds (0 when it does not exist), without reading them.
async fn folder_count(stack: &Stack, folder: &str) -> usize {
    let mut session = stack.mailbox().connect().await;
    let n = match session.examine(folder).await {
        Ok(mailbox) => mailbox.exists as usize,
        Err(_) => 0,
    };
    let _ = session.logout().await;
    n
}

/// Waits (up to an hour: a bench, not a test) until `folder` holds `n` messages.
async fn wait_for_count(stack: &Stack, folder: &str, n: usize) {
    let start = Instant::now();
    while folder_count(stack, folder).await < n {
        assert!(
            start.elapsed() < Duration::from_secs(3600),
            "{folder} never reached {n} messages"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many replies the SMTP sink accepted, without reading them.
fn reply_count(stack: &Stack) -> usize {
    fs::read_dir(stack.smtp.dir().join("new")).map_or(0, |d| d.count())
}

/// Runs the naive script over the stack's INBOX; messages per second.
fn run_naive(stack: &Stack, repos: &[String]) -> (usize, f64) {
    let security = stack.imap.security();
    let password = fs::read_to_string(&security.password_file).expect("the IMAP password");
    let token = fs::read_to_string(stack.dir.join("github-token")).expect("the token");
    let mut repositories = repos.to_vec();
    if repositories.is_empty() {
        repositories.push("pallets/flask".into());
    }
    let config = json!({
        "imap_port": stack.imap.imaps_port(),
        "imap_ca": stack.imap.ca_file(),
        "user": security.user,
        "password": password.trim(),
        "smtp_port": stack.smtp.port(),
        "smtp_ca": stack.smtp.ca_file().expect("TLS sink"),
        "smtp_user": "bridge",
        "smtp_password": "smtp-secret",
        "from": SECURITY_ADDRESS,
        "github": stack.github.url(),
        "token": token.trim(),
        "repositories": repositories,
    });
    let path = stack.dir.join("naive.json");
    fs::write(&path, config.to_string()).expect("write the naive config");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/naive-bridge.py");
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the naive script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the naive script prints JSON");
    let n = result["messages"].as_u64().unwrap_or(0) as usize;
    let secs = result["seconds"].as_f64().unwrap_or(f64::NAN);
    (n, n as f64 / secs)
}

/// One backlog figure: `n` reports over `repo_count` repositories (0: the default
/// routing), naive script and daemon each on a fresh stack.
async fn backlog(n: usize, repo_count: usize) {
    let repos = bench_repos(repo_count);
    let naive = {
        let stack = stack(&repos, "").await;
        fill(&stack, n, "naive", &repos).await;
        run_naive(&stack, &repos)
    };
    let mut stack = stack(&repos, "").await;
    fill(&stack, n, "bridge", &repos).await;
    let start = Instant::now();
    let mut daemon = stack.daemon_logging(&["run"], "warn");
    let times = advisory_times(&stack, n, start, &repos).await;
    // Every guarantee on: the backlog counts as done when every message is filed.
    wait_for_count(&stack, "Processed", n).await;
    let total = start.elapsed();
    while reply_count(&stack) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fake_rss_mb = proc_kb(std::process::id(), "VmHWM") as f64 / 1024.0;
    daemon.terminate();
    let rate = n as f64 / total.as_secs_f64();
    let where_ = if repo_count == 0 {
        "one repository".to_owned()
    } else {
        format!("{repo_count} repositories")
    };
    println!(
        "backlog {n} over {where_}: {rate:.1} msg/s, naive script {:.1} msg/s ({} msgs): ratio {:.2}",
        naive.1,
        naive.0,
        rate / naive.1
    );
    println!("backlog {n}: first advisory after {:.0} ms", ms(times[0]));
    // Cost per report at the start and the end of the backlog: the mean gap between
    // advisories over the first and the last tenth.
    let tenth = (n / 10).max(2);
    let gap = |w: &[Duration]| (w[w.len() - 1] - w[0]) / (w.len() as u32 - 1);
    println!(
        "backlog {n}: fetch->advisory per report {:.1} ms in the first tenth, {:.1} ms in the last tenth",
        ms(gap(&times[..tenth])),
        ms(gap(&times[n - tenth..]))
    );
    println!(
        "backlog {n}: the bench process (fake GitHub, harness) peaked at {fake_rss_mb:.0} MB holding {n} advisories"
    );
}

/// APPEND -> advisory and APPEND -> reply with IDLE, and Dovecot's own IDLE floor.
async fn arrival(samples: usize) {
    let mut stack = stack(&[], "").await;
    let floor = idle_floor(&stack, samples).await;
    let mut daemon = stack.daemon_logging(&["run"], "warn");
    stack.wait_for_daemon_folders().await;
    let mut to_advisory = Vec::new();
    let mut to_reply = Vec::new();
    for i in 0..samples {
        let before = advisory_total(&stack, &[]);
        let replies = reply_count(&stack);
        let raw = report(
            &format!("arrival-{i}"),
            "Werkzeug: timing sample",
            "The debugger PIN can be guessed.",
        );
        stack.deliver(&raw).await;
        let appended = Instant::now();
        let mut advisory_at = None;
        loop {
            if advisory_at.is_none() && advisory_total(&stack, &[]) > before {
                advisory_at = Some(appended.elapsed());
            }
            if advisory_at.is_some() && reply_count(&stack) > replies {
                break;
            }
            assert!(appended.elapsed() < PATIENCE, "sample {i} never finished");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        to_advisory.push(advisory_at.expect("set above"));
        to_reply.push(appended.elapsed());
    }
    daemon.terminate();
    let (floor_p50, adv_p50, reply_p50) = (
        percentile(&floor, 0.5),
        percentile(&sorted(to_advisory), 0.5),
        percentile(&sorted(to_reply), 0.5),
    );
    println!(
        "IDLE floor (Dovecot, APPEND -> EXISTS): p50 {:.0} ms",
        ms(floor_p50)
    );
    println!(
        "APPEND -> advisory: p50 {:.0} ms; our share over the floor {:.0} ms",
        ms(adv_p50),
        ms(adv_p50.saturating_sub(floor_p50))
    );
    println!(
        "APPEND -> reply: p50 {:.0} ms; {:.0} ms after the advisory",
        ms(reply_p50),
        ms(reply_p50.saturating_sub(adv_p50))
    );
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

/// How long Dovecot takes to tell an IDLE client of an APPEND: the floor under every
/// arrival figure.
async fn idle_floor(stack: &Stack, samples: usize) -> Vec<Duration> {
    let account = stack.mailbox();
    account.create_folder("Floor").await;
    let mut out = Vec::new();
    for i in 0..samples {
        let mut session = account.connect().await;
        session.select("Floor").await.expect("SELECT Floor");
        let mut idle = session.idle();
        idle.init().await.expect("IDLE starts");
        let (wait, _stop) = idle.wait();
        let raw = report(&format!("floor-{i}"), "floor", "floor");
        let appended = tokio::spawn({
            let account = stack.mailbox();
            async move {
                account.append("Floor", &raw).await;
            }
        });
        let start = Instant::now();
        wait.await.expect("IDLE wakes");
        out.push(start.elapsed());
        appended.await.expect("append task");
        let _ = idle.done().await;
    }
    out.sort();
    out
}

/// EHLO round trip on the SMTP sink, before STARTTLS.
async fn ehlo() {
    let stack = stack(&[], "").await;
    let mut times = Vec::new();
    for _ in 0..20 {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", stack.smtp.port()))
            .await
            .expect("the sink accepts");
        let (read, mut write) = tcp.into_split();
        let mut lines = BufReader::new(read).lines();
        lines.next_line().await.expect("greeting");
        let start = Instant::now();
        write.write_all(b"EHLO bench\r\n").await.expect("EHLO");
        loop {
            let line = lines
                .next_line()
                .await
                .expect("EHLO reply")
                .unwrap_or_default();
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                break;
            }
        }
        times.push(start.elapsed());
        let _ = write.write_all(b"QUIT\r\n").await;
    }
    times.sort();
    println!(
        "SMTP sink EHLO round trip: p50 {:.1} ms, max {:.1} ms",
        ms(percentile(&times, 0.5)),
        ms(times[times.len() - 1])
    );
}

/// GitHub requests for one new report, the repository already holding 0 / 100 / 1,000 /
/// 5,000 advisories (made earlier by maintainers).
async fn requests() {
    let mut line = Vec::new();
    for existing in [0usize, 100, 1000, 5000] {
        let mut stack = stack(&[], "").await;
        for i in 0..existing {
            stack
                .github
                .insert_advisory(
                    "pallets/flask",
                    &json!({"summary": format!("older {i}"), "description": "older",
                            "vulnerabilities": [{"package": {"ecosystem": "pip", "name": "flask"}}]}),
                )
                .expect("insert");
        }
        // The first report opens the journal; the one measured is the second.
        stack
            .deliver(&report("warmup", "Flask: warm-up", "warm"))
            .await;
        let mut daemon = stack.daemon_logging(&["run"], "warn");
        wait_for_count(&stack, "Processed", 1).await;
        let before = stack.github.request_count();
        stack
            .deliver(&report("measured", "Flask: measured", "measured"))
            .await;
        wait_for_count(&stack, "Processed", 2).await;
        let cost = stack.github.request_count() - before;
        daemon.terminate();
        line.push(format!("{existing}: {cost}"));
    }
    println!(
        "GitHub requests for one new report, by advisories already in the repository: {}",
        line.join(", ")
    );
}

/// A TCP proxy that counts the tagged commands the client sends.
async fn counting_proxy(target: u16) -> (u16, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(("127.0.0.1", target))
                .await
                .expect("the server accepts");
            let counter = counter.clone();
            tokio::spawn(async move {
                let (cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let mut reader = BufReader::new(cr);
                let mut line = Vec::new();
                let mut literal = 0usize;
                loop {
                    line.clear();
                    if literal > 0 {
                        let mut buf = vec![0u8; literal];
                        if reader.read_exact(&mut buf).await.is_err() {
                            break;
                        }
                        let _ = sw.write_all(&buf).await;
                        literal = 0;
                        continue;
                    }
                    match reader.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(&line);
                    let mut words = text.split_whitespace();
                    let tag = words.next().unwrap_or("");
                    if words.next().is_some() && !tag.is_empty() && tag != "DONE" {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(n) = text
                        .trim_end()
                        .strip_suffix('}')
                        .and_then(|t| t.rsplit_once('{'))
                        .and_then(|(_, n)| n.trim_end_matches('+').parse::<usize>().ok())
                    {
                        literal = n;
                    }
                    let _ = sw.write_all(&line).await;
                }
            });
        }
    });
    (port, count)
}

/// IMAP commands per message over a backlog of 200, through a counting proxy (plain
/// IMAP on loopback).
async fn imap_commands() {
    let n = 200;
    let stack = stack(&[], "").await;
    let (port, count) = counting_proxy(stack.imap.imap_port()).await;
    let imaps = format!("port = {}", stack.imap.imaps_port());
    stack.write_config(|text| {
        text.replace(
            "min_mutation_interval_ms = 100",
            "min_mutation_interval_ms = 0",
        )
        .replace(&imaps, &format!("port = {port}"))
        .replace("tls = \"implicit\"", "tls = \"none\"")
    });
    fill(&stack, n, "imap", &[]).await;
    let mut stack = stack;
    let mut once = stack.daemon_logging(&["once"], "warn");
    once.wait(Duration::from_secs(1200));
    assert_eq!(
        folder_count(&stack, "Processed").await,
        n,
        "`once` filed every report"
    );
    let commands = count.load(Ordering::Relaxed);
    println!(
        "IMAP commands per message (backlog of {n}, `once`): {:.2}; the naive script: 2",
        commands as f64 / n as f64
    );
}

/// fsyncs per report over a backlog of 200 (`once` under `strace -f -c`).
async fn fsyncs() {
    let n = 200;
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        println!("fsyncs per report: not measured (no strace)");
        return;
    }
    let stack = stack(&[], "").await;
    fill(&stack, n, "fsync", &[]).await;
    let out = stack.dir.join("strace.txt");
    let config = stack.config_path.clone();
    let mut args: Vec<String> = ["-f", "-c", "-o"].iter().map(|s| s.to_string()).collect();
    args.push(out.display().to_string());
    args.extend(
        [
            "-e",
            "trace=fsync,fdatasync,sync_file_range,syncfs,msync",
            daemon_binary().to_str().expect("UTF-8"),
            "--config",
            config.to_str().expect("UTF-8"),
            "once",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut once = Process::spawn(
        "strace",
        &args,
        &[
            ("TEST_SMTP_PASSWORD", "smtp-secret"),
            ("ADVISORY_BRIDGE_LOG", "warn"),
        ],
        &stack.dir.join("strace-daemon.log"),
    );
    once.wait(Duration::from_secs(1200));
    assert_eq!(
        folder_count(&stack, "Processed").await,
        n,
        "`once` filed every report"
    );
    let summary = fs::read_to_string(&out).unwrap_or_default();
    let total: u64 = summary
        .lines()
        .filter(|l| {
            ["fsync", "fdatasync", "sync_file_range", "syncfs", "msync"]
                .iter()
                .any(|s| l.trim_end().ends_with(s))
        })
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
        .sum();
    println!(
        "fsyncs per report (backlog of {n}, `once`, spool and journal): {:.2}",
        total as f64 / n as f64
    );
}

/// Peak RSS for a 24 MiB message, and idle RSS with 1 and 20 repositories.
async fn memory() {
    for repos in [0usize, 20] {
        let repos = bench_repos(repos);
        let mut stack = stack(&repos, "").await;
        let mut daemon = stack.daemon_logging(&["run"], "warn");
        stack.wait_for_daemon_folders().await;
        stack.deliver(&report("idle-0", "Flask: one", "one")).await;
        wait_for_count(&stack, "Processed", 1).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "idle RSS with {} repositories: {:.1} MB",
            repos.len().max(6),
            proc_kb(daemon.pid(), "VmRSS") as f64 / 1024.0
        );
        daemon.terminate();
    }
    let mut stack = stack(&[], "").await;
    let size = 24 * 1024 * 1024;
    let raw = big_message(size);
    let mut daemon = stack.daemon_logging(&["run"], "warn");
    stack.wait_for_daemon_folders().await;
    let mut session = stack.mailbox().connect().await;
    session
        .append("INBOX", None, None, &raw)
        .await
        .expect("APPEND the big message");
    let _ = session.logout().await;
    wait_for_count(&stack, "Processed", 1).await;
    let peak = proc_kb(daemon.pid(), "VmHWM") * 1024;
    daemon.terminate();
    println!(
        "peak RSS for a {} MiB message: {:.1} MB ({:.2}x the message; goal 2x + 16 MiB = {:.0} MB)",
        raw.len() / (1024 * 1024),
        peak as f64 / 1e6,
        peak as f64 / raw.len() as f64,
        (2 * raw.len() + 16 * 1024 * 1024) as f64 / 1e6
    );
}

/// A report of about `size` bytes: a short text and one base64 attachment.
fn big_message(size: usize) -> Vec<u8> {
    use base64::Engine as _;
    let payload = vec![0x5au8; size * 3 / 4 - 4096];
    let encoded = base64::engine::general_purpose::STANDARD.encode(&payload);
    let mut body = String::new();
    for chunk in encoded.as_bytes().chunks(76) {
        body.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        body.push_str("\r\n");
    }
    format!(
        "From: Rita Reporter <rita@example.net>\r\n\
         To: {SECURITY_ADDRESS}\r\n\
         Subject: Flask: a core dump\r\n\
         Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <big@example.net>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\
         \r\n\
         --b\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         The attached core dump shows the overflow.\r\n\
         --b\r\n\
         Content-Type: application/octet-stream; name=\"core.bin\"\r\n\
         Content-Disposition: attachment; filename=\"core.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {body}--b--\r\n"
    )
    .into_bytes()
}

fn main() {
    let samples: usize = std::env::var("SCALE_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let backlogs: Vec<usize> = std::env::var("SCALE_BACKLOGS")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        if wanted("ehlo") {
            ehlo().await;
        }
        if wanted("arrival") {
            arrival(samples).await;
        }
        if wanted("backlog") {
            for (i, &n) in backlogs.iter().enumerate() {
                backlog(n, if i == 0 { 0 } else { 20 }).await;
            }
        }
        if wanted("requests") {
            requests().await;
        }
        if wanted("imap") {
            imap_commands().await;
        }
        if wanted("fsync") {
            fsyncs().await;
        }
        if wanted("memory") {
            memory().await;
        }
    });
}
