//! Resource limits against a real server on 127.0.0.1: slow and silent
//! clients, floods of connections that never speak, idle sessions.

mod common;

use std::time::{Duration, Instant};

use common::wire::{ALRT_TIMEOUT, ALRT_UNAVAILABLE, exchange_helos, read_until_closed};
use common::{next_ending, start_server_with};
use secured::client::{ClientError, ClientSettings, DeviceClient};
use secured::message::AlertCode;
use secured::service::Ending;
use secured::session::SessionError;
use secured::testkit::pki;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A device that is served at once: the server does not tell it to retry.
async fn good_device(addr: std::net::SocketAddr) {
    let at_once = ClientSettings {
        busy_retry_for: Duration::ZERO,
        ..ClientSettings::default()
    };
    let mut d = DeviceClient::connect(&addr.to_string(), pki().device_config(), at_once)
        .await
        .expect("a good device is served");
    d.send_text("served").await.expect("text accepted");
    d.close().await.expect("clean close");
}

#[tokio::test]
async fn a_slowloris_client_is_dropped_at_the_handshake_timeout() {
    let server = start_server_with(pki().server_config(), |s| {
        s.handshake_timeout = Duration::from_millis(600);
        // Only the handshake's limit can end it, not the first frame's.
        s.hello_timeout = Duration::from_secs(60);
    })
    .await;
    let mut events = server.watch();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // One byte every 100 ms of a plausible HELO header: never a whole frame
    // in time (the trickle, which is the attack, would last 7.2 s).
    let started = Instant::now();
    let trickle = async {
        for b in b"HELO\0\0\x04\0".iter().chain([0u8; 64].iter()) {
            if stream.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ending = tokio::select! {
        () = trickle => None,
        ending = next_ending(&mut events, Duration::from_secs(3)) => ending,
    };
    assert_eq!(
        ending,
        Some((None, Ending::Alert(AlertCode::Timeout))),
        "the server ends the handshake at its timeout"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "dropped after {elapsed:?}"
    );
    // What came back is exactly one plaintext alert: timeout.
    let (rest, ended) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(rest, ALRT_TIMEOUT, "{ended:?}");
    good_device(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_silent_connections_do_not_stop_a_good_device() {
    let _ = rlimit::increase_nofile_limit(4096);
    // The silent connections the server holds stay held while the test
    // counts them, however slowly it runs.
    let server = start_server_with(pki().server_config(), |s| {
        s.hello_timeout = Duration::from_secs(60);
    })
    .await;
    let mut events = server.watch();
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
    // The server holds at most `max_unauthenticated_per_source` (32)
    // connections in the handshake from one address. The oldest silent ones
    // were told `unavailable` and closed to make room for the newer ones,
    // and for the good device while it was in its handshake: 969, each as
    // its own connection event says; the 31 newest are still held.
    let (mut evicted, mut served) = (0, 0);
    while evicted < 969 || served < 1 {
        match next_ending(&mut events, Duration::from_secs(5)).await {
            Some((None, Ending::Alert(AlertCode::Unavailable))) => evicted += 1,
            Some((Some(device), Ending::Clean)) if device == "device-1" => served += 1,
            other => panic!("after {evicted} evictions: {other:?}"),
        }
    }
    let mut held = 0;
    for s in silent.iter_mut() {
        let mut first = [0u8; 1];
        // An evicted connection has its alert waiting, then the end of the
        // stream; a held one has nothing to read.
        match s.try_read(&mut first) {
            Ok(1) => {
                let (rest, ended) = read_until_closed(s, Duration::from_secs(5)).await;
                assert_eq!(
                    [&first[..], &rest].concat(),
                    ALRT_UNAVAILABLE,
                    "an evicted connection is told why"
                );
                assert!(ended.is_ok(), "{ended:?}");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => held += 1,
            other => panic!("a silent connection: {other:?}"),
        }
    }
    assert_eq!(held, 31, "silent connections still held by the server");
    drop(silent);
    server.stop().await;
}

#[tokio::test]
async fn the_oldest_unauthenticated_connection_is_evicted_first() {
    let server = start_server_with(pki().server_config(), |s| {
        s.max_unauthenticated = 4;
    })
    .await;
    let mut events = server.watch();
    // The server accepts connections in the order they were made.
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // The fifth pending connection pushed the first one out …
    let (got, ended) = read_until_closed(&mut first, Duration::from_secs(5)).await;
    assert_eq!(got, ALRT_UNAVAILABLE, "{ended:?}");
    assert_eq!(
        next_ending(&mut events, Duration::from_secs(5)).await,
        Some((None, Ending::Alert(AlertCode::Unavailable)))
    );
    // … and only it: the others are still waiting for their HELO.
    for other in others {
        exchange_helos(other).await;
    }
    good_device(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn devices_over_the_session_limit_are_told_the_server_is_busy() {
    let server = start_server_with(pki().server_config(), |s| {
        s.max_connections = 1;
    })
    .await;
    let mut events = server.watch();
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
    let ClientError::Busy { attempts, .. } = err else {
        panic!("expected the server to stay busy, got {err}");
    };
    assert!(attempts >= 2, "{err}");
    // Each attempt was refused before its handshake.
    for _ in 0..attempts {
        assert_eq!(
            next_ending(&mut events, Duration::from_secs(5)).await,
            Some((None, Ending::Alert(AlertCode::Unavailable)))
        );
    }
    first.send_text("the first one is fine").await.unwrap();
    first.close().await.unwrap();
    // The slot is free again once the first session has ended.
    assert_eq!(
        next_ending(&mut events, Duration::from_secs(5)).await,
        Some((Some("device-1".to_owned()), Ending::Clean))
    );
    good_device(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn an_idle_session_is_closed_with_a_timeout_alert() {
    let server = start_server_with(pki().server_config(), |s| {
        s.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut events = server.watch();
    let mut d = DeviceClient::connect(
        &server.addr.to_string(),
        pki().device_config(),
        ClientSettings::default(),
    )
    .await
    .unwrap();
    // The device stays silent until the server ends the session.
    assert_eq!(
        next_ending(&mut events, Duration::from_secs(5)).await,
        Some((
            Some("device-1".to_owned()),
            Ending::Alert(AlertCode::Timeout)
        ))
    );
    // What the device reads next is the server's alert.
    let err = d.send_text("too late").await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Session(SessionError::PeerAlert(AlertCode::Timeout))
        ),
        "{err}"
    );
    server.stop().await;
}
