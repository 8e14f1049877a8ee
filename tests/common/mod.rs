//! Shared integration-test support: a real server on 127.0.0.1 port 0, a
//! tampering proxy, and log capture.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use secured::frame::{Frame, FrameCodec};
use secured::handshake::ServerConfig;
use secured::server::{Server, ServerSettings};
use secured::service::{Event, Events};
use secured::testkit::pki;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<std::io::Result<()>>,
    pub data_dir: tempfile::TempDir,
    pub events: Events,
}

impl TestServer {
    /// A watcher of the server's events from now on.
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Stops the server and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
    }
}

/// Starts a server with the test PKI and default settings.
pub async fn start_server() -> TestServer {
    start_server_with(pki().server_config(), |_| {}).await
}

/// Starts a server with `config`, letting `adjust` change the settings.
pub async fn start_server_with(
    config: ServerConfig,
    adjust: impl FnOnce(&mut ServerSettings),
) -> TestServer {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut settings = ServerSettings {
        data_dir: data_dir.path().to_owned(),
        ..ServerSettings::default()
    };
    adjust(&mut settings);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = Server::new(config, settings);
    let events = server.events().clone();
    let handle = tokio::spawn(server.run(listener, shutdown.clone()));
    TestServer {
        addr,
        shutdown,
        handle,
        data_dir,
        events,
    }
}

/// Waits (at most `within`) for the next event that `pick` selects,
/// skipping the others; `None` if none came in time.
pub async fn next_event<T>(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    within: Duration,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> Option<T> {
    tokio::time::timeout(within, async {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(e) {
                        return Some(t);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Waits for the end of the next connection and says how it ended.
pub async fn next_ending(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    within: Duration,
) -> Option<(Option<String>, secured::service::Ending)> {
    next_event(rx, within, |e| match e {
        Event::Closed { device, ending, .. } => Some((device, ending)),
        _ => None,
    })
    .await
}

/// What the proxy does to the device → server frame with a given index
/// (0 = HELO, 1 = PREM, 2 = FINI, 3 = first application record, …).
#[derive(Debug, Clone, Copy)]
pub enum Tamper {
    /// Flip one bit of the body at this byte offset (from the end if negative).
    FlipBit { frame: usize, offset: isize },
    /// Send the frame twice.
    Duplicate { frame: usize },
    /// Do not forward the frame.
    Drop { frame: usize },
    /// Swap this frame with the next one.
    SwapWithNext { frame: usize },
    /// Replace the frame with another one.
    Replace { frame: usize },
}

/// A proxy on 127.0.0.1 that forwards one connection to `target`, applying
/// `tamper` to the device → server direction and `replace` where asked.
pub struct Proxy {
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

pub async fn start_proxy(
    target: SocketAddr,
    tamper: Tamper,
    replace: impl FnMut(Frame) -> Frame + Send + 'static,
) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    let task = tokio::spawn(async move {
        let Ok((device, _)) = listener.accept().await else {
            return;
        };
        let Ok(server) = TcpStream::connect(target).await else {
            return;
        };
        let (mut d_sink, mut d_stream) = Framed::new(device, FrameCodec::new()).split();
        let (mut s_sink, mut s_stream) = Framed::new(server, FrameCodec::new()).split();
        let upstream = async move {
            let mut replace = replace;
            let mut index = 0usize;
            let mut held: Option<Frame> = None;
            while let Some(Ok(mut frame)) = d_stream.next().await {
                let i = index;
                index += 1;
                let mut out = Vec::new();
                match tamper {
                    Tamper::FlipBit { frame: at, offset } if at == i => {
                        let n = frame.body.len() as isize;
                        let pos = if offset < 0 { n + offset } else { offset };
                        if (0..n).contains(&pos) {
                            frame.body[pos as usize] ^= 0x01;
                        }
                        out.push(frame);
                    }
                    Tamper::Duplicate { frame: at } if at == i => {
                        out.push(frame.clone());
                        out.push(frame);
                    }
                    Tamper::Drop { frame: at } if at == i => {}
                    Tamper::SwapWithNext { frame: at } if at == i => held = Some(frame),
                    Tamper::Replace { frame: at } if at == i => out.push(replace(frame)),
                    _ => {
                        out.push(frame);
                        if let Some(h) = held.take() {
                            out.push(h);
                        }
                    }
                }
                for f in out {
                    if s_sink.send(f).await.is_err() {
                        return;
                    }
                }
            }
            let _ = s_sink.close().await;
        };
        let downstream = async move {
            while let Some(Ok(frame)) = s_stream.next().await {
                if d_sink.send(frame).await.is_err() {
                    return;
                }
            }
            let _ = d_sink.close().await;
        };
        tokio::join!(upstream, downstream);
    });
    Proxy { addr, task }
}

/// Captured log output of the current thread (use a current-thread runtime
/// so that the server's tasks log into it too).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Installs a JSON subscriber for this thread; keep the guard alive.
    pub fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (logs, guard)
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
    }

    /// Waits (bounded) until the logs contain `needle`.
    pub async fn wait_for(&self, needle: &str) -> bool {
        for _ in 0..200 {
            if self.text().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Collects the server's events until the next connection ends (at most
/// `within`): the texts delivered on the way, and how it ended.
pub async fn texts_until_closed(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    within: Duration,
) -> (Vec<String>, Option<secured::service::Ending>) {
    let mut texts = Vec::new();
    let ending = next_event(rx, within, |e| match e {
        Event::Text { text, .. } => {
            texts.push(text.to_string());
            None
        }
        Event::Closed { ending, .. } => Some(ending),
        _ => None,
    })
    .await;
    (texts, ending)
}
