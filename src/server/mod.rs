//! The daemon: accepts connections, admits them to the handshake, runs one
//! task per session, and hands each message to its service
//! ([`crate::service`]).
//!
//! The listener is bound by the caller (the binary binds the configured
//! address with [`crate::net::bind`], tests bind `127.0.0.1:0`).
//!
//! Resource limits (proto-spec.md §10):
//! * connections in the handshake are bounded by [`admission`]: per source
//!   address and in all, with silent connections evicted first, random
//!   early drop under load, a short deadline for the first frame, and a
//!   device that proved its key out of reach of any of it;
//! * at most `max_connections` sessions; a device over the limit is told
//!   `ALRT unavailable` (before its handshake when the limit is already
//!   reached, so it costs no RSA operation);
//! * every wait on a peer, read or write, has a deadline (the idle
//!   timeout after the handshake): a device that stops reading is cut off
//!   like one that stops writing, and the kernel is told to reset such a
//!   connection rather than keep its unsent data;
//! * frames, records and queues are bounded in size, so one connection holds
//!   at most about 2 MiB (a frame being read, at most 24 chunks of a file
//!   queued for the disk writer, and the write buffer); an idle session
//!   holds about 25 KiB.
//!
//! Shutdown is a [`CancellationToken`]: the accept loop stops, handshakes
//! and idle sessions are closed with `ALRT unavailable`, and sessions in the
//! middle of a file may finish it within the grace period; after it, every
//! wait of every session ends at once and they are closed too (their
//! temporary files are removed). [`Server::run`] returns once every task
//! ended.

pub mod admission;
mod publish;
pub mod trust;

pub use publish::{PublishError, Published, publish};
pub use trust::{Trust, TrustHandle};

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use self::admission::{Admission, AdmissionLimits, Ticket};
use crate::handshake::HandshakeError;
use crate::handshake::ServerConfig;
use crate::index::now_ms;
use crate::message::{AlertCode, Message};
use crate::pki::CertificateAuthority;
use crate::service::enroll::EnrollContext;
use crate::service::{self, Context, Ending, Event, Events, Reply, SessionState};
use crate::session::{
    AcceptLimits, Accepted, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HELLO_TIMEOUT, IoLimits, Progress,
    Session, SessionError,
};
use crate::store::{Store, StoreLimits};
use crate::transfer::UploadLimits;

/// Operational limits of the daemon.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Limit for a whole handshake.
    pub handshake_timeout: Duration,
    /// Limit for the first frame of a connection.
    pub hello_timeout: Duration,
    /// Limit for any wait on an established session's peer: silence
    /// between messages, and a peer that does not take what is sent.
    pub idle_timeout: Duration,
    /// Most authenticated sessions at once.
    pub max_connections: usize,
    /// Most connections still in the handshake; see [`admission`].
    pub max_unauthenticated: usize,
    /// Most connections in the handshake from one source address.
    pub max_unauthenticated_per_source: usize,
    /// Connections in the handshake from which new ones may be refused at random.
    pub early_drop_start: usize,
    /// Chance, in percent, of that refusal at `early_drop_start`.
    pub early_drop_percent: u8,
    /// How long transfers in flight may go on after shutdown was requested.
    pub shutdown_grace: Duration,
    /// Where received data is stored: the index of files and their contents.
    pub data_dir: PathBuf,
    /// Limits of file uploads.
    pub uploads: UploadLimits,
    /// Quotas, uploads in flight per device, free-space reserve.
    pub storage: StoreLimits,
    /// Files the server publishes at start-up, visible to every device
    /// (proto-spec.md §13.8).
    pub publish: Vec<PathBuf>,
    /// How long events are kept for watchers that resume (proto-spec.md
    /// §13.9).
    pub notice_retention: Duration,
    /// The issuing CA with its key: enrollment and renewal (proto-spec.md
    /// §14), and a CRL the server keeps fresh. `None`: the server issues
    /// nothing.
    pub issuer: Option<Arc<CertificateAuthority>>,
    /// Lifetime of the device certificates the server issues, in days.
    pub device_validity_days: u32,
    /// The CRL file followed (and, with an issuer, kept fresh); `None`:
    /// no revocation checks.
    pub crl_path: Option<PathBuf>,
    /// Lifetime of the CRLs the server signs.
    pub crl_lifetime: Duration,
}

/// Default lifetime of the device certificates the server issues.
pub const DEFAULT_DEVICE_VALIDITY_DAYS: u32 = 30;

/// Default time events are kept: a week.
pub const DEFAULT_NOTICE_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// How often old events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How often a device's certificate is recorded again while its sessions
/// come and go (its `last_seen`).
const RECORD_DEVICE_EVERY: Duration = Duration::from_secs(3600);

impl Default for ServerSettings {
    fn default() -> Self {
        let admission = AdmissionLimits::default();
        Self {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
            idle_timeout: Duration::from_secs(300),
            max_connections: 1024,
            max_unauthenticated: admission.max_pending,
            max_unauthenticated_per_source: admission.max_pending_per_source,
            early_drop_start: admission.early_drop_start,
            early_drop_percent: admission.early_drop_percent,
            shutdown_grace: Duration::from_secs(30),
            data_dir: PathBuf::from("data"),
            uploads: UploadLimits::default(),
            storage: StoreLimits::default(),
            publish: Vec::new(),
            notice_retention: DEFAULT_NOTICE_RETENTION,
            issuer: None,
            device_validity_days: DEFAULT_DEVICE_VALIDITY_DAYS,
            crl_path: None,
            crl_lifetime: crate::revocation::DEFAULT_CRL_LIFETIME,
        }
    }
}

impl ServerSettings {
    fn admission(&self) -> AdmissionLimits {
        AdmissionLimits {
            max_pending: self.max_unauthenticated,
            max_pending_per_source: self.max_unauthenticated_per_source,
            early_drop_start: self.early_drop_start,
            early_drop_percent: self.early_drop_percent,
        }
    }
}

/// A server, before it runs: configuration, settings, and the event
/// channel anyone can watch ([`Server::events`]).
pub struct Server {
    trust: TrustHandle,
    settings: ServerSettings,
    events: Events,
}

/// Serves connections from `listener` until `shutdown` is cancelled; see
/// [`Server::run`].
///
/// # Errors
/// As [`Server::run`].
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    settings: ServerSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    Server::new(config, settings).run(listener, shutdown).await
}

impl Server {
    /// A server with this identity and these settings.
    #[must_use]
    pub fn new(config: ServerConfig, settings: ServerSettings) -> Self {
        let trust = TrustHandle::new(Trust {
            config,
            issuer: settings.issuer.clone(),
            crl: None,
        });
        Self {
            trust,
            settings,
            events: Events::default(),
        }
    }

    /// The server's certificates, keys and CRL: replace them (on SIGHUP)
    /// through this handle while the server runs.
    #[must_use]
    pub fn trust(&self) -> &TrustHandle {
        &self.trust
    }

    /// What the server does, as it happens ([`Event`]s).
    #[must_use]
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Serves connections from `listener` until `shutdown` is cancelled.
    ///
    /// The data folder is opened first: a folder of the old layout is
    /// imported, and what interrupted transfers left there is removed.
    ///
    /// # Errors
    /// The data folder cannot be used: the error wraps a
    /// [`crate::store::OpenError`]. Accept failures (such as running out of
    /// file descriptors) are logged and retried after a pause.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let (store, cleanup) = Store::open(&self.settings.data_dir, self.settings.storage.clone())
            .await
            .map_err(std::io::Error::other)?;
        if cleanup.partial_files > 0 || cleanup.orphan_blobs > 0 {
            info!(
                partial_files = cleanup.partial_files,
                orphan_blobs = cleanup.orphan_blobs,
                "removed what interrupted transfers left behind"
            );
        }
        if cleanup.imported_files > 0 {
            info!(
                files = cleanup.imported_files,
                "imported the files of the previous data folder layout into the index"
            );
        }
        for path in &self.settings.publish {
            match publish(&store, &self.trust.current().config.identity, path).await? {
                Published::Stored {
                    stored_as,
                    id,
                    event,
                } => info!(file = %path.display(), stored_as, id, event, "published"),
                Published::AlreadyThere { stored_as } => {
                    info!(file = %path.display(), stored_as, "already published");
                }
            }
        }
        let (last_event, _) = store
            .index()
            .event_bounds()
            .await
            .map_err(std::io::Error::other)?;
        let stop = CancellationToken::new();
        // Fail closed: a CRL that is there but does not verify stops the
        // server, unless it holds the issuing CA and signs a good one now.
        if let Some(path) = &self.settings.crl_path
            && path.exists()
            && !trust::load_into(&self.trust, path)
            && self.settings.issuer.is_none()
        {
            return Err(std::io::Error::other(format!(
                "the CRL {} does not verify (the log says why); replace it with one the issuing CA signed, or remove it to run without revocation",
                path.display()
            )));
        }
        let shared = Arc::new(Shared {
            trust: self.trust,
            admission: Admission::new(self.settings.admission()),
            sessions: Arc::new(Semaphore::new(self.settings.max_connections.max(1))),
            settings: self.settings,
            store,
            events: self.events,
            shutdown: shutdown.clone(),
            stop: stop.clone(),
            commits: tokio::sync::watch::Sender::new(last_event),
            recorded: std::sync::Mutex::new(std::collections::HashMap::new()),
        });
        tokio::spawn(prune_events(
            shared.store.clone(),
            shared.settings.notice_retention,
            shutdown.clone(),
        ));
        if let Some(path) = &shared.settings.crl_path {
            tokio::spawn(trust::follow_crl(
                shared.trust.clone(),
                path.clone(),
                shared.store.clone(),
                shared.settings.crl_lifetime,
                shutdown.clone(),
            ));
        }
        let tracker = TaskTracker::new();
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, provider = shared.trust.current().config.provider.name, "listening");
        }
        loop {
            let (socket, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        warn!(error = %e, "accept failed; pausing");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => break,
            };
            let Some(ticket) = shared.admit(&socket, peer) else {
                continue;
            };
            let span = info_span!(
                "conn",
                %peer,
                claimed = tracing::field::Empty,
                device = tracing::field::Empty
            );
            let shared = shared.clone();
            tracker.spawn(
                async move { serve_connection(socket, peer, ticket, &shared).await }
                    .instrument(span),
            );
        }
        // Connections the kernel already completed but nobody accepted yet
        // are told the server is going away, rather than reset unanswered.
        while let Some(Ok((socket, peer))) = listener.accept().now_or_never() {
            debug!(%peer, "connection refused: shutting down");
            let _ = socket.try_write(
                &Message::Alert(AlertCode::Unavailable)
                    .to_plain_frame()
                    .to_wire(),
            );
        }
        drop(listener);
        tracker.close();
        let grace = shared.settings.shutdown_grace;
        info!(
            sessions = tracker.len(),
            grace_secs = grace.as_secs(),
            "no longer accepting connections; letting transfers in flight finish"
        );
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(
                sessions = tracker.len(),
                "grace period over; closing the remaining sessions"
            );
            stop.cancel();
            tracker.wait().await;
        }
        info!("stopped");
        Ok(())
    }
}

/// What every connection task shares.
struct Shared {
    trust: TrustHandle,
    settings: ServerSettings,
    store: Store,
    events: Events,
    admission: Arc<Admission>,
    /// Authenticated session slots.
    sessions: Arc<Semaphore>,
    /// Graceful shutdown requested: no new work.
    shutdown: CancellationToken,
    /// The grace period is over: stop now.
    stop: CancellationToken,
    /// The newest event id committed: watches wait on it.
    commits: tokio::sync::watch::Sender<u64>,
    /// When each device certificate (name, serial) was last recorded.
    recorded: std::sync::Mutex<std::collections::HashMap<(String, String), std::time::Instant>>,
}

/// Removes events older than `retention`, now and every hour, until
/// `shutdown`.
async fn prune_events(store: Store, retention: Duration, shutdown: CancellationToken) {
    loop {
        let horizon =
            now_ms().saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
        match store.index().prune_events(horizon).await {
            Ok(0) => {}
            Ok(n) => info!(events = n, "pruned notices older than the retention time"),
            Err(e) => warn!(error = %e, "cannot prune old notices"),
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

impl Shared {
    /// Records the device's certificate in the index (the directory of
    /// devices, and the signer of its files), at most once an hour per
    /// certificate: every session would otherwise cost a synced write.
    async fn record_device(&self, peer: &crate::pki::CertifiedPeer) {
        let key = (peer.name().to_owned(), peer.serial_hex());
        let due = {
            let mut recorded = self
                .recorded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = recorded
                .get(&key)
                .is_none_or(|at| at.elapsed() >= RECORD_DEVICE_EVERY);
            if due {
                recorded.insert(key.clone(), std::time::Instant::now());
            }
            due
        };
        if !due {
            return;
        }
        if let Err(e) = self
            .store
            .index()
            .record_device(&key.0, &key.1, peer.cert_der(), now_ms())
            .await
        {
            warn!(error = %e, "cannot record the device's certificate");
            if let Ok(mut recorded) = self.recorded.lock() {
                recorded.remove(&key);
            }
        }
    }
}

impl Shared {
    /// Admits a newly accepted connection to the handshake, or refuses it
    /// on the spot with a plaintext `ALRT unavailable` (one small write
    /// into an empty socket buffer: it never blocks) and closes it.
    fn admit(&self, socket: &TcpStream, peer: SocketAddr) -> Option<Ticket> {
        let refusal = if self.sessions.available_permits() == 0 {
            Err("every session slot is taken")
        } else {
            let probe = socket.as_fd().try_clone_to_owned().ok();
            self.admission
                .admit(peer.ip(), probe)
                .map_err(|r| r.as_str())
        };
        match refusal {
            Ok(ticket) => Some(ticket),
            Err(reason) => {
                debug!(%peer, reason, "connection refused");
                let _ = socket.try_write(
                    &Message::Alert(AlertCode::Unavailable)
                        .to_plain_frame()
                        .to_wire(),
                );
                self.events.publish(Event::Closed {
                    peer,
                    device: None,
                    ending: Ending::Alert(AlertCode::Unavailable),
                });
                None
            }
        }
    }
}

/// One connection: the handshake under admission control, then the session.
async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    mut ticket: Ticket,
    shared: &Shared,
) {
    crate::net::tune(&socket, shared.settings.idle_timeout);
    debug!("connection accepted");
    let span = tracing::Span::current();
    let limits = AcceptLimits {
        hello: shared.settings.hello_timeout,
        handshake: shared.settings.handshake_timeout,
    };
    let interrupt = async {
        tokio::select! {
            () = ticket.evicted() => {}
            () = shared.shutdown.cancelled() => {}
        }
    };
    let pool = &ticket;
    let trust = shared.trust.current();
    let accepted =
        Session::accept_any(
            socket,
            trust.config.clone(),
            limits,
            interrupt,
            |step| match step {
                Progress::Hello { claimed } => {
                    span.record("claimed", claimed.name());
                    pool.hello();
                    // Before any private-key operation: a revoked device costs
                    // no RSA decryption (proto-spec.md §14.5).
                    trust
                        .check_serial(claimed.serial(), std::time::SystemTime::now())
                        .map_err(|(code, reason)| HandshakeError::Refused(code, reason))
                }
                Progress::Proven { device } => {
                    span.record("device", device.name());
                    Ok(())
                }
                // An enrolling device is not authenticated: it stays in the
                // pool of pending connections, evictable, for its whole session.
                Progress::Enrolling { name } => {
                    span.record("claimed", name);
                    Ok(())
                }
            },
        )
        .await;
    let mut session = match accepted {
        Ok(Accepted::Device(s)) => s,
        Ok(Accepted::Enrollee(mut s)) => {
            let cx = EnrollContext {
                issuer: trust.issuer.as_deref(),
                root: &trust.config.anchor,
                validity_days: shared.settings.device_validity_days,
                index: shared.store.index(),
            };
            // Until it holds a certificate it counts, and may be evicted,
            // like any connection in its handshake (proto-spec.md §10.1).
            let served = tokio::select! {
                ending = service::enroll::serve(&mut s, &cx) => Some(ending),
                () = ticket.evicted() => None,
                () = shared.shutdown.cancelled() => None,
            };
            let ending = match served {
                Some(ending) => ending,
                None => {
                    s.abort(AlertCode::Unavailable).await;
                    Ending::Alert(AlertCode::Unavailable)
                }
            };
            drop(s);
            shared.events.publish(Event::Closed {
                peer,
                device: None,
                ending,
            });
            return;
        }
        Err(e) => {
            let ending = match &e {
                SessionError::Stopped if ticket.is_evicted() => {
                    warn!("evicted to make room for a newer connection");
                    Ending::Alert(AlertCode::Unavailable)
                }
                SessionError::Stopped => {
                    debug!("shutting down during the handshake");
                    Ending::Alert(AlertCode::Unavailable)
                }
                other => {
                    warn!(error = %other, "handshake failed");
                    Ending::of(other)
                }
            };
            shared.events.publish(Event::Closed {
                peer,
                device: None,
                ending,
            });
            return;
        }
    };
    drop(trust);
    // The device proved its key: it leaves the pool of pending handshakes.
    ticket.release();
    let device = session.peer().name().to_owned();
    let ending = match shared.sessions.clone().try_acquire_owned() {
        Ok(slot) => {
            // Slot first: the write must not let a later device take it.
            shared.record_device(session.peer()).await;
            info!(serial = %session.peer().serial_hex(), "device authenticated");
            session.set_limits(IoLimits::uniform(shared.settings.idle_timeout));
            session.set_stop(shared.stop.clone());
            serve_session(&mut session, shared, slot).await
        }
        Err(_) => {
            warn!(
                max_connections = shared.settings.max_connections,
                "at capacity; refusing the session"
            );
            session.abort(AlertCode::Unavailable).await;
            Ending::Alert(AlertCode::Unavailable)
        }
    };
    if session.is_broken() {
        crate::net::reset_on_close(session.transport());
    }
    // Closed means closed: the socket goes before the event.
    drop(session);
    shared.events.publish(Event::Closed {
        peer,
        device: Some(device),
        ending,
    });
}

/// Serves an established session until it ends; returns how it ended.
async fn serve_session(
    session: &mut Session<TcpStream>,
    shared: &Shared,
    _slot: OwnedSemaphorePermit,
) -> Ending {
    let mut state = SessionState::default();
    // Revocation is checked again whenever the CRL (or the whole trust)
    // changes, and once now for a change since the handshake.
    let mut trust_changes = shared.trust.subscribe();
    trust_changes.mark_changed();
    loop {
        // Once shutdown is requested, a session goes on only while a file
        // is in flight, and never past the grace period (the stop token
        // ends every wait then).
        let draining = shared.shutdown.is_cancelled();
        let busy = state.transfer_in_progress();
        if draining && !busy {
            info!("server shutting down; closing the session");
            session.abort(AlertCode::Unavailable).await;
            return Ending::Alert(AlertCode::Unavailable);
        }
        // The device's next message, the next chunks of a download, or
        // notices for a watch, whichever is ready first: one session
        // carries all three (proto-spec.md §13.5).
        let wake = {
            let downloading = state.download.is_some();
            let watching = state.watch.is_some() && !draining;
            let download = &mut state.download;
            let watch = &mut state.watch;
            tokio::select! {
                r = session.recv() => Wake::Message(r),
                step = async {
                    match download.as_mut() {
                        Some(d) => Some(d.next().await),
                        None => None,
                    }
                }, if downloading => Wake::Download(step),
                () = async {
                    if let Some(w) = watch.as_mut() {
                        w.wake().await;
                    }
                }, if watching => Wake::Notices,
                () = shared.shutdown.cancelled(), if !draining && !busy => Wake::Shutdown,
                Ok(()) = trust_changes.changed() => Wake::Trust,
            }
        };
        let next = match wake {
            Wake::Message(r) => r,
            Wake::Download(step) => {
                if let Err(e) = send_download_step(session, &mut state, step).await {
                    return fail(session, &e).await;
                }
                continue;
            }
            Wake::Notices => {
                if let Err(e) = send_notices(session, &mut state, shared, draining).await {
                    return fail(session, &e).await;
                }
                continue;
            }
            Wake::Shutdown => continue,
            Wake::Trust => {
                let now = std::time::SystemTime::now();
                if let Err((code, reason)) = shared
                    .trust
                    .current()
                    .check_serial(session.peer().serial(), now)
                {
                    warn!(alert = %code, reason, "closing the session of a refused certificate");
                    session.abort(code).await;
                    return Ending::Alert(code);
                }
                continue;
            }
        };
        let msg = match next {
            Ok(m) => m,
            Err(e) => return fail(session, &e).await,
        };
        if let Message::Endd = msg {
            for ack in state.end() {
                if let Err(e) = session.feed(&ack).await {
                    return fail(session, &e).await;
                }
            }
            let closing =
                session.finish_close(shared.settings.idle_timeout, shared.shutdown.cancelled());
            return match closing.await {
                Ok(()) => {
                    info!("session closed");
                    Ending::Clean
                }
                Err(e) => {
                    warn!(error = %e, "the device did not end the session cleanly after ENDD");
                    Ending::of(&e)
                }
            };
        }
        let trust = shared.trust.current();
        let cx = context(session, shared, &trust, draining);
        let result = match service::dispatch(msg, &mut state, &cx).await {
            Reply::None => Ok(()),
            Reply::Send(reply) => session.send(&reply).await,
            Reply::Many(replies) => send_all(session, &replies).await,
            Reply::Close(code, reason) => {
                warn!(alert = %code, reason, "closing the session");
                session.abort(code).await;
                return Ending::Alert(code);
            }
        };
        if let Err(e) = result {
            return fail(session, &e).await;
        }
    }
}

/// What woke a session up.
enum Wake {
    /// The device's next message (or the error that ended the wait).
    Message(Result<Message, SessionError>),
    /// The download's next step.
    Download(Option<service::fetch::Next>),
    /// The watch may have notices due.
    Notices,
    /// Shutdown was requested.
    Shutdown,
    /// The certificates or the CRL changed.
    Trust,
}

/// What a service may use, for `session`.
fn context<'a>(
    session: &'a Session<TcpStream>,
    shared: &'a Shared,
    trust: &'a Trust,
    draining: bool,
) -> Context<'a> {
    Context {
        device: session.peer(),
        store: &shared.store,
        uploads: &shared.settings.uploads,
        events: &shared.events,
        commits: &shared.commits,
        draining,
        issuer: trust.issuer.as_deref(),
        validity_days: shared.settings.device_validity_days,
        provider: trust.config.provider,
    }
}

/// Feeds `messages` and flushes once.
async fn send_all(
    session: &mut Session<TcpStream>,
    messages: &[Message],
) -> Result<(), SessionError> {
    for m in messages {
        session.feed(m).await?;
    }
    session.flush().await
}

/// Sends what a download has next: data records, sealed in lockstep, or
/// its final `ACK_`.
async fn send_download_step(
    session: &mut Session<TcpStream>,
    state: &mut SessionState,
    step: Option<service::fetch::Next>,
) -> Result<(), SessionError> {
    match step {
        Some(service::fetch::Next::Data(batch)) => {
            session
                .feed_raw_batch(crate::frame::FrameKind::FILE, &batch)
                .await
        }
        Some(service::fetch::Next::Done(ack)) => {
            state.download = None;
            session.send(&ack).await
        }
        None => Ok(()),
    }
}

/// Sends the notices of the session's watch that are due.
async fn send_notices(
    session: &mut Session<TcpStream>,
    state: &mut SessionState,
    shared: &Shared,
    draining: bool,
) -> Result<(), SessionError> {
    let Some(watch) = state.watch.as_mut() else {
        return Ok(());
    };
    let notes = {
        let trust = shared.trust.current();
        let cx = context(session, shared, &trust, draining);
        watch.poll(&cx).await
    };
    match notes {
        Ok(notes) if notes.is_empty() => Ok(()),
        Ok(notes) => send_all(session, &notes).await,
        Err(e) => {
            warn!(error = %e, "cannot read the index for notices");
            // The device resumes from its last notice when it reconnects.
            Err(SessionError::Io(std::io::Error::other(
                "the index could not be read for notices",
            )))
        }
    }
}

/// Reports a session error, tells the device why when an alert applies,
/// and returns how the session ended.
async fn fail(session: &mut Session<TcpStream>, e: &SessionError) -> Ending {
    match e {
        SessionError::Truncated => warn!("session truncated: the connection closed without ENDD"),
        SessionError::Stopped => warn!("grace period over; closing the session"),
        other => match other.peer_alert() {
            Some((code, authenticated)) => {
                warn!(alert = %code, authenticated, "device sent an alert");
            }
            None => warn!(error = %other, "session failed"),
        },
    }
    if let Some(code) = e.alert() {
        session.abort(code).await;
    }
    Ending::of(e)
}
