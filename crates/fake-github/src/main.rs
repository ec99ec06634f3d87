//! `fake-github`: runs the fake GitHub advisory API as a process for the local dev stack
//! and end-to-end tests.
//!
//! ```text
//! fake-github --listen 127.0.0.1:0 --port-file PATH --token TOKEN --repo owner/name [--repo ...]
//! ```
//!
//! Binds, then writes the bound port (decimal, newline) to `--port-file` atomically
//! (temp file + rename), logs one line per request to stderr, and runs until SIGTERM or
//! SIGINT. `GET /_fake/advisories` shows every stored advisory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use fake_github::{FakeGitHub, FakeOptions};

/// A fake of GitHub's repository security-advisory API (loopback only).
#[derive(Debug, Parser)]
#[command(name = "fake-github", version)]
struct Args {
    /// Address to listen on; must be a loopback address. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// File to write the bound port to, once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// The token clients must send (`Authorization: Bearer TOKEN`).
    #[arg(long)]
    token: String,
    /// A repository that exists, `owner/name`; repeat for more.
    #[arg(long = "repo", required = true)]
    repos: Vec<String>,
    /// The login of the token's user.
    #[arg(long, default_value = "advisory-bridge-bot")]
    login: String,
    /// Requests per hour before the fake answers 403 like GitHub's primary rate limit.
    #[arg(long, default_value_t = 5000)]
    rate_limit: u32,
}

fn write_port_file(path: &Path, port: u16) -> anyhow::Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("--port-file {} has no file name", path.display()))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, format!("{port}\n"))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen {} is not a loopback address; the fake has no real security and must only listen on 127.0.0.1 or ::1",
            args.listen
        );
    }
    let handle = FakeGitHub::start_on(
        FakeOptions {
            token: args.token,
            repos: args.repos,
            login: args.login,
            rate_limit: args.rate_limit,
            ..FakeOptions::default()
        },
        args.listen,
    )
    .await
    .context("cannot start the fake GitHub")?;
    tracing::info!(url = %handle.url(), "fake GitHub listening");
    if let Some(path) = &args.port_file {
        write_port_file(path, handle.addr().port())?;
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        result = tokio::signal::ctrl_c() => {
            result.context("cannot wait for SIGINT")?;
            tracing::info!("SIGINT: stopping");
        }
    }
    handle.shutdown().await;
    Ok(())
}
