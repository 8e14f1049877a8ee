//! Admission of connections that are still in the handshake: what keeps a
//! flood of connections that never complete one from locking devices out
//! (proto-spec.md §10), in the manner of OpenSSH's `MaxStartups` and
//! `PerSourceMaxStartups`.
//!
//! A connection is *pending* from `accept` until its device proves it holds
//! its key (the signature in `PREM`); then it leaves the pool, so a device
//! that has shown it is real is never evicted. Within the pool, a connection
//! that has sent a complete `HELO` with a valid certificate is *making
//! progress* and is never evicted either; the others are *evictable*,
//! judged by what waits in their socket unread (so a device whose `HELO`
//! has arrived but not been read yet is not mistaken for a silent one):
//! first those that have sent nothing at all, then those whose first bytes
//! cannot start a `HELO`, then those whose `HELO` is still arriving, oldest
//! first within each. The rules, for a new connection:
//!
//! 1. If its source address already has `max_pending_per_source` pending,
//!    the first evictable one from that address makes room; if there is
//!    none, the new connection is refused.
//! 2. If `max_pending` are pending, the first evictable one (from anywhere)
//!    makes room; if there is none, the new connection is refused.
//! 3. Otherwise, from `early_drop_start` pending on, a new connection is
//!    refused with a probability rising linearly from `early_drop_percent`
//!    to 100 % at `max_pending` (random early drop).
//!
//! A refused or evicted connection is told `ALRT unavailable`, which a
//! device answers by retrying later. A connection in the pool that stays
//! silent past the first-frame deadline is closed by its own task.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// How often, at most, a flood is reported at `warn`.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Limits of the pending pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Most connections in the handshake at once.
    pub max_pending: usize,
    /// Most connections in the handshake from one source address.
    pub max_pending_per_source: usize,
    /// Pending connections from which new ones may be refused at random.
    pub early_drop_start: usize,
    /// The chance, in percent, of refusing a new connection at
    /// `early_drop_start` pending; it rises to 100 % at `max_pending`.
    pub early_drop_percent: u8,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            max_pending: 128,
            max_pending_per_source: 32,
            early_drop_start: 64,
            early_drop_percent: 30,
        }
    }
}

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its source has too many pending connections, none of them silent.
    PerSource,
    /// The pool is full of connections making progress.
    Full,
    /// Random early drop.
    EarlyDrop,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PerSource => "too many handshakes from this address",
            Self::Full => "too many handshakes in progress",
            Self::EarlyDrop => "random early drop under load",
        }
    }
}

struct Pending {
    id: u64,
    source: IpAddr,
    hello: bool,
    evict: CancellationToken,
    /// A second handle on the connection's socket, to see whether anything
    /// arrived that its task has not read yet.
    probe: Option<std::net::TcpStream>,
}

impl Pending {
    /// How much this connection has shown it may be a device, judged from
    /// the bytes waiting in its socket that its task has not read yet:
    /// 0 = nothing at all (or the peer closed), 1 = bytes that cannot start
    /// a `HELO` frame, 2 = the start of a `HELO` frame.
    fn promise(&self) -> u8 {
        let Some(probe) = &self.probe else {
            return 0;
        };
        let mut head = [0u8; 4];
        // The socket is non-blocking (its file description is shared with
        // the connection's own handle): no data is WouldBlock, and a closed
        // peer is Ok(0); either way it has nothing to say.
        match probe.peek(&mut head) {
            Ok(n) if n > 0 => {
                if b"HELO".starts_with(&head[..n.min(4)]) {
                    2
                } else {
                    1
                }
            }
            _ => 0,
        }
    }
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Oldest first (ids increase).
    pending: Vec<Pending>,
    per_source: HashMap<IpAddr, usize>,
    refused_since_report: u64,
    evicted_since_report: u64,
    last_report: Option<Instant>,
}

impl State {
    fn remove_at(&mut self, index: usize) -> Pending {
        let p = self.pending.remove(index);
        if let Some(n) = self.per_source.get_mut(&p.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&p.source);
            }
        }
        p
    }

    /// Evicts the first evictable connection that `pick` accepts: the
    /// oldest that sent nothing; else the oldest that sent something that
    /// is not a `HELO`; else the oldest whose `HELO` is still arriving.
    fn evict_oldest_silent(&mut self, pick: impl Fn(&Pending) -> bool) -> bool {
        let mut victim: Option<(u8, usize)> = None;
        for (i, p) in self.pending.iter().enumerate() {
            if p.hello || !pick(p) {
                continue;
            }
            let promise = p.promise();
            if victim.is_none_or(|(best, _)| promise < best) {
                victim = Some((promise, i));
            }
            if promise == 0 {
                break;
            }
        }
        match victim.map(|(_, i)| i) {
            Some(index) => {
                self.remove_at(index).evict.cancel();
                self.evicted_since_report += 1;
                true
            }
            None => false,
        }
    }

    fn report(&mut self) {
        let now = Instant::now();
        if self
            .last_report
            .is_some_and(|t| now.duration_since(t) < REPORT_EVERY)
        {
            return;
        }
        self.last_report = Some(now);
        tracing::warn!(
            pending = self.pending.len(),
            refused = self.refused_since_report,
            evicted = self.evicted_since_report,
            "many connections are not completing their handshake (a flood, or a burst of devices)"
        );
        self.refused_since_report = 0;
        self.evicted_since_report = 0;
    }
}

/// The pool of pending connections.
pub(crate) struct Admission {
    limits: AdmissionLimits,
    state: Mutex<State>,
}

impl Admission {
    pub(crate) fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits: AdmissionLimits {
                max_pending: limits.max_pending.max(1),
                max_pending_per_source: limits.max_pending_per_source.max(1),
                ..limits
            },
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection from `source`, or says why not. `probe` is a
    /// second handle on its socket (see [`Pending`]); without one, the
    /// connection counts as having sent nothing.
    pub(crate) fn admit(
        self: &Arc<Self>,
        source: IpAddr,
        probe: Option<OwnedFd>,
    ) -> Result<Ticket, Refusal> {
        let probe = probe.map(std::net::TcpStream::from);
        let limits = self.limits;
        let mut st = self.lock();
        let result = Self::decide(&mut st, &limits, source);
        match result {
            Ok(()) => {
                st.next_id += 1;
                let id = st.next_id;
                let evict = CancellationToken::new();
                st.pending.push(Pending {
                    id,
                    source,
                    hello: false,
                    evict: evict.clone(),
                    probe,
                });
                *st.per_source.entry(source).or_insert(0) += 1;
                if st.evicted_since_report > 0 && st.pending.len() >= limits.max_pending {
                    st.report();
                }
                Ok(Ticket {
                    admission: self.clone(),
                    id,
                    evict,
                    released: false,
                })
            }
            Err(refusal) => {
                st.refused_since_report += 1;
                st.report();
                Err(refusal)
            }
        }
    }

    fn decide(st: &mut State, limits: &AdmissionLimits, source: IpAddr) -> Result<(), Refusal> {
        let from_source = st.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= limits.max_pending_per_source
            && !st.evict_oldest_silent(|p| p.source == source)
        {
            return Err(Refusal::PerSource);
        }
        let n = st.pending.len();
        if n >= limits.max_pending {
            if !st.evict_oldest_silent(|_| true) {
                return Err(Refusal::Full);
            }
        } else if n >= limits.early_drop_start && early_drop(limits, n) {
            return Err(Refusal::EarlyDrop);
        }
        Ok(())
    }

    fn hello(&self, id: u64) {
        let mut st = self.lock();
        if let Ok(i) = st.pending.binary_search_by_key(&id, |p| p.id) {
            st.pending[i].hello = true;
        }
    }

    fn release(&self, id: u64) {
        let mut st = self.lock();
        if let Ok(i) = st.pending.binary_search_by_key(&id, |p| p.id) {
            st.remove_at(i);
        }
    }

    /// Connections in the pool now.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

/// Whether random early drop refuses a connection with `n` pending.
fn early_drop(limits: &AdmissionLimits, n: usize) -> bool {
    let start = limits.early_drop_start;
    let span = limits.max_pending.saturating_sub(start).max(1) as u64;
    let base = u64::from(limits.early_drop_percent.min(100));
    let percent = base + (100 - base) * (n.saturating_sub(start) as u64) / span;
    let mut roll = [0u8; 2];
    if getrandom::fill(&mut roll).is_err() {
        return true;
    }
    u64::from(u16::from_be_bytes(roll)) % 100 < percent
}

/// A connection's place in the pool, released when dropped.
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    evict: CancellationToken,
    released: bool,
}

impl Ticket {
    /// The connection has sent a complete `HELO` with a valid certificate:
    /// it is no longer silent.
    pub(crate) fn hello(&self) {
        if !self.released {
            self.admission.hello(self.id);
        }
    }

    /// The device proved its key: it leaves the pool for good.
    pub(crate) fn release(&mut self) {
        if !self.released {
            self.released = true;
            self.admission.release(self.id);
        }
    }

    /// Completes when a newer connection evicted this one.
    pub(crate) fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.evict.cancelled()
    }

    /// Whether a newer connection evicted this one.
    pub(crate) fn is_evicted(&self) -> bool {
        self.evict.is_cancelled()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn limits(max: usize, per_source: usize) -> AdmissionLimits {
        AdmissionLimits {
            max_pending: max,
            max_pending_per_source: per_source,
            early_drop_start: max,
            early_drop_percent: 100,
        }
    }

    #[test]
    fn silent_connections_make_room_oldest_first() {
        let pool = Admission::new(limits(3, 3));
        let a = pool.admit(ip(1), None).unwrap();
        let b = pool.admit(ip(2), None).unwrap();
        let c = pool.admit(ip(3), None).unwrap();
        let d = pool.admit(ip(4), None).unwrap();
        assert!(a.is_evicted() && !b.is_evicted() && !c.is_evicted());
        assert_eq!(pool.pending(), 3);
        drop(d);
        assert_eq!(pool.pending(), 2);
    }

    #[test]
    fn connections_making_progress_are_never_evicted() {
        let pool = Admission::new(limits(2, 2));
        let a = pool.admit(ip(1), None).unwrap();
        a.hello();
        let b = pool.admit(ip(2), None).unwrap();
        // b is silent: the newcomer evicts b, not the older a.
        let c = pool.admit(ip(3), None).unwrap();
        assert!(!a.is_evicted() && b.is_evicted());
        c.hello();
        // Everyone left is making progress: the newcomer is refused.
        assert_eq!(pool.admit(ip(4), None).err(), Some(Refusal::Full));
        assert!(!a.is_evicted() && !c.is_evicted());
    }

    #[test]
    fn a_proven_device_leaves_the_pool() {
        let pool = Admission::new(limits(1, 1));
        let mut a = pool.admit(ip(1), None).unwrap();
        a.hello();
        assert_eq!(pool.admit(ip(2), None).err(), Some(Refusal::Full));
        a.release();
        let _b = pool.admit(ip(2), None).unwrap();
        assert!(!a.is_evicted());
    }

    #[test]
    fn one_source_is_capped_and_only_evicts_its_own() {
        let pool = Admission::new(limits(10, 2));
        let other = pool.admit(ip(9), None).unwrap();
        let a = pool.admit(ip(1), None).unwrap();
        let b = pool.admit(ip(1), None).unwrap();
        let c = pool.admit(ip(1), None).unwrap();
        assert!(a.is_evicted() && !b.is_evicted() && !c.is_evicted());
        assert!(!other.is_evicted(), "another source's connection stays");
        b.hello();
        c.hello();
        assert_eq!(pool.admit(ip(1), None).err(), Some(Refusal::PerSource));
        let _d = pool.admit(ip(2), None).unwrap();
    }

    /// An accepted connection whose peer has sent `first` (and the peer).
    fn connection(
        listener: &std::net::TcpListener,
        first: &[u8],
    ) -> (std::net::TcpStream, std::net::TcpStream) {
        use std::io::Write;

        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        client.write_all(first).unwrap();
        // Bounded wait until the bytes are in the accepted socket.
        for _ in 0..200 {
            if first.is_empty() || accepted.peek(&mut [0u8; 1]).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (accepted, client)
    }

    fn probe(s: &std::net::TcpStream) -> Option<OwnedFd> {
        use std::os::fd::AsFd;
        Some(s.as_fd().try_clone_to_owned().unwrap())
    }

    #[test]
    fn evictable_connections_go_silent_first_then_garbage_then_a_helo_in_flight() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (helo, _c1) = connection(&listener, b"HELO\0\0");
        let (garbage, _c2) = connection(&listener, b"GET / HTTP/1.1");
        let (silent, _c3) = connection(&listener, b"");
        let pool = Admission::new(limits(3, 3));
        // Oldest first: the HELO, then the garbage, then the silent one.
        let a = pool.admit(ip(1), probe(&helo)).unwrap();
        let b = pool.admit(ip(1), probe(&garbage)).unwrap();
        let c = pool.admit(ip(1), probe(&silent)).unwrap();
        let d = pool.admit(ip(1), None).unwrap();
        assert!(c.is_evicted() && !b.is_evicted() && !a.is_evicted());
        d.hello();
        let e = pool.admit(ip(2), None).unwrap();
        assert!(b.is_evicted(), "garbage goes before a HELO in flight");
        assert!(!a.is_evicted());
        e.hello();
        let _f = pool.admit(ip(2), None).unwrap();
        assert!(a.is_evicted(), "a HELO in flight goes last");
    }

    #[test]
    fn early_drop_refuses_some_between_start_and_full() {
        let pool = Admission::new(AdmissionLimits {
            max_pending: 1000,
            max_pending_per_source: 1000,
            early_drop_start: 10,
            early_drop_percent: 50,
        });
        let mut held = Vec::new();
        for i in 0..10 {
            held.push(pool.admit(ip(i), None).unwrap());
        }
        let mut refused = 0;
        for i in 0..200u8 {
            match pool.admit(ip(i), None) {
                Ok(t) => drop(t),
                Err(r) => {
                    assert_eq!(r, Refusal::EarlyDrop);
                    refused += 1;
                }
            }
        }
        // At the start of the band the chance is 50 %: far from 0 and 200.
        assert!((40..160).contains(&refused), "{refused} of 200 refused");
    }
}
