//! Graceful shutdown of a real server on 127.0.0.1: files in flight may
//! finish within the grace period; everything else is closed with
//! `ALRT unavailable`, and nothing partial is ever kept.

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::device::RawDevice;
use common::files::varied;
use common::server::ending_of;
use common::start_server_with;
use common::store::{incoming_is_empty, stored_content, stored_files};
use common::wire::{ALRT_UNAVAILABLE, read_until_closed};
use secured::message::{AckStatus, AlertCode};
use secured::service::Ending;
use secured::testkit::pki;
use tokio::net::TcpStream;

/// Once shutdown is requested, the server stops listening. Connects again
/// and again (bounded) until a connection is refused; each connection made
/// meanwhile must be one the server still accepted and told exactly
/// `ALRT unavailable` before closing it, or one that was still in the
/// listen queue when the listener closed, reset with nothing sent.
async fn until_new_connections_are_refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a new connection failed with {e}, not refused"),
            Ok(mut stream) => match read_until_closed(&mut stream, Duration::from_secs(5)).await {
                (got, Ok(())) => assert_eq!(got, ALRT_UNAVAILABLE, "an accepted connection"),
                (got, Err(e)) => assert!(
                    e.kind() == ErrorKind::ConnectionReset && got.is_empty(),
                    "a connection from the listen queue: {e} after {got:?}"
                ),
            },
        }
        assert!(
            Instant::now() < deadline,
            "new connections still accepted after shutdown"
        );
    }
}

#[tokio::test]
async fn a_file_in_flight_finishes_within_the_grace_period() {
    let mut server = start_server_with(pki().server_config(), |s| {
        s.shutdown_grace = Duration::from_secs(10);
    })
    .await;
    let mut events = server.watch();
    let content = varied(300_000);
    let mut d = RawDevice::device1(server.addr).await;
    let (stream, ack) = d.open("late.png", content.len() as u64).await;
    assert_eq!(ack.status, AckStatus::Ok);
    d.data(stream, &content[..120_000]).await;

    // SIGTERM arrives in the middle of the file.
    server.shutdown.cancel();
    // A new device is no longer accepted.
    until_new_connections_are_refused(server.addr).await;

    d.data(stream, &content[120_000..]).await;
    // DONE, and right behind it a new OPEN, during the grace period.
    let signer = pki().device.identity();
    d.send(&common::device::done(&signer, stream, "late.png", &content))
        .await;
    d.send(&common::device::open(stream + 2, "more.png", 3))
        .await;
    assert_eq!(d.ack().await.status, AckStatus::Ok);
    // Then the session is closed: the new file is not accepted.
    d.expect_alert(AlertCode::Unavailable).await;
    assert_eq!(
        ending_of(&mut events, d.local, Duration::from_secs(5)).await,
        Some((
            Some("device-1".to_owned()),
            Ending::Alert(AlertCode::Unavailable)
        ))
    );

    let data = server.data();
    assert_eq!(stored_content(data, "device-1", "late.png"), Some(content));
    assert_eq!(stored_files(data, "device-1"), ["late.png"]);
    assert!(incoming_is_empty(data));
    // The server stops once the file is stored.
    server.stopped_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn after_the_grace_period_a_file_in_flight_is_dropped_whole() {
    let grace = Duration::from_millis(300);
    let mut server = start_server_with(pki().server_config(), |s| {
        s.shutdown_grace = grace;
    })
    .await;
    let mut events = server.watch();
    let mut d = RawDevice::device1(server.addr).await;
    let (stream, ack) = d.open("never.png", 1_000_000).await;
    assert_eq!(ack.status, AckStatus::Ok);
    d.data(stream, &[1u8; 50_000]).await;
    server.shutdown.cancel();
    let requested = Instant::now();
    // The device stalls past the grace period.
    d.expect_alert(AlertCode::Unavailable).await;
    assert!(
        requested.elapsed() >= grace,
        "closed after {:?}, within the grace period",
        requested.elapsed()
    );
    assert_eq!(
        ending_of(&mut events, d.local, Duration::from_secs(5)).await,
        Some((
            Some("device-1".to_owned()),
            Ending::Alert(AlertCode::Unavailable)
        ))
    );
    server.stopped_within(Duration::from_secs(5)).await;
    let data = server.data();
    assert!(stored_files(data, "device-1").is_empty());
    assert!(incoming_is_empty(data));
}

#[tokio::test]
async fn idle_sessions_and_handshakes_are_closed_at_once() {
    let mut server = start_server_with(pki().server_config(), |s| {
        s.shutdown_grace = Duration::from_secs(30);
    })
    .await;
    // The server accepts connections in the order they were made: once the
    // later one has completed its handshake, the first one, which sends
    // nothing, has been accepted and is in its handshake.
    let mut half_open = TcpStream::connect(server.addr).await.unwrap();
    let mut idle = RawDevice::device1(server.addr).await;
    server.shutdown.cancel();
    idle.expect_alert(AlertCode::Unavailable).await;
    let (got, ended) = read_until_closed(&mut half_open, Duration::from_secs(5)).await;
    assert_eq!(got, ALRT_UNAVAILABLE, "{ended:?}");
    assert!(ended.is_ok(), "{ended:?}");
    // Nothing is in flight, so the grace period is not waited for.
    server.stopped_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_device_that_keeps_its_socket_open_after_endd_does_not_delay_shutdown() {
    let mut server = start_server_with(pki().server_config(), |s| {
        s.shutdown_grace = Duration::from_secs(30);
    })
    .await;
    let mut events = server.watch();
    let mut device = RawDevice::device1(server.addr).await;
    // ENDD both ways, then the device neither closes nor sends.
    device.send(&secured::message::Message::Endd).await;
    assert!(matches!(
        device.recv().await,
        Ok(secured::message::Message::Endd)
    ));
    server.shutdown.cancel();
    // Both ENDDs were exchanged: the session ended cleanly, and the server
    // stops without waiting for the grace period.
    let (who, ending) = common::server::next_ending(&mut events, Duration::from_secs(5))
        .await
        .expect("the session ends");
    assert_eq!((who.as_deref(), ending), (Some("device-1"), Ending::Clean));
    server.stopped_within(Duration::from_secs(5)).await;
    drop(device);
}
