//! A TCP proxy on loopback between the daemon and a server, to cut or refuse
//! connections the way a flaky network or a restarting server would.

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Accept and close at once, like a server that is down.
    Refuse,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    live: Arc<Mutex<Vec<AbortHandle>>>,
    accepted: Arc<Mutex<usize>>,
    acceptor: AbortHandle,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("bound").port();
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let live: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accepted: Arc<Mutex<usize>> = Arc::default();
        let (m, l, a) = (mode.clone(), live.clone(), accepted.clone());
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                *a.lock().unwrap() += 1;
                if *m.lock().unwrap() == Mode::Refuse {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                l.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            port,
            mode,
            live,
            accepted,
            acceptor,
        }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every connection now open, mid-command or mid-IDLE.
    pub fn cut_all(&self) {
        for task in self.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Sets what happens to new connections.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut_all();
    }
}
