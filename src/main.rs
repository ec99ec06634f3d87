//! The `advisory-bridge` command line: parse arguments, load config, hand off.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tracing::{info, warn};

use advisory_bridge::classify::{Classification, ReplyDecision};
use advisory_bridge::config::{Config, Resolved, from_address};
use advisory_bridge::daemon::{Daemon, Mode};
use advisory_bridge::journal::{Entry, Journal, Reply, State};
use advisory_bridge::mail::clean::single_line;
use advisory_bridge::metrics::{self, Metrics};
use advisory_bridge::openpgp::Encryption;
use advisory_bridge::render::{self, AdvisoryRef, MarkerKey, Templates};
use advisory_bridge::{github, pipeline, reply, source};

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
    Check {
        /// Where secrets written as `/run/credentials/<unit>/NAME` are read from when
        /// run outside the service: `$CREDENTIALS_DIRECTORY` when set, else this folder.
        #[arg(long, default_value = advisory_bridge::config::DEFAULT_CREDENTIALS_DIR)]
        credentials_dir: PathBuf,
    },
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
        /// Print one JSON object per report instead of the table.
        #[arg(long)]
        json: bool,
        /// Print the wide table (full repository, GitHub state, reply address, error
        /// on one line) instead of the one that fits 100 columns.
        #[arg(long, conflicts_with = "json")]
        long: bool,
    },
    /// Our OpenPGP key (`[pgp]`).
    Pgp {
        /// What to do with it.
        #[command(subcommand)]
        command: PgpCommand,
    },
}

/// `pgp` subcommands.
#[derive(Subcommand)]
enum PgpCommand {
    /// Print our public key (armoured) and a `security.txt` snippet that points to it.
    Export {
        /// Where secrets written as `/run/credentials/<unit>/NAME` are read from when
        /// run outside the service: `$CREDENTIALS_DIRECTORY` when set, else this folder.
        #[arg(long, default_value = advisory_bridge::config::DEFAULT_CREDENTIALS_DIR)]
        credentials_dir: PathBuf,
    },
}

/// Libraries whose debug and trace output carries protocol lines: async-imap logs every
/// command and answer, LOGIN with the password and whole message bodies included. They
/// are capped at `info` whatever `ADVISORY_BRIDGE_LOG` says, so no level ever writes a
/// secret or a report into the logs.
const WIRE_LOGGERS: &[&str] = &["async_imap", "imap_proto"];

/// Libraries that log every failed request as an ERROR of their own (octocrab: "failed
/// with status 502"), which the daemon already classifies and logs in its own words: a
/// WARN with the retry for a transient blip, an ERROR only for what needs a person. They
/// are silent unless `ADVISORY_BRIDGE_LOG` names them.
const DUPLICATING_LOGGERS: &[&str] = &["octocrab"];

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter =
        EnvFilter::try_from_env("ADVISORY_BRIDGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let asked = std::env::var("ADVISORY_BRIDGE_LOG").unwrap_or_default();
    let wire = WIRE_LOGGERS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |t, target| t.with_target(*target, LevelFilter::INFO),
    );
    let wire = DUPLICATING_LOGGERS
        .iter()
        .filter(|target| !asked.contains(*target))
        .fold(wire, |t, target| t.with_target(*target, LevelFilter::OFF));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Under systemd the journal adds its own timestamps.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        tracing_subscriber::registry()
            .with(layer.without_time().with_filter(filter).with_filter(wire))
            .init();
    } else {
        tracing_subscriber::registry()
            .with(layer.with_filter(filter).with_filter(wire))
            .init();
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
            // Once: the log and this line both reach stderr (and the journal).
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
        Command::Check { credentials_dir } => {
            let mut config = config;
            config.credentials_dir = Some(credentials_dir);
            check(config).await
        }
        Command::Preview { file } => preview(&config, &file),
        Command::Status {
            state,
            limit,
            json,
            long,
        } => {
            let format = match (json, long) {
                (true, _) => StatusFormat::Json,
                (_, true) => StatusFormat::Long,
                _ => StatusFormat::Short,
            };
            status(&config, state.as_deref(), limit, format).await
        }
        Command::Pgp {
            command: PgpCommand::Export { credentials_dir },
        } => {
            let mut config = config;
            config.credentials_dir = Some(credentials_dir);
            pgp_export(&config)
        }
    }
}

/// `pgp export`: the public key and the `security.txt` lines that point to it.
fn pgp_export(config: &Config) -> Result<ExitCode> {
    let Some(keys) = config.pgp_keys()? else {
        anyhow::bail!(
            "no [pgp] section in {}: there is no key to export",
            config.path.display()
        );
    };
    let key_url = config.pgp.as_ref().and_then(|p| p.key_url.clone());
    print!("{}", keys.public_armored());
    println!();
    println!("# security.txt (RFC 9116), e.g. /.well-known/security.txt:");
    println!("Contact: mailto:{}", config.smtp.from_address.trim());
    println!(
        "Encryption: {}",
        key_url
            .as_deref()
            .unwrap_or("(publish the key above and put its URL here)")
    );
    println!("Policy: {}", config.reply.policy_url);
    println!("# RFC 9116 also requires Expires: (a date at most a year ahead).");
    eprintln!("fingerprint: {}", keys.fingerprint());
    Ok(ExitCode::SUCCESS)
}

async fn run(config: Config, mode: Mode) -> Result<ExitCode> {
    let metrics = Arc::new(Metrics::new());
    if let Some(listen) = &config.metrics.listen {
        metrics::serve(listen, metrics.clone())
            .await
            .with_context(|| format!("cannot serve metrics on {listen} (metrics.listen)"))?;
    }
    let mut daemon = Daemon::new(config, metrics.clone()).await?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("stopping");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let _ = tx.send(true);
    });
    let summary = daemon.run(mode, rx).await?;
    info!(
        created = metrics.advisories_created.get(),
        quarantined = metrics.quarantined.get(),
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
    if let Some(warning) = unreadable_for_the_service(&config.path) {
        println!("warn    {warning}");
    }
    report(
        "reply template",
        Templates::load(&config.reply)
            .map(|_| ())
            .map_err(Into::into),
    );
    report(
        "state directory",
        check_state_dir(&config.state_dir, config.journal.url.is_none()).await,
    );
    if config.journal.url.is_some() {
        let target = config.journal_target();
        let location = config.journal.url.clone().unwrap_or_default();
        let inspected = match target {
            Ok(Some(t)) => tokio::task::spawn_blocking(move || {
                advisory_bridge::journal::pg::inspect(&t).map(|i| (i, t.tls.is_some()))
            })
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r.map_err(anyhow::Error::from)),
            Ok(None) => Err(anyhow::anyhow!("no [journal] url")),
            Err(e) => Err(e.into()),
        };
        let latest = Journal::schema_version() as i64;
        let verdict = inspected.and_then(|(i, tls)| {
            let how = if tls { "TLS" } else { "plain text, loopback" };
            match i.version {
                Some(v) if v > latest => Err(anyhow::anyhow!(
                    "schema version {v} is newer than this release's {latest}; upgrade this instance"
                )),
                Some(v) if v < latest => {
                    println!("info    journal schema version {v}: the next start migrates it to {latest}");
                    Ok((i.instances, how))
                }
                Some(_) => Ok((i.instances, how)),
                None => {
                    println!("info    journal database is empty: the first start creates the journal (schema {latest})");
                    Ok((i.instances, how))
                }
            }
        });
        match verdict {
            Ok((instances, how)) => {
                report(
                    &format!("journal {location} ({how}, schema {latest})"),
                    Ok(()),
                );
                if instances.is_empty() {
                    println!("info    no instance registered yet");
                }
                for i in instances {
                    println!(
                        "info    instance {} (claim folder {}): last lease renewal {}, {} {}",
                        i.name,
                        i.claim_folder,
                        i.renewed_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        if i.expired {
                            "lease ran out at"
                        } else {
                            "lease until"
                        },
                        i.lease_until
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    );
                }
            }
            Err(e) => report(&format!("journal {location}"), Err(e)),
        }
    }
    if config.pgp.is_some() {
        let keys = config.pgp_keys().map_err(anyhow::Error::from);
        let what = match &keys {
            Ok(Some(k)) => format!("OpenPGP key {}", k.fingerprint()),
            _ => "OpenPGP key".to_owned(),
        };
        report(&what, keys.map(|_| ()));
    }
    let resolved = Resolved::new(config.clone());
    let imap = async {
        let resolved = resolved.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut session = source::ImapSource::open(&resolved.imap).await?;
        let outcome = check_imap(&mut session, resolved).await;
        let _ = session.logout().await;
        outcome
    };
    report(
        &format!("IMAP {}:{}", config.imap.host, config.imap.port()),
        imap.await,
    );
    let smtp = async {
        let settings = &resolved.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?.smtp;
        let mailer = reply::Mailer::new(settings)?;
        mailer.check().await?;
        Ok(())
    };
    report(
        &format!("SMTP {}:{}", config.smtp.host, config.smtp.port()),
        smtp.await,
    );
    match resolved
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|r| github::GitHub::new(&r.github).map_err(Into::into))
    {
        Ok(gh) => {
            // One line per owner (how it authenticates, or why it cannot), then one
            // line per repository that cannot be read or written; changes nothing.
            let mut owners: Vec<&str> = config.repositories.iter().map(|r| r.owner()).collect();
            owners.sort_unstable_by_key(|o| o.to_ascii_lowercase());
            owners.dedup_by_key(|o| o.to_ascii_lowercase());
            for owner in owners {
                let repos: Vec<&str> = config
                    .repositories
                    .iter()
                    .filter(|r| r.owner().eq_ignore_ascii_case(owner))
                    .map(|r| r.name.as_str())
                    .collect();
                let how = match gh.describe_owner(owner).await {
                    Ok(how) => how,
                    Err(e) => {
                        report(&format!("GitHub {owner}"), Err(e.into()));
                        continue;
                    }
                };
                let mut broken = 0;
                for repo in &repos {
                    let access = async {
                        gh.check_access(repo).await?;
                        gh.check_write(repo).await
                    };
                    if let Err(e) = access.await {
                        broken += 1;
                        report(&format!("GitHub advisories of {repo}"), Err(e.into()));
                    }
                }
                if broken == 0 {
                    report(
                        &format!(
                            "GitHub {owner}: {} repositor{} with advisories read and write, through {how}",
                            repos.len(),
                            if repos.len() == 1 { "y" } else { "ies" }
                        ),
                        Ok(()),
                    );
                }
            }
            // The attachments repositories: Git data writable (a blob request that
            // fails only for its empty body).
            for repo in config.attachments.all() {
                report(
                    &format!("GitHub attachments repository {repo} (Contents: write)"),
                    gh.check_contents_write(repo).await.map_err(Into::into),
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

/// Shows what `run` would use on this server, creating nothing: its name, the
/// capabilities, the namespace, and every folder as the server names it.
async fn check_imap(session: &mut source::ImapSource, resolved: &Resolved) -> Result<()> {
    let imap = &resolved.config.imap;
    println!(
        "        server: {}",
        session.identity().unwrap_or("(no ID, no greeting text)")
    );
    let namespace = session.namespace().clone();
    println!(
        "        namespace: prefix `{}`, delimiter {}",
        namespace.prefix,
        namespace
            .delimiter
            .map_or("none (flat)".to_owned(), |d| format!("`{d}`"))
    );
    let listed = session.folders().await?;
    let state = session.prepare(&imap.mailbox, &[]).await?;
    println!(
        "        mailbox {} holds {} message(s)",
        session.resolve(&imap.mailbox),
        state.exists
    );
    println!("        uses: {}", session.describe());
    let claim = match session.claim_mode() {
        source::ClaimMode::Conditional => {
            "conditional keyword (CONDSTORE): several instances are safe"
        }
        source::ClaimMode::Plain => "plain keyword (no CONDSTORE): run one instance only",
        source::ClaimMode::MoveOnly => "move only (no custom keywords): run one instance only",
    };
    println!("        claims: {claim}");
    let claim_folder = namespace.child(&imap.processing_folder, &resolved.instance);
    let mut folders = vec![
        ("mailbox", imap.mailbox.clone()),
        ("processed_folder", imap.processed_folder.clone()),
        ("ignored_folder", imap.ignored_folder.clone()),
        ("quarantine_folder", imap.quarantine_folder.clone()),
        ("held_folder", imap.held_folder.clone()),
        ("claim folder", claim_folder),
    ];
    let special = session.special_folders().clone();
    match (&imap.sent_folder, &special.sent) {
        (Some(sent), _) => folders.push(("sent_folder", sent.clone())),
        (None, Some(sent)) => println!("        sent copies: `{sent}`, the server's \\Sent"),
        (None, None) => println!("        sent copies: none (no sent_folder, no \\Sent folder)"),
    }
    match (&imap.junk_folder, &special.junk) {
        (Some(junk), _) => folders.push(("junk_folder", junk.clone())),
        (None, Some(junk)) => println!("        spam: `{junk}`, the server's \\Junk"),
        (None, None) => println!("        spam: ignored_folder (no junk_folder, no \\Junk folder)"),
    }
    for (key, name) in folders {
        let server_name = namespace.resolve(&name);
        if server_name.eq_ignore_ascii_case("INBOX") || listed.iter().any(|l| l.name == server_name)
        {
            println!("        {key}: `{server_name}` exists");
            continue;
        }
        let verdict = may_create(session, &namespace, &listed, &server_name)
            .await
            .map_err(|why| {
                anyhow::anyhow!("folder `{server_name}` ({key}) is missing and {why}")
            })?;
        println!("        {key}: `{server_name}` missing; {verdict}");
    }
    Ok(())
}

/// Whether `run` may create the missing folder `name`, as far as the server tells
/// beforehand: the parent must take children (else `Err` says why not), and with `ACL`
/// our rights on the nearest existing parent should include creating folders.
async fn may_create(
    session: &mut source::ImapSource,
    namespace: &source::Namespace,
    listed: &[source::Listed],
    name: &str,
) -> std::result::Result<String, String> {
    let Some(delimiter) = namespace.delimiter else {
        if name.contains('.') || name.contains('/') {
            return Err(
                "needs a hierarchy, but the server has none; use a name without `.`".into(),
            );
        }
        return Ok("`run` creates it (the server cannot say beforehand whether it may)".into());
    };
    // The nearest existing ancestor: `INBOX.Processing` for `INBOX.Processing.mail1`.
    let mut parent = name;
    let ancestor = loop {
        match parent.rfind(delimiter) {
            Some(at) => parent = &parent[..at],
            None => break None,
        }
        if let Some(found) = listed.iter().find(|l| l.name == parent) {
            break Some(found);
        }
        if parent.eq_ignore_ascii_case("INBOX") {
            break listed.iter().find(|l| l.name.eq_ignore_ascii_case("INBOX"));
        }
    };
    if let Some(ancestor) = ancestor
        && ancestor.no_inferiors
    {
        return Err(format!(
            "cannot be created: `{}` takes no child folders (\\Noinferiors)",
            ancestor.name
        ));
    }
    let Some(ancestor) = ancestor else {
        return Ok("`run` creates it (the server cannot say beforehand whether it may)".into());
    };
    match session.may_create_under(&ancestor.name).await {
        Ok(Some(true)) => Ok(format!(
            "`run` creates it (we may create folders under `{}`)",
            ancestor.name
        )),
        // Only a hint: Cyrus lets owners create under their own INBOX whatever its ACL.
        Ok(Some(false)) => Ok(format!(
            "`run` tries to create it, but the server's ACL grants no right to create \
             folders under `{}` (MYRIGHTS has no `k`); if `run` is refused, grant it",
            ancestor.name
        )),
        Ok(None) | Err(_) => {
            Ok("`run` creates it (the server cannot say beforehand whether it may)".into())
        }
    }
}

/// Why the service, which runs as a dynamic user (`DynamicUser=yes`), could not read
/// the config file at `path`, if it could not.
fn unreadable_for_the_service(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o004 == 0).then(|| {
        format!(
            "config {} has mode {:04o}: the service runs as a dynamic user and cannot read \
             it; chmod 0644 it (secrets belong in the credentials directory, not here)",
            path.display(),
            mode & 0o7777
        )
    })
}

async fn check_state_dir(dir: &Path, sqlite_journal: bool) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create state_dir {}", dir.display()))?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("state_dir {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    if sqlite_journal {
        let journal = Journal::open(dir)?;
        journal.call(|db| db.recent(1, None)).await?;
    }
    Ok(())
}

fn preview(config: &Config, file: &Path) -> Result<ExitCode> {
    let raw = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let keys = config.pgp_keys()?;
    let report = match pipeline::parse(config, keys.as_ref(), &raw) {
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
    // The real key when the daemon has made one (preview writes nothing), else a
    // throwaway one: the marker shown then differs from the one `run` would write.
    let marker = MarkerKey::load(&config.marker_key_path(), false)
        .unwrap_or_else(|_| MarkerKey::new(rand::random()));
    let prepared = pipeline::prepare(config, &marker, &report, received);
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
    if let (Classification::Report, Encryption::Unreadable { reason, .. }) =
        (&prepared.classification, &report.encryption)
    {
        // What the engine does: quarantine, and the short "could not read" note.
        let reply = match &prepared.reply {
            ReplyDecision::Send(to) => {
                let hint = advisory_bridge::openpgp::key_hint(
                    keys.as_ref(),
                    config.pgp.as_ref().and_then(|p| p.key_url.as_deref()),
                );
                let m = render::unreadable_reply(
                    &report,
                    to,
                    &from_address(config),
                    &config.reply,
                    &hint,
                );
                serde_json::json!({ "to": m.to.email, "subject": m.subject, "body": m.body })
            }
            ReplyDecision::Suppress(reason) => {
                serde_json::json!({ "suppressed": reason.to_string() })
            }
        };
        let out = serde_json::json!({
            "outcome": "quarantine",
            "reason": format!("an encrypted message that could not be read: {reason}"),
            "reply": reply,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let reply = match &prepared.reply {
        ReplyDecision::Send(to) => {
            let m = render::reply(
                &report,
                to,
                &advisory,
                &from_address(config),
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

/// How `status` prints the reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusFormat {
    /// A table that fits 100 columns, the error on a line of its own.
    Short,
    /// The wide table, one line per report.
    Long,
    /// One JSON object per report.
    Json,
}

/// Width `status` fits by default.
const STATUS_WIDTH: usize = 100;

/// `text` cut to `width` characters, ending in `…` when cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

async fn status(
    config: &Config,
    state: Option<&str>,
    limit: usize,
    format: StatusFormat,
) -> Result<ExitCode> {
    let state = match state {
        None => None,
        Some(s) => Some(State::parse(s).with_context(|| {
            let names: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown state `{s}`: use {}", names.join(", "))
        })?),
    };
    let journal = Journal::from_config(config)?;
    // A one-shot command fails rather than waits for a database that goes away.
    journal.stop_waiting();
    let entries = journal.call(move |db| db.recent(limit, state)).await?;
    let ids: Vec<_> = entries.iter().map(|e| e.report_id.clone()).collect();
    let triage = journal
        .call(move |db| {
            ids.iter()
                .map(|id| db.triage_of(id))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    // The triage line of a report: its duplicate and signals.
    let triage_line = |i: usize| -> Option<String> {
        let t = triage.get(i)?.as_ref()?;
        let (signals, dup, similarity) = (&t.signals, &t.duplicate_of, t.similarity);
        let mut parts = Vec::new();
        if let Some(d) = dup {
            parts.push(format!(
                "probably a duplicate of {d} ({:.2})",
                similarity.unwrap_or(0.0)
            ));
        }
        parts.push(format!(
            "signals: {}",
            if signals.is_empty() { "none" } else { signals }
        ));
        Some(parts.join("; "))
    };
    if format == StatusFormat::Json {
        for (i, e) in entries.iter().enumerate() {
            let mut value = status_json(e);
            if let Some(Some(t)) = triage.get(i) {
                value["signals"] = serde_json::json!(t.signals);
                value["duplicate_of"] = serde_json::json!(t.duplicate_of);
                value["similarity"] = serde_json::json!(t.similarity);
            }
            println!("{}", serde_json::to_string(&value)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let refusal = journal
        .call(|db| db.meta(advisory_bridge::mailbox::REFUSAL_META_KEY))
        .await?
        .unwrap_or_default();
    if !refusal.is_empty() {
        let line = format!("IMAP refusing: {refusal}");
        match format {
            StatusFormat::Short => {
                // Wrapped, not cut: the server's answer is the point of this line.
                let mut current = String::new();
                for word in line.split_whitespace() {
                    if !current.is_empty() && current.len() + 1 + word.len() > STATUS_WIDTH {
                        println!("{current}");
                        current = "  ".to_owned();
                    }
                    if !current.trim().is_empty() {
                        current.push(' ');
                    }
                    current.push_str(word);
                }
                println!("{current}");
            }
            _ => println!("{line}"),
        }
    }
    if format == StatusFormat::Short {
        println!(
            "{:<16} {:<8} {:<22} {:<19} {:<20} reply",
            "received", "report", "repository", "ghsa", "state"
        );
        for (i, e) in entries.into_iter().enumerate() {
            let state = match (e.thread_of.is_some(), e.github_state) {
                (true, _) => format!("{} (follow-up)", e.state.as_str()),
                (false, Some(g)) => format!("{} ({})", e.state.as_str(), g.as_str()),
                (false, None) => e.state.as_str().to_owned(),
            };
            let reply = e.reply.to_string();
            let reply = reply.split([':', ' ']).next().unwrap_or("-");
            let line = format!(
                "{:<16} {:<8} {:<22} {:<19} {:<20} {}",
                e.first_seen_at.format("%Y-%m-%d %H:%M"),
                e.report_id.0.chars().take(8).collect::<String>(),
                fit(e.repository.as_deref().unwrap_or("-"), 22),
                e.ghsa_id.as_deref().unwrap_or("-"),
                fit(&state, 20),
                if matches!(e.reply, Reply::Pending) {
                    "-"
                } else {
                    reply
                }
            );
            println!("{}", fit(&line, STATUS_WIDTH));
            if let Some(note) = e.last_error.as_deref().or(e.outcome.as_deref())
                && !note.is_empty()
            {
                println!("  {}", fit(&single_line(note), STATUS_WIDTH - 2));
            }
            if let Some(line) = triage_line(i) {
                println!("  {}", fit(&line, STATUS_WIDTH - 2));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<17} {:<12} {:<28} {:<20} {:<10} {:<16} {:<24} last error / outcome; triage",
        "received", "report", "repository", "ghsa", "github", "state", "reply"
    );
    for (i, e) in entries.into_iter().enumerate() {
        let reply = match (&e.reply, &e.reply_to) {
            (Reply::Sent, Some(to)) => format!("sent to {to}"),
            (Reply::Pending, _) => "-".into(),
            (r, _) => r.to_string(),
        };
        println!(
            "{:<17} {:<12} {:<28} {:<20} {:<10} {:<16} {:<24} {}",
            e.first_seen_at.format("%Y-%m-%d %H:%M"),
            e.report_id.0.chars().take(12).collect::<String>(),
            e.repository.as_deref().unwrap_or("-"),
            e.ghsa_id.as_deref().unwrap_or("-"),
            e.github_state.map_or("-", |s| s.as_str()),
            if e.thread_of.is_some() {
                format!("{} (follow-up)", e.state.as_str())
            } else {
                e.state.as_str().to_owned()
            },
            reply,
            [
                e.last_error
                    .as_deref()
                    .or(e.outcome.as_deref())
                    .map(str::to_owned),
                triage_line(i)
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One report as `status --json` prints it.
fn status_json(e: &Entry) -> serde_json::Value {
    serde_json::json!({
        "report_id": e.report_id.0,
        "message_id": e.message_id,
        "state": e.state.as_str(),
        "first_seen_at": e.first_seen_at.to_rfc3339(),
        "updated_at": e.updated_at.to_rfc3339(),
        "repository": e.repository,
        "route_reason": e.route_reason,
        "ghsa_id": e.ghsa_id,
        "advisory_url": e.advisory_url,
        "github_state": e.github_state.map(|s| s.as_str()),
        "cve_id": e.cve_id,
        "reply": e.reply.to_string(),
        "reply_to": e.reply_to,
        "follow_up_of": e.thread_of.as_ref().map(|t| &t.0),
        "released": e.released,
        "attempts": e.attempts,
        "next_attempt_at": e.next_attempt_at.map(|t| t.to_rfc3339()),
        "last_error": e.last_error,
        "outcome": e.outcome,
    })
}
