//! A TCP proxy on 127.0.0.1 that can drop every connection through it, as a network failure
//! would, while still accepting new ones.

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

pub struct Proxy {
    pub port: u16,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    /// Forwards every connection to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let connections = Arc::new(Mutex::new(Vec::<AbortHandle>::new()));
        let accepting = tokio::spawn({
            let connections = connections.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let piping = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    if let Ok(mut open) = connections.lock() {
                        open.push(piping.abort_handle());
                    }
                }
            }
        });
        Self {
            port,
            connections,
            accepting,
        }
    }

    /// Closes every connection open through the proxy.
    pub fn cut(&self) -> usize {
        let mut open = self.connections.lock().expect("lock");
        let cut = open.iter().filter(|c| !c.is_finished()).count();
        for connection in open.drain(..) {
            connection.abort();
        }
        cut
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

/// `url` (an AMQP URL) with its host and port replaced by `127.0.0.1:port`; and the
/// `host:port` it named (5672 when it names no port).
pub fn through(url: &str, port: u16) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, address) = match authority.rsplit_once('@') {
        Some((credentials, address)) => (format!("{credentials}@"), address),
        None => (String::new(), authority),
    };
    let upstream = if address.contains(':') {
        address.to_owned()
    } else {
        format!("{address}:5672")
    };
    (
        format!("{scheme}://{credentials}127.0.0.1:{port}/{path}"),
        upstream,
    )
}
