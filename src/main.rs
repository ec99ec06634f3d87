//! The `advisory-bridge` command line: parse arguments, load config, hand off.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tracing::{error, info, warn};

use advisory_bridge::classify::{Classification, ReplyDecision};
use advisory_bridge::config::Config;
use advisory_bridge::daemon::{self, Daemon, Metrics, Mode};
use advisory_bridge::journal::{Journal, State};
use advisory_bridge::render::{self, AdvisoryRef, Templates};
use advisory_bridge::{github, metrics, reply, source};

/// Exit code when `once` left messages waiting for a retry (EX_TEMPFAIL).
const EXIT_DEFERRED: u8 = 75;

/// Turns mail sent to security@ into private GitHub draft security advisories.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The config file.
    #[arg(
        long,
        short,
        env = "ADVISORY_BRIDGE_CONFIG",
        default_value = "/etc/advisory-bridge/config.toml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch the mailbox and handle reports as they arrive (the daemon).
    Run,
    /// Handle every message in the mailbox now, then exit (75 if some wait for a retry).
    Once,
    /// Validate the config and reach IMAP, SMTP and GitHub with the configured credentials.
    Check,
    /// Show the advisory and the reply a message would produce; touches nothing.
    Preview {
        /// A raw message (.eml).
        file: PathBuf,
    },
    /// List recent reports from the journal.
    Status {
        /// Only reports in this state (seen, advisory_created, acknowledged, filed,
        /// ignored, quarantined, held).
        #[arg(long)]
        state: Option<String>,
        /// How many to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("ADVISORY_BRIDGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Under systemd the journal adds its own timestamps.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::Run => run(config, Mode::Run).await,
        Command::Once => run(config, Mode::Once).await,
        Command::Check => check(config).await,
        Command::Preview { file } => preview(&config, &file),
        Command::Status { state, limit } => status(&config, state.as_deref(), limit),
    }
}

async fn run(config: Config, mode: Mode) -> Result<ExitCode> {
    let metrics = Arc::new(Metrics::default());
    if let Some(listen) = &config.metrics.listen {
        metrics::serve(listen, metrics.clone())
            .await
            .with_context(|| format!("cannot serve metrics on {listen} (metrics.listen)"))?;
    }
    let mut daemon = Daemon::new(config, metrics.clone())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("stopping");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let _ = tx.send(true);
    });
    spawn_watchdog();
    let summary = daemon.run(mode, rx).await?;
    info!(
        created = metrics
            .advisories_created
            .load(std::sync::atomic::Ordering::Relaxed),
        quarantined = metrics
            .quarantined
            .load(std::sync::atomic::Ordering::Relaxed),
        deferred = summary.deferred,
        "stopped"
    );
    if summary.deferred > 0 {
        warn!(
            deferred = summary.deferred,
            "some messages wait for a retry; they stay in the mailbox"
        );
        return Ok(ExitCode::from(EXIT_DEFERRED));
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still dies on SIGTERM, just less politely.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Pings systemd's watchdog at half its interval while the runtime is alive.
fn spawn_watchdog() {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    tokio::spawn(async move {
        loop {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            tokio::time::sleep(period).await;
        }
    });
}

async fn check(config: Config) -> Result<ExitCode> {
    let mut failures = 0;
    let mut report = |what: &str, result: Result<()>| match result {
        Ok(()) => println!("ok      {what}"),
        Err(e) => {
            failures += 1;
            println!("FAILED  {what}: {e:#}");
        }
    };
    report(&format!("config {}", config.path.display()), Ok(()));
    report(
        "reply template",
        Templates::load(&config.reply)
            .map(|_| ())
            .map_err(Into::into),
    );
    report("state directory", check_state_dir(&config.state_dir));
    let imap = async {
        let settings = daemon::imap_settings(&config)?;
        let (session, state) =
            source::ImapSource::connect(&settings, &config.imap.mailbox, &[]).await?;
        let _ = session.logout().await;
        println!(
            "        mailbox {} holds {} message(s)",
            config.imap.mailbox, state.exists
        );
        Ok(())
    };
    report(
        &format!("IMAP {}:{}", config.imap.host, config.imap.port()),
        imap.await,
    );
    let smtp = async {
        let mailer = reply::Mailer::new(&daemon::mailer_settings(&config)?)?;
        mailer.check().await?;
        Ok(())
    };
    report(
        &format!("SMTP {}:{}", config.smtp.host, config.smtp.port()),
        smtp.await,
    );
    match daemon::github_settings(&config)
        .map_err(anyhow::Error::from)
        .and_then(|s| github::GitHub::new(&s).map_err(Into::into))
    {
        Ok(gh) => {
            for repo in &config.repositories {
                report(
                    &format!("GitHub advisories of {}", repo.name),
                    gh.check_access(&repo.name).await.map_err(Into::into),
                );
            }
        }
        Err(e) => report("GitHub client", Err(e)),
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check_state_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create state_dir {}", dir.display()))?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("state_dir {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Journal::open(dir)?;
    Ok(())
}

fn preview(config: &Config, file: &Path) -> Result<ExitCode> {
    let raw = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let report = match daemon::parse_report(config, &raw) {
        Ok(r) => r,
        Err(e) => {
            let out = serde_json::json!({
                "outcome": "quarantine",
                "reason": e.to_string(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(ExitCode::SUCCESS);
        }
    };
    let received = report.date.unwrap_or_else(chrono::Utc::now);
    let prepared = daemon::prepare(config, &report, received);
    let templates = Templates::load(&config.reply)?;
    let classification = match &prepared.classification {
        Classification::Report => serde_json::json!("report"),
        Classification::Noise(reason) => serde_json::json!({ "noise": reason.to_string() }),
    };
    let placeholder = "GHSA-xxxx-xxxx-xxxx";
    let advisory = AdvisoryRef {
        ghsa_id: placeholder.to_owned(),
        html_url: format!(
            "https://github.com/{}/security/advisories/{placeholder}",
            prepared.route.repository
        ),
        repository: prepared.route.repository.clone(),
    };
    let reply = match &prepared.reply {
        ReplyDecision::Send(to) => {
            let m = render::reply(
                &report,
                to,
                &advisory,
                &daemon::from_address(config),
                &config.reply,
                &templates,
            )?;
            serde_json::json!({
                "to": m.to.email,
                "from": m.from.email,
                "subject": m.subject,
                "message_id": m.message_id,
                "in_reply_to": m.in_reply_to,
                "references": m.references,
                "body": m.body,
            })
        }
        ReplyDecision::Suppress(reason) => serde_json::json!({ "suppressed": reason.to_string() }),
    };
    let out = serde_json::json!({
        "outcome": if matches!(prepared.classification, Classification::Report) { "advisory" } else { "ignored" },
        "classification": classification,
        "report_id": report.report_id.0,
        "repository": prepared.route.repository,
        "route_reason": prepared.route.reason.to_string(),
        "advisory": github::create_body(&prepared.draft),
        "stored_attachments": prepared.draft.stored_attachments.iter().map(|a| &a.file_name).collect::<Vec<_>>(),
        "reply": reply,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

fn status(config: &Config, state: Option<&str>, limit: usize) -> Result<ExitCode> {
    let state = match state {
        None => None,
        Some(s) => Some(
            State::ALL
                .into_iter()
            .find(|st| st.as_str() == s)
            .with_context(|| {
                format!("unknown state `{s}`: use seen, advisory_created, acknowledged, filed, ignored, quarantined or held")
            })?,
        ),
    };
    let journal = Journal::open(&config.state_dir)?;
    let entries = journal.recent(limit, state)?;
    println!(
        "{:<17} {:<12} {:<28} {:<20} {:<10} {:<16} {:<24} last error / outcome",
        "received", "report", "repository", "ghsa", "github", "state", "reply"
    );
    for e in entries {
        let reply = match (&e.reply, &e.reply_to) {
            (Some(r), Some(to)) if r == "sent" => format!("sent to {to}"),
            (Some(r), _) => r.clone(),
            (None, _) => "-".into(),
        };
        println!(
            "{:<17} {:<12} {:<28} {:<20} {:<10} {:<16} {:<24} {}",
            e.first_seen_at.format("%Y-%m-%d %H:%M"),
            e.report_id.0.chars().take(12).collect::<String>(),
            e.repository.as_deref().unwrap_or("-"),
            e.ghsa_id.as_deref().unwrap_or("-"),
            e.github_state.as_deref().unwrap_or("-"),
            if e.thread_of.is_some() {
                format!("{} (follow-up)", e.state.as_str())
            } else {
                e.state.as_str().to_owned()
            },
            reply,
            e.last_error
                .as_deref()
                .or(e.outcome.as_deref())
                .unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}
