//! Availability against a real server on 127.0.0.1: peers that stop
//! reading, on either side, and shutdown with such a peer connected or
//! with connections still in the handshake.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::files::outgoing;
use common::wire::{ALRT_UNAVAILABLE, exchange_helos, read_until_closed};
use common::{next_ending, start_server_with};
use secured::client::{ClientError, ClientSettings, DeviceClient};
use secured::message::{AckStatus, AlertCode, Imgx, MediaKind, Message, Secx, StreamId};
use secured::service::{Ending, Event};
use secured::session::{AcceptLimits, IoLimits, Session, SessionError};
use secured::testkit::pki;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::broadcast::error::RecvError;

/// A device connection whose kernel receive buffer is as small as the
/// kernel allows, so that what the server sends fills it at once.
async fn tiny_window(addr: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A device that finishes the handshake, then sends empty texts as fast as
/// it can and never reads. `sent` counts the records it got rid of; the
/// task ends when a write fails or after `limit`.
fn spawn_flooding_device(
    addr: std::net::SocketAddr,
    sent: Arc<AtomicU64>,
    limit: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let stream = tiny_window(addr).await;
        let mut s = Session::connect(stream, pki().device_config(), Duration::from_secs(10))
            .await
            .unwrap();
        // This device waits as long as needed: only the server's deadline is
        // under test.
        s.set_limits(IoLimits::uniform(Duration::from_secs(60)));
        let started = Instant::now();
        let mut stream_id = 1u32;
        while started.elapsed() < limit {
            let text = Message::Secx(Secx {
                stream: StreamId(stream_id),
                text: String::new(),
            });
            if s.feed(&text).await.is_err() {
                return;
            }
            stream_id += 2;
            if stream_id % 256 == 1 && s.flush().await.is_err() {
                return;
            }
            sent.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Waits (bounded) until the flooding device is stuck: its count has not
/// moved for a while, because the server no longer reads from it.
async fn wait_until_stuck(sent: &AtomicU64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = u64::MAX;
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        let now = sent.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_millis(300) && now > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the device never got stuck; it sent {last} records");
}

/// Waits for the end of the next connection while a flood of texts runs:
/// the texts overflow the watcher's buffer, and those it loses were
/// published before the end of the connection, which comes last and is
/// kept.
async fn ending_after_a_flood(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    within: Duration,
) -> Option<(Option<String>, Ending)> {
    tokio::time::timeout(within, async {
        loop {
            match rx.recv().await {
                Ok(Event::Closed { device, ending, .. }) => return Some((device, ending)),
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test]
async fn a_device_that_floods_and_never_reads_is_cut_off_within_the_idle_timeout() {
    let idle = Duration::from_secs(1);
    let server = start_server_with(pki().server_config(), |s| s.idle_timeout = idle).await;
    let mut events = server.watch();
    let sent = Arc::new(AtomicU64::new(0));
    let flood = spawn_flooding_device(server.addr, sent.clone(), Duration::from_secs(30));
    wait_until_stuck(&sent).await;
    // The server is now blocked writing ACKs that nobody reads: it must give
    // up within the idle timeout (plus scheduling).
    let stuck_at = Instant::now();
    let (device, ending) = ending_after_a_flood(&mut events, Duration::from_secs(10))
        .await
        .expect("the server ends the session");
    let after = stuck_at.elapsed();
    assert_eq!(device.as_deref(), Some("device-1"));
    assert_eq!(ending, Ending::Alert(AlertCode::Timeout));
    assert!(
        after < idle + Duration::from_secs(2),
        "cut off after {after:?}"
    );
    assert!(
        sent.load(Ordering::Relaxed) > 1000,
        "the device really flooded"
    );
    // The device's own writes fail now that the server reset the connection.
    tokio::time::timeout(Duration::from_secs(10), flood)
        .await
        .expect("the device's write fails once it is cut off")
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_on_time_with_a_device_that_never_reads() {
    let grace = Duration::from_secs(1);
    let mut server = start_server_with(pki().server_config(), |s| {
        s.idle_timeout = Duration::from_secs(60);
        s.shutdown_grace = grace;
    })
    .await;
    let sent = Arc::new(AtomicU64::new(0));
    let _flood = spawn_flooding_device(server.addr, sent.clone(), Duration::from_secs(30));
    wait_until_stuck(&sent).await;
    let requested = Instant::now();
    server.shutdown.cancel();
    // Within the grace period plus a few seconds.
    server.stopped_within(grace + Duration::from_secs(3)).await;
    assert!(
        requested.elapsed() >= grace,
        "the grace period was honoured"
    );
}

#[tokio::test]
async fn a_device_stops_waiting_for_a_server_that_never_reads() {
    // A server that accepts the handshake and the OPEN, then reads nothing.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut s = Session::accept(
            sock,
            pki().server_config(),
            AcceptLimits::default(),
            std::future::pending(),
            |_| Ok(()),
        )
        .await
        .unwrap();
        let Ok(Message::Imgx(Imgx::Open(open))) = s.recv().await else {
            panic!("expected an OPEN");
        };
        let ok = Message::Ack(secured::message::Ack {
            stream: open.stream,
            status: AckStatus::Ok,
            detail: Vec::new(),
        });
        s.send(&ok).await.unwrap();
        // Hold the connection open without reading until the test is done.
        let _ = released.await;
    });

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let size = 64u64 << 20;
    std::fs::write(&path, vec![7u8; size as usize]).unwrap();
    let settings = ClientSettings {
        reply_timeout: Duration::from_secs(1),
        ..ClientSettings::default()
    };
    let mut d = DeviceClient::connect(&addr.to_string(), pki().device_config(), settings)
        .await
        .unwrap();
    let file = outgoing(&path, "big.bin", MediaKind::Video, size);
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), d.send_file(&file, |_| {}))
        .await
        .expect("the device gives up on its own")
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Session(SessionError::Timeout {
                waiting_for: "the peer to read",
                ..
            })
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let _ = release.send(());
    server.await.unwrap();
}

#[tokio::test]
async fn connections_in_the_handshake_are_told_unavailable_at_shutdown() {
    let mut server = start_server_with(pki().server_config(), |_| {}).await;
    let mut events = server.watch();
    // A device that sent its HELO and got the server's: it is in the
    // handshake, and pauses there.
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut framed = exchange_helos(stream).await;

    server.shutdown.cancel();
    // What the device receives: exactly one plaintext alert, then the end.
    let (rest, ended) = read_until_closed(framed.get_mut(), Duration::from_secs(5)).await;
    assert_eq!(rest, ALRT_UNAVAILABLE, "{ended:?}");
    assert!(ended.is_ok(), "{ended:?}");
    let (device, ending) = next_ending(&mut events, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(device, None, "the device never proved its key");
    assert_eq!(ending, Ending::Alert(AlertCode::Unavailable));
    server.stopped_within(Duration::from_secs(5)).await;
}
