//! Resource limits against a real server on 127.0.0.1: slow and silent
//! clients, floods of connections that never speak, idle sessions.

mod common;

use std::time::{Duration, Instant};

use common::start_server_with;
use futures_util::StreamExt;
use secured::client::{ClientError, ClientSettings, DeviceClient};
use secured::frame::{FrameCodec, FrameKind};
use secured::message::{AlertCode, Message};
use secured::testkit::pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

async fn good_device(addr: std::net::SocketAddr) {
    let mut d = DeviceClient::connect(
        &addr.to_string(),
        pki().device_config(),
        ClientSettings::default(),
    )
    .await
    .expect("a good device is served");
    d.send_text("served").await.expect("text accepted");
    d.close().await.expect("clean close");
}

/// Reads until the server closes; returns the alert it sent, if any.
async fn alert_then_close(stream: TcpStream, within: Duration) -> Option<AlertCode> {
    let mut framed = Framed::new(stream, FrameCodec::new());
    let mut alert = None;
    let closed = tokio::time::timeout(within, async {
        while let Some(Ok(frame)) = framed.next().await {
            if frame.kind == FrameKind::ALRT
                && let Ok(Message::Alert(code)) = Message::decode(frame.kind, &frame.body)
            {
                alert = Some(code);
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server did not close the connection in time"
    );
    alert
}

#[tokio::test]
async fn a_slowloris_client_is_dropped_at_the_handshake_timeout() {
    let server = start_server_with(pki().server_config(), |s| {
        s.handshake_timeout = Duration::from_millis(600);
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // One byte every 100 ms of a plausible HELO header: never a whole frame in time.
    let started = Instant::now();
    let trickle = async {
        for b in b"HELO\0\0\x04\0".iter().chain([0u8; 64].iter()) {
            if stream.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest)).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "dropped after {elapsed:?}"
    );
    // What came back is exactly one plaintext alert: timeout.
    assert!(rest.starts_with(b"ALRT\0\0\0\x02\0\x5a"), "{rest:?}");
    good_device(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_silent_connections_do_not_stop_a_good_device() {
    let _ = rlimit::increase_nofile_limit(4096);
    let server = start_server_with(pki().server_config(), |_| {}).await;
    let mut silent: Vec<TcpStream> = Vec::with_capacity(1000);
    for _ in 0..1000 {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    let started = Instant::now();
    good_device(server.addr).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a good device waited {:?}",
        started.elapsed()
    );
    // The server holds at most `max_unauthenticated_per_source` (32) of
    // them from this address: the older ones were told `unavailable` and
    // closed to make room.
    let mut open = 0;
    for s in silent.iter_mut() {
        let mut rest = Vec::new();
        match tokio::time::timeout(Duration::from_millis(20), s.read_to_end(&mut rest)).await {
            Ok(_) => assert_eq!(
                rest, b"ALRT\0\0\0\x02\0\x64",
                "an evicted connection is told why"
            ),
            Err(_) => open += 1,
        }
    }
    assert!(
        open <= 32,
        "{open} silent connections still held by the server"
    );
    drop(silent);
    server.stop().await;
}

#[tokio::test]
async fn the_oldest_unauthenticated_connection_is_evicted_first() {
    let server = start_server_with(pki().server_config(), |s| {
        s.max_unauthenticated = 4;
    })
    .await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(TcpStream::connect(server.addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The fifth pending connection pushed the first one out.
    assert_eq!(
        alert_then_close(first, Duration::from_secs(2)).await,
        Some(AlertCode::Unavailable)
    );
    // The others are still waiting for their HELO.
    let mut buf = [0u8; 1];
    let still_open =
        tokio::time::timeout(Duration::from_millis(200), others[3].read(&mut buf)).await;
    assert!(still_open.is_err(), "the newest connection was closed");
    good_device(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn devices_over_the_session_limit_are_told_the_server_is_busy() {
    let server = start_server_with(pki().server_config(), |s| {
        s.max_connections = 1;
    })
    .await;
    let settings = ClientSettings {
        busy_retry_for: Duration::from_millis(300),
        ..ClientSettings::default()
    };
    let addr = server.addr.to_string();
    let mut first = DeviceClient::connect(&addr, pki().device_config(), settings.clone())
        .await
        .unwrap();
    // The slot is taken: the second device is told `unavailable` before its
    // handshake, retries for as long as it was told to, then gives up.
    let err = DeviceClient::connect(&addr, pki().device_config(), settings.clone())
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, ClientError::Busy { attempts, .. } if attempts >= 2),
        "{err}"
    );
    first.send_text("the first one is fine").await.unwrap();
    first.close().await.unwrap();
    // The slot is free again.
    tokio::time::sleep(Duration::from_millis(50)).await;
    good_device(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn an_idle_session_is_closed_with_a_timeout_alert() {
    let server = start_server_with(pki().server_config(), |s| {
        s.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut d = DeviceClient::connect(
        &server.addr.to_string(),
        pki().device_config(),
        ClientSettings::default(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let err = d.send_text("too late").await.unwrap_err();
    assert!(err.to_string().contains("timeout"), "{err}");
    server.stop().await;
}
