//! A plaintext IMAP proxy on loopback that answers `NO` itself to the commands a test
//! names, forwarding everything else: a server that refuses the claim `FETCH` or the
//! body `FETCH`, on demand; optionally it also hides `\*` from `PERMANENTFLAGS`, like a
//! server that keeps no custom keywords.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// The text the proxy's refusals carry, for tests to look for in the daemon's log.
pub const REFUSAL_TEXT: &str = "injected refusal";

/// A running proxy; stops when dropped.
pub struct RefusingProxy {
    port: u16,
    refuse: Arc<Mutex<Option<String>>>,
    refused: Arc<Mutex<usize>>,
    no_keywords: Arc<Mutex<bool>>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl RefusingProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to 127.0.0.1:`target`, a plain
    /// IMAP port.
    pub async fn start(target: u16) -> RefusingProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("bound").port();
        let refuse: Arc<Mutex<Option<String>>> = Arc::default();
        let refused: Arc<Mutex<usize>> = Arc::default();
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let no_keywords: Arc<Mutex<bool>> = Arc::default();
        let (r, n, t, k) = (
            refuse.clone(),
            refused.clone(),
            tasks.clone(),
            no_keywords.clone(),
        );
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (r, n) = (r.clone(), n.clone());
                let hide = *k.lock().unwrap();
                let task = tokio::spawn(relay(client, server, r, n, hide));
                t.lock().unwrap().push(task.abort_handle());
            }
        });
        tasks.lock().unwrap().push(acceptor.abort_handle());
        RefusingProxy {
            port,
            refuse,
            refused,
            no_keywords,
            tasks,
        }
    }

    /// For connections made from now on: `\\*` is removed from `PERMANENTFLAGS`, so the
    /// client sees a server that cannot keep custom keywords.
    pub fn hide_keywords(&self) {
        *self.no_keywords.lock().unwrap() = true;
    }

    /// The port clients connect to (plain IMAP, plaintext login).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, every command line containing `pattern` (e.g. `(UID FLAGS`) gets
    /// `<tag> NO [SERVERBUG] injected refusal` from the proxy; `None` forwards all.
    pub fn refuse(&self, pattern: Option<&str>) {
        *self.refuse.lock().unwrap() = pattern.map(str::to_owned);
    }

    /// How many commands the proxy refused so far.
    pub fn refused(&self) -> usize {
        *self.refused.lock().unwrap()
    }
}

impl Drop for RefusingProxy {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    refuse: Arc<Mutex<Option<String>>>,
    refused: Arc<Mutex<usize>>,
    hide_keywords: bool,
) {
    let (client_read, client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Both directions write to the client: the server's answers and our refusals.
    let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
    let to_client = client_write.clone();
    let down = tokio::spawn(async move {
        // Line by line, so a `PERMANENTFLAGS` line can be rewritten whole; literals pass
        // as lines too.
        let mut lines = BufReader::new(&mut server_read);
        let mut line = Vec::new();
        loop {
            line.clear();
            match lines.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if hide_keywords && line.starts_with(b"* OK [PERMANENTFLAGS") {
                let text = String::from_utf8_lossy(&line)
                    .replace(" \\*", "")
                    .replace("\\* ", "");
                line = text.into_bytes();
            }
            if to_client.lock().await.write_all(&line).await.is_err() {
                break;
            }
        }
    });
    let mut lines = BufReader::new(client_read);
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let pattern = refuse.lock().unwrap().clone();
        if let Some(pattern) = pattern
            && text.contains(&pattern)
        {
            let tag = text.split_whitespace().next().unwrap_or("*").to_owned();
            *refused.lock().unwrap() += 1;
            let answer = format!("{tag} NO [SERVERBUG] {REFUSAL_TEXT} of this command\r\n");
            if client_write
                .lock()
                .await
                .write_all(answer.as_bytes())
                .await
                .is_err()
            {
                break;
            }
            continue;
        }
        if server_write.write_all(&line).await.is_err() {
            break;
        }
    }
    down.abort();
}
