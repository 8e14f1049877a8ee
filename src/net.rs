//! TCP socket settings shared by the server and the device: a listener
//! with a backlog for bursts, and per-connection options so that the
//! kernel, too, gives up on a peer that stopped answering.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Pending connections the kernel queues before `accept`: room for a burst
/// of devices reconnecting at once (the kernel caps it at its own
/// `somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;
/// Idle time before the first keepalive probe, at most.
const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
/// Time between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the kernel drops the connection.
const KEEPALIVE_RETRIES: u32 = 5;
/// How much longer than the session the kernel waits for a peer.
const USER_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// Binds a listener on `addr` (`host:port`; the first address it resolves
/// to) with a backlog sized for bursts.
///
/// # Errors
/// The address does not resolve, or binding or listening fails.
pub async fn bind(addr: &str) -> io::Result<TcpListener> {
    let resolved = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing")
    })?;
    let socket = if resolved.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(resolved)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Sets the options every connection gets: no Nagle delay (records are
/// small and latency matters), TCP keepalive, and `TCP_USER_TIMEOUT`, so
/// the kernel drops a connection whose sent data stays unacknowledged (a
/// peer that vanished, or one that keeps a zero window) shortly after the
/// session's own `write_timeout` would have: the session's deadline fires
/// first and says what happened; the kernel's is the backstop. Failures are
/// ignored: these are refinements, and the session's deadlines still hold.
pub fn tune(stream: &TcpStream, write_timeout: Duration) {
    let sock = SockRef::from(stream);
    let _ = sock.set_tcp_nodelay(true);
    let keepalive = TcpKeepalive::new()
        .with_time(
            KEEPALIVE_TIME
                .min(write_timeout)
                .max(Duration::from_secs(1)),
        )
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    let _ = sock.set_tcp_keepalive(&keepalive);
    let _ = sock.set_tcp_user_timeout(Some(write_timeout + USER_TIMEOUT_MARGIN));
}

/// Makes closing `stream` reset the connection at once instead of leaving
/// unsent data in the kernel (for a peer that stopped reading: its backlog
/// would otherwise pin kernel memory until the retransmissions give up).
pub fn reset_on_close(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_with_options_and_connections_get_them() {
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        tune(&server, Duration::from_secs(7));
        let sock = SockRef::from(&server);
        assert!(sock.tcp_nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(12))
        );
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        reset_on_close(&server);
        assert_eq!(sock.linger().unwrap(), Some(Duration::ZERO));
        drop(client);
    }

    #[tokio::test]
    async fn unresolvable_addresses_are_errors() {
        assert!(bind("not an address").await.is_err());
    }
}
