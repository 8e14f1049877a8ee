//! What the server did, as values: each accepted text, each stored file and
//! the end of each connection. Services publish them on a broadcast channel;
//! anything inside the process can watch (tests observe the server through
//! it rather than through log lines). Nothing waits for a watcher: with no
//! receiver, or a receiver that lags, events are dropped, never queued
//! without bound.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::message::{AlertCode, StreamId};

/// Events kept for a receiver that has not read them yet.
const CAPACITY: usize = 1024;

/// One thing the server did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A text was accepted and acknowledged.
    Text {
        /// The sender, as its certificate and key proof verified it.
        device: String,
        /// Its stream.
        stream: StreamId,
        /// The text.
        text: Arc<str>,
    },
    /// A file was verified and stored.
    FileStored {
        /// The sender.
        device: String,
        /// Its stream.
        stream: StreamId,
        /// The name the device proposed.
        name: String,
        /// The name it was stored under.
        stored_as: String,
        /// Its size in bytes.
        size: u64,
    },
    /// A connection ended.
    Closed {
        /// The peer's address.
        peer: SocketAddr,
        /// The device, once it had proven its identity.
        device: Option<String>,
        /// How it ended.
        ending: Ending,
    },
}

/// How a connection ended, from the server's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `ENDD` both ways, then the device closed.
    Clean,
    /// The server ended it with this alert (sent as far as the peer would
    /// take it: a peer that does not read may never see it).
    Alert(AlertCode),
    /// The device ended it with an alert; `authenticated` is false for a
    /// plaintext alert (before keys, or one the record layer could not
    /// authenticate).
    PeerAlert {
        /// The alert.
        code: AlertCode,
        /// Whether it arrived in a protected record.
        authenticated: bool,
    },
    /// The connection ended without `ENDD`.
    Truncated,
    /// The transport failed; no alert could be sent.
    Failed,
}

impl Ending {
    /// How a session error ends the connection.
    #[must_use]
    pub fn of(e: &crate::session::SessionError) -> Self {
        if let Some((code, authenticated)) = e.peer_alert() {
            return Self::PeerAlert {
                code,
                authenticated,
            };
        }
        match e {
            crate::session::SessionError::Truncated => Self::Truncated,
            other => other.alert().map_or(Self::Failed, Self::Alert),
        }
    }
}

/// The sending side of the event channel; cheap to clone.
#[derive(Debug, Clone)]
pub struct Events(broadcast::Sender<Event>);

impl Default for Events {
    fn default() -> Self {
        Self(broadcast::channel(CAPACITY).0)
    }
}

impl Events {
    /// Publishes `event` to every current watcher.
    pub fn publish(&self, event: Event) {
        // No receiver is not an error: nobody is watching.
        let _ = self.0.send(event);
    }

    /// A new watcher, which sees the events published from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}
