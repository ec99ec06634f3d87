//! The byte stream under an IMAP session: TCP, TLS from the first byte, or TCP upgraded
//! with STARTTLS, erased into one type so a single session type serves every mode.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::ImapError;
use super::errors::{permanent, transient};
use crate::config::TlsMode;

/// Anything an IMAP session can run over.
pub(crate) trait Transport:
    AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug
{
}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug> Transport for T {}

/// The erased stream the session runs over.
pub(crate) type BoxedTransport = Box<dyn Transport>;

/// Longest line we accept from the server before TLS is up; greetings and capability
/// lists are far shorter, a longer line means we are not talking to an IMAP server.
const MAX_PLAIN_LINE: u64 = 16 * 1024;

/// Where to connect and how.
pub(crate) struct Endpoint<'a> {
    pub host: &'a str,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<&'a std::path::Path>,
    pub timeout: Duration,
}

impl Endpoint<'_> {
    /// The host without the brackets an IPv6 literal may be written with.
    fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Opens the connection and, for `implicit` and `starttls`, completes the TLS handshake.
///
/// Returns the stream and whether the server greeting has already been consumed (it has
/// after STARTTLS: the greeting came before the upgrade and no second one follows).
pub(crate) async fn open(endpoint: &Endpoint<'_>) -> Result<(BoxedTransport, bool), ImapError> {
    let server = endpoint.server();
    let tcp = step(
        endpoint.timeout,
        "connect",
        &server,
        TcpStream::connect((endpoint.bare_host(), endpoint.port)),
    )
    .await?
    .map_err(|e| transient("connect", format!("cannot connect to {server}: {e}")))?;
    // IMAP is a dialogue of short lines; Nagle's algorithm only adds latency.
    let _ = tcp.set_nodelay(true);
    match endpoint.tls {
        TlsMode::None => Ok((Box::new(tcp), false)),
        TlsMode::Implicit => Ok((Box::new(handshake(endpoint, tcp).await?), false)),
        TlsMode::Starttls => {
            let tcp = starttls(endpoint, tcp).await?;
            Ok((Box::new(handshake(endpoint, tcp).await?), true))
        }
    }
}

async fn handshake(
    endpoint: &Endpoint<'_>,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ImapError> {
    let server = endpoint.server();
    let config = crate::tls::client_config(endpoint.ca_file)
        .map_err(|e| permanent("TLS", format!("{e}; check imap.ca_file")))?;
    let name =
        rustls_pki_types::ServerName::try_from(endpoint.bare_host().to_owned()).map_err(|_| {
            permanent(
                "TLS",
                format!(
                    "`{}` is neither a host name nor an IP address; check imap.host",
                    endpoint.host
                ),
            )
        })?;
    let connector = tokio_rustls::TlsConnector::from(config);
    step(
        endpoint.timeout,
        "TLS",
        &server,
        connector.connect(name, tcp),
    )
    .await?
    .map_err(|e| {
        if crate::tls::peer_spoke_plain_text(&e) {
            return permanent(
                "TLS",
                format!(
                    "{server} does not speak TLS on this port (it answered in plain text); \
                     use its implicit-TLS port (993) or set imap.tls = \"starttls\""
                ),
            );
        }
        transient(
            "TLS",
            format!(
                "TLS handshake with {server} failed: {e}; if the server's certificate \
                     comes from a private CA, set imap.ca_file"
            ),
        )
    })
}

/// Reads the greeting, makes sure STARTTLS is offered, and sends it. Done by hand rather
/// than with async-imap because its `Client` cannot run `CAPABILITY` before login.
async fn starttls(endpoint: &Endpoint<'_>, tcp: TcpStream) -> Result<TcpStream, ImapError> {
    let server = endpoint.server();
    let mut conn = BufReader::new(tcp);
    let greeting = read_line(endpoint, &mut conn).await?;
    if greeting.starts_with("* BYE") {
        return Err(transient(
            "STARTTLS",
            format!("{server} refused the connection: {greeting}"),
        ));
    }
    if !greeting.starts_with("* OK") {
        // PREAUTH would mean a session without TLS that STARTTLS can no longer protect.
        return Err(permanent(
            "STARTTLS",
            format!("unexpected greeting from {server}: {greeting}; use tls = \"implicit\""),
        ));
    }

    let mut capabilities = capability_list(&greeting);
    if capabilities.is_none() {
        write_line(endpoint, &mut conn, "S1 CAPABILITY").await?;
        loop {
            let line = read_line(endpoint, &mut conn).await?;
            if let Some(rest) = line.strip_prefix("* CAPABILITY ") {
                capabilities = Some(rest.split_whitespace().map(str::to_owned).collect());
            } else if let Some(status) = line.strip_prefix("S1 ") {
                if !status.starts_with("OK") {
                    return Err(transient(
                        "STARTTLS",
                        format!("{server} answered CAPABILITY with: {status}"),
                    ));
                }
                break;
            }
        }
    }
    let offered = capabilities
        .unwrap_or_default()
        .iter()
        .any(|c| c.eq_ignore_ascii_case("STARTTLS"));
    if !offered {
        return Err(permanent(
            "STARTTLS",
            format!(
                "{server} does not offer STARTTLS, so the password would travel in the clear; \
                 not logging in. Use tls = \"implicit\" with the IMAPS port, or fix the server"
            ),
        ));
    }

    write_line(endpoint, &mut conn, "S2 STARTTLS").await?;
    loop {
        let line = read_line(endpoint, &mut conn).await?;
        if let Some(status) = line.strip_prefix("S2 ") {
            if !status.starts_with("OK") {
                return Err(permanent(
                    "STARTTLS",
                    format!("{server} refused STARTTLS: {status}"),
                ));
            }
            break;
        }
    }
    // Anything the server sent after its OK and before the handshake would be read as if
    // it came over TLS: a known injection trick (CVE-2011-0411 and friends).
    if !conn.buffer().is_empty() {
        return Err(transient(
            "STARTTLS",
            format!("{server} sent data before the TLS handshake; refusing the connection"),
        ));
    }
    Ok(conn.into_inner())
}

/// The capabilities in a `[CAPABILITY ...]` response code of a greeting, if present.
fn capability_list(greeting: &str) -> Option<Vec<String>> {
    let start = greeting.find("[CAPABILITY ")? + "[CAPABILITY ".len();
    let end = greeting[start..].find(']')? + start;
    Some(
        greeting[start..end]
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

async fn read_line(
    endpoint: &Endpoint<'_>,
    conn: &mut BufReader<TcpStream>,
) -> Result<String, ImapError> {
    let server = endpoint.server();
    let mut line = Vec::new();
    let read = step(
        endpoint.timeout,
        "STARTTLS",
        &server,
        (&mut *conn)
            .take(MAX_PLAIN_LINE)
            .read_until(b'\n', &mut line),
    )
    .await?
    .map_err(|e| transient("STARTTLS", format!("reading from {server} failed: {e}")))?;
    if read == 0 {
        return Err(transient(
            "STARTTLS",
            format!("{server} closed the connection"),
        ));
    }
    if !line.ends_with(b"\n") {
        return Err(transient(
            "STARTTLS",
            format!("{server} sent an overlong line; is this an IMAP server?"),
        ));
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
}

async fn write_line(
    endpoint: &Endpoint<'_>,
    conn: &mut BufReader<TcpStream>,
    line: &str,
) -> Result<(), ImapError> {
    let server = endpoint.server();
    let stream = conn.get_mut();
    let data = format!("{line}\r\n");
    step(endpoint.timeout, "STARTTLS", &server, async {
        stream.write_all(data.as_bytes()).await?;
        stream.flush().await
    })
    .await?
    .map_err(|e| transient("STARTTLS", format!("writing to {server} failed: {e}")))
}

/// Runs one network step under the timeout.
async fn step<T>(
    limit: Duration,
    operation: &'static str,
    server: &str,
    future: impl Future<Output = T>,
) -> Result<T, ImapError> {
    tokio::time::timeout(limit, future).await.map_err(|_| {
        transient(
            operation,
            format!("{server} did not answer within {} s", limit.as_secs()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::capability_list;

    #[test]
    fn capabilities_are_read_from_a_greeting_code() {
        let caps = capability_list(
            "* OK [CAPABILITY IMAP4rev1 SASL-IR STARTTLS AUTH=PLAIN] Dovecot ready.",
        )
        .unwrap();
        assert!(caps.iter().any(|c| c == "STARTTLS"));
        assert_eq!(caps.len(), 4);
    }

    #[test]
    fn a_greeting_without_a_code_has_no_capability_list() {
        assert_eq!(capability_list("* OK IMAP ready"), None);
    }
}
