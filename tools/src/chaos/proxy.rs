//! A TCP proxy on 127.0.0.1 between replica processes and a server, whose behaviour is switched
//! while it runs: pass bytes through, delay them, hold them, or cut every connection.
//!
//! Each connection is two pipes, one per direction. A pipe reads chunks into a short queue (so a
//! held pipe pushes back on the sender, as a stalled network does) and writes each one when the
//! mode lets it. An end of stream travels in band, after the bytes before it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Chunks a pipe reads ahead of what it has written.
const QUEUED_CHUNKS: usize = 64;
const CHUNK_BYTES: usize = 16 * 1024;

/// What the proxy does with the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward at once.
    Pass,
    /// Forward each chunk this long after it arrived, in each direction (so a round trip gains
    /// twice this).
    Slow(Duration),
    /// Forward nothing and keep every socket open until the mode changes; then forward what
    /// was held.
    Stall,
    /// Reset every open connection, and each new one as soon as it is accepted.
    Cut,
}

/// A running proxy. Dropping it stops it and resets its connections.
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    open: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, watcher) = watch::channel(Mode::Pass);
        let stop = CancellationToken::new();
        let open = Arc::new(AtomicUsize::new(0));
        let shared = Shared {
            upstream,
            mode: watcher,
            open: open.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(accept(listener, shared));
        Ok(Self {
            addr,
            mode,
            open,
            stop,
        })
    }

    /// Connections carried right now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches every connection, open or new, to `mode`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What every connection task of a proxy shares.
#[derive(Clone)]
struct Shared {
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    open: Arc<AtomicUsize>,
    stop: CancellationToken,
}

/// Counts a connection as open while it lives.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept(listener: TcpListener, shared: Shared) {
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, _)) => {
                tokio::spawn(connection(client, shared.clone()));
            }
            // Out of descriptors or the like: pause rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Carries one connection until both directions end, the mode turns to `Cut`, or the proxy stops.
async fn connection(mut client: TcpStream, shared: Shared) {
    let Shared {
        upstream,
        mut mode,
        open,
        stop,
    } = shared;
    if *mode.borrow() == Mode::Cut {
        reset(&client);
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        reset(&client);
        return;
    };
    let _open = Open::new(&open);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let ended = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pipe(client_read, server_write, mode.clone());
        let down = pipe(server_read, client_write, mode.clone());
        tokio::select! {
            _ = async { tokio::join!(up, down) } => true,
            _ = mode.wait_for(|m| *m == Mode::Cut) => false,
            _ = stop.cancelled() => false,
        }
    };
    if !ended {
        reset(&client);
        reset(&server);
    }
}

/// Makes the coming drop of `stream` send a reset instead of an orderly close.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Forwards one direction, chunk by chunk, as the mode allows; passes the end of stream on.
async fn pipe<R, W>(mut from: R, mut to: W, mut mode: watch::Receiver<Mode>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (queue, mut queued) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUED_CHUNKS);
    let read = async move {
        let mut buffer = vec![0; CHUNK_BYTES];
        while let Ok(n @ 1..) = from.read(&mut buffer).await {
            if queue
                .send((Instant::now(), buffer[..n].to_vec()))
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((arrived, chunk)) = queued.recv().await {
            if !released(arrived, &mut mode).await || to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // The end of stream is held like the bytes: a stalled peer's close is not seen either.
        if released(Instant::now(), &mut mode).await {
            let _ = to.shutdown().await;
        }
    };
    tokio::join!(read, write);
}

/// Waits until a chunk that arrived at `arrived` may be forwarded; `false` when it never may.
async fn released(arrived: Instant, mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Pass => return true,
            Mode::Cut => return false,
            Mode::Slow(delay) => tokio::select! {
                _ = tokio::time::sleep_until(arrived + delay) => return true,
                changed = mode.changed() => if changed.is_err() { return false },
            },
            Mode::Stall => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn proxied() -> (Proxy, TcpStream) {
        let proxy = Proxy::start(echo_server().await).await.expect("proxy");
        let stream = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .expect("connect");
        (proxy, stream)
    }

    /// Sends `text` and reads as many bytes back, within `limit`.
    async fn round_trip(
        stream: &mut TcpStream,
        text: &[u8],
        limit: Duration,
    ) -> io::Result<Vec<u8>> {
        stream.write_all(text).await?;
        let mut back = vec![0; text.len()];
        tokio::time::timeout(limit, stream.read_exact(&mut back)).await??;
        Ok(back)
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn pass_forwards_both_ways() {
        let (_proxy, mut stream) = proxied().await;
        let back = round_trip(&mut stream, b"hello", SECOND)
            .await
            .expect("echo");
        assert_eq!(back, b"hello");
    }

    #[tokio::test]
    async fn slow_adds_at_least_the_delay_each_way() {
        let (proxy, mut stream) = proxied().await;
        let delay = Duration::from_millis(150);
        proxy.set(Mode::Slow(delay));
        let started = Instant::now();
        let back = round_trip(&mut stream, b"slow", 5 * SECOND)
            .await
            .expect("echo");
        assert_eq!(back, b"slow");
        assert!(
            started.elapsed() >= 2 * delay,
            "took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn stall_forwards_nothing_until_released() {
        let (proxy, mut stream) = proxied().await;
        proxy.set(Mode::Stall);
        let held = round_trip(&mut stream, b"held", Duration::from_millis(300)).await;
        assert!(held.is_err(), "bytes went through a stall: {held:?}");
        proxy.set(Mode::Pass);
        let mut back = vec![0; 4];
        tokio::time::timeout(SECOND, stream.read_exact(&mut back))
            .await
            .expect("released in time")
            .expect("read");
        assert_eq!(back, b"held");
    }

    #[tokio::test]
    async fn stall_holds_a_close_too() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = listener.local_addr().expect("addr");
        // A server that closes every connection at once.
        tokio::spawn(async move { while listener.accept().await.is_ok() {} });
        let proxy = Proxy::start(upstream).await.expect("proxy");
        proxy.set(Mode::Stall);
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .expect("connect");
        let mut byte = [0; 1];
        let held = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await;
        assert!(held.is_err(), "the close went through a stall: {held:?}");
        proxy.set(Mode::Pass);
        let read = tokio::time::timeout(SECOND, stream.read(&mut byte))
            .await
            .expect("released in time");
        assert!(matches!(read, Ok(0)), "read {read:?}");
    }

    #[tokio::test]
    async fn cut_closes_open_connections_and_refuses_new_ones_until_pass() {
        let (proxy, mut stream) = proxied().await;
        round_trip(&mut stream, b"up", SECOND).await.expect("echo");
        assert_eq!(proxy.open_connections(), 1);
        proxy.set(Mode::Cut);
        let mut byte = [0; 1];
        let read = tokio::time::timeout(SECOND, stream.read(&mut byte))
            .await
            .expect("the cut ends the connection at once");
        assert!(matches!(read, Ok(0) | Err(_)), "read {read:?}");

        let mut during = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .expect("accepted");
        assert!(round_trip(&mut during, b"no", SECOND).await.is_err());

        proxy.set(Mode::Pass);
        let mut after = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .expect("connect");
        let back = round_trip(&mut after, b"again", SECOND)
            .await
            .expect("echo");
        assert_eq!(back, b"again");
    }
}
