//! SMTP connections for [`crate::reply::Mailer`]: lettre's own connection type, opened on
//! a socket with `TCP_NODELAY`, and a small pool of authenticated connections.
//!
//! Why not lettre's transport and pool: lettre writes a message's body and the final
//! `.` in two writes, and its sockets keep Nagle's algorithm on, so the `.` waits for the
//! server's delayed ACK of the body (about 40 ms on Linux) on every message; lettre 0.11
//! offers no way to set the option on the sockets it opens. Everything above the socket
//! (EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA, the dot-stuffing codec, the replies) stays
//! lettre's; this module only opens sockets and keeps connections.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How the connection is secured.
#[derive(Clone)]
pub enum Security {
    /// TLS from the first byte (SMTPS): our own rustls config and the server name.
    Implicit(
        Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    ),
    /// `STARTTLS` after the greeting, with lettre's parameters.
    Starttls(TlsParameters),
    /// Plain text (loopback only; the config refuses anything else).
    None,
}

/// What it takes to open one authenticated connection.
#[derive(Clone)]
pub struct Connector {
    /// Host name or address to connect to.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS.
    pub security: Security,
    /// `AUTH` credentials and the mechanisms we offer, if the server wants a login.
    pub credentials: Option<(Credentials, Vec<Mechanism>)>,
}

/// Why a connection could not be opened or used.
#[derive(Debug)]
pub enum Failure {
    /// Before SMTP: the TCP connection or the implicit TLS handshake.
    Io(std::io::Error),
    /// From lettre: the server's reply, STARTTLS, AUTH, a garbled answer.
    Smtp(lettre::transport::smtp::Error),
}

/// Up to `max` idle authenticated connections, each reused while it was last used less
/// than `idle` ago and still answers `NOOP`.
pub struct Pool {
    connector: Connector,
    idle_limit: Duration,
    max: usize,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl Pool {
    /// A pool that opens connections with `connector`; opens none yet.
    pub fn new(connector: Connector, idle_limit: Duration, max: usize) -> Arc<Pool> {
        Arc::new(Pool {
            connector,
            idle_limit,
            max,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends one message on a pooled connection (or a new one). A connection that failed
    /// is closed, never reused.
    pub async fn send(
        self: &Arc<Self>,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), Failure> {
        let mut conn = self.checkout().await?;
        match conn.send(envelope, message).await {
            Ok(_) => {
                self.checkin(conn);
                Ok(())
            }
            Err(e) => {
                if !conn.has_broken() {
                    conn.abort().await;
                }
                Err(Failure::Smtp(e))
            }
        }
    }

    /// Opens a fresh connection, logs in and quits (for `check`).
    pub async fn test(&self) -> Result<bool, Failure> {
        let mut conn = self.connector.open().await?;
        let alive = conn.test_connected().await;
        let _ = conn.quit().await;
        Ok(alive)
    }

    async fn checkout(self: &Arc<Self>) -> Result<AsyncSmtpConnection, Failure> {
        loop {
            let candidate = {
                let mut idle = self.idle.lock().expect("the SMTP pool's lock");
                idle.pop()
            };
            let Some((mut conn, since)) = candidate else {
                return self.connector.open().await;
            };
            if since.elapsed() < self.idle_limit && conn.test_connected().await {
                return Ok(conn);
            }
            conn.abort().await;
        }
    }

    fn checkin(self: &Arc<Self>, conn: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().expect("the SMTP pool's lock");
        if idle.len() >= self.max {
            // Dropping closes the socket; the server sees a disconnect after a completed
            // transaction, which every server accepts.
            return;
        }
        idle.push((conn, Instant::now()));
        drop(idle);
        // Closes connections nobody used for `idle_limit`, so servers do not time them
        // out on their side.
        let pool = Arc::downgrade(self);
        let limit = self.idle_limit;
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            let Some(pool) = pool.upgrade() else { return };
            let stale: Vec<AsyncSmtpConnection> = {
                let mut idle = pool.idle.lock().expect("the SMTP pool's lock");
                let (stale, fresh) = std::mem::take(&mut *idle)
                    .into_iter()
                    .partition(|(_, since)| since.elapsed() >= limit);
                *idle = fresh;
                stale.into_iter().map(|(c, _)| c).collect()
            };
            for mut conn in stale {
                let _ = conn.quit().await;
            }
        });
    }
}

impl Connector {
    /// Connects (`TCP_NODELAY` on), secures and logs in.
    async fn open(&self) -> Result<AsyncSmtpConnection, Failure> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(Failure::Io)?;
        tcp.set_nodelay(true).map_err(Failure::Io)?;
        let hello = ClientId::default();
        let mut conn = match &self.security {
            Security::Implicit(config, name) => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(Failure::Io)?;
                AsyncSmtpConnection::connect_with_transport(Box::new(Tls(tls)), &hello)
                    .await
                    .map_err(Failure::Smtp)?
            }
            Security::Starttls(parameters) => {
                let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
                    .await
                    .map_err(Failure::Smtp)?;
                conn.starttls(parameters.clone(), &hello)
                    .await
                    .map_err(Failure::Smtp)?;
                conn
            }
            Security::None => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
                .await
                .map_err(Failure::Smtp)?,
        };
        if let Some((credentials, mechanisms)) = &self.credentials {
            conn.auth(mechanisms, credentials)
                .await
                .map_err(Failure::Smtp)?;
        }
        Ok(conn)
    }
}

/// An implicit-TLS stream in the shape lettre takes.
#[derive(Debug)]
struct Tls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for Tls {
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for Tls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
