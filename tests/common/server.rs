//! A server running in this process on 127.0.0.1 port 0, and what it
//! reports through its events.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secured::handshake::ServerConfig;
use secured::server::{Server, ServerSettings};
use secured::service::{Ending, Event, Events};
use secured::testkit::pki;
use tokio::net::TcpListener;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub events: Events,
    handle: JoinHandle<std::io::Result<()>>,
    data: PathBuf,
    /// The data folder when the server made its own.
    _temp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// The data folder.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// A watcher of the server's events from now on.
    pub fn watch(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Waits (at most `within`) until the server has stopped by itself, and
    /// returns what it returned. Panics if it did not stop in time or its
    /// task panicked.
    pub async fn outcome(&mut self, within: Duration) -> std::io::Result<()> {
        tokio::time::timeout(within, &mut self.handle)
            .await
            .unwrap_or_else(|_| panic!("the server did not stop within {within:?}"))
            .expect("the server task does not panic")
    }

    /// Waits (at most `within`) until the server has stopped, and checks
    /// that it stopped without an error.
    pub async fn stopped_within(&mut self, within: Duration) {
        let result = self.outcome(within).await;
        assert!(result.is_ok(), "the server stopped with {result:?}");
    }

    /// Requests shutdown, and checks that the server stops, without an
    /// error, within ten seconds.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        self.stopped_within(Duration::from_secs(10)).await;
    }
}

/// Starts a server with the test PKI and default settings.
pub async fn start_server() -> TestServer {
    start_server_with(pki().server_config(), |_| {}).await
}

/// Starts a server with `config` on a data folder of its own, letting
/// `adjust` change the settings.
pub async fn start_server_with(
    config: ServerConfig,
    adjust: impl FnOnce(&mut ServerSettings),
) -> TestServer {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().to_owned();
    spawn(config, &data, Some(temp), adjust).await
}

/// Starts a server with the test PKI on the data folder `data` (which the
/// test keeps, say to restart a server on it), letting `adjust` change the
/// settings.
pub async fn start_server_in(data: &Path, adjust: impl FnOnce(&mut ServerSettings)) -> TestServer {
    spawn(pki().server_config(), data, None, adjust).await
}

/// Starts a server with `config` on the data folder `data`, letting
/// `adjust` change the settings.
pub async fn start_server_at(
    config: ServerConfig,
    data: &Path,
    adjust: impl FnOnce(&mut ServerSettings),
) -> TestServer {
    spawn(config, data, None, adjust).await
}

async fn spawn(
    config: ServerConfig,
    data: &Path,
    temp: Option<tempfile::TempDir>,
    adjust: impl FnOnce(&mut ServerSettings),
) -> TestServer {
    let mut settings = ServerSettings {
        data_dir: data.to_owned(),
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
        events,
        handle,
        data: data.to_owned(),
        _temp: temp,
    }
}

/// Waits (at most `within`) for the next event that `pick` selects,
/// skipping the others; `None` if none came in time. Panics if the watcher
/// fell behind and events were lost: what the test waits for may be among
/// them.
pub async fn next_event<T>(
    rx: &mut broadcast::Receiver<Event>,
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
                Err(RecvError::Lagged(n)) => panic!("the event watcher lost {n} events"),
                Err(RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Waits for the end of the next connection: the device, if it proved its
/// key, and how it ended.
pub async fn next_ending(
    rx: &mut broadcast::Receiver<Event>,
    within: Duration,
) -> Option<(Option<String>, Ending)> {
    next_event(rx, within, |e| match e {
        Event::Closed { device, ending, .. } => Some((device, ending)),
        _ => None,
    })
    .await
}

/// Waits for the end of the connection from `peer` (the address the server
/// saw it from).
pub async fn ending_of(
    rx: &mut broadcast::Receiver<Event>,
    peer: SocketAddr,
    within: Duration,
) -> Option<(Option<String>, Ending)> {
    next_event(rx, within, |e| match e {
        Event::Closed {
            peer: p,
            device,
            ending,
        } if p == peer => Some((device, ending)),
        _ => None,
    })
    .await
}

/// Collects the server's events until the next connection ends (at most
/// `within`): the texts delivered on the way, and how it ended.
pub async fn texts_until_closed(
    rx: &mut broadcast::Receiver<Event>,
    within: Duration,
) -> (Vec<String>, Option<Ending>) {
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
