//! Graceful shutdown of a real server on 127.0.0.1: files in flight may
//! finish within the grace period; everything else is closed with
//! `ALRT unavailable`, and nothing partial is ever kept.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestServer, start_server_with};
use secured::crypto::hash::sha256;
use secured::message::{AckStatus, AlertCode, Imgx, ImgxOpen, MediaKind, Message, StreamId};
use secured::session::{Session, SessionError};
use secured::testkit::pki;
use secured::transfer::file_digest;
use tokio::net::TcpStream;

async fn session(server: &TestServer) -> Session<TcpStream> {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    Session::connect(stream, pki().device_config(), Duration::from_secs(10))
        .await
        .unwrap()
}

fn open(name: &str, size: u64) -> Message {
    Message::Imgx(Imgx::Open(ImgxOpen {
        stream: StreamId(1),
        kind: MediaKind::Image,
        size,
        name: name.into(),
        content_type: "image/png".into(),
    }))
}

fn data(chunk: &[u8]) -> Message {
    Message::Imgx(Imgx::Data {
        stream: StreamId(1),
        chunk: bytes::Bytes::copy_from_slice(chunk),
    })
}

fn done(name: &str, content: &[u8]) -> Message {
    let digest = file_digest(
        MediaKind::Image,
        content.len() as u64,
        name,
        "image/png",
        &sha256(&[content]),
    );
    Message::Imgx(Imgx::Done {
        stream: StreamId(1),
        signature: pki()
            .device
            .identity()
            .key()
            .pss_sign_digest(&digest)
            .unwrap(),
    })
}

async fn expect(s: &mut Session<TcpStream>, status: AckStatus) {
    match tokio::time::timeout(Duration::from_secs(5), s.recv())
        .await
        .unwrap()
    {
        Ok(Message::Ack(a)) => assert_eq!(a.status, status, "{a:?}"),
        other => panic!("expected ACK_ {status}, got {other:?}"),
    }
}

async fn expect_unavailable(s: &mut Session<TcpStream>) {
    match tokio::time::timeout(Duration::from_secs(5), s.recv())
        .await
        .unwrap()
    {
        Err(SessionError::PeerAlert(AlertCode::Unavailable)) => {}
        other => panic!("expected ALRT unavailable, got {other:?}"),
    }
}

fn incoming_is_empty(data: &Path) -> bool {
    std::fs::read_dir(data.join("device-1/.incoming")).map_or(true, |d| d.count() == 0)
}

#[tokio::test]
async fn a_file_in_flight_finishes_within_the_grace_period() {
    let server = start_server_with(pki().server_config(), |s| {
        s.shutdown_grace = Duration::from_secs(10);
    })
    .await;
    let content: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    let mut s = session(&server).await;
    s.send(&open("late.png", content.len() as u64))
        .await
        .unwrap();
    expect(&mut s, AckStatus::Ok).await;
    for chunk in content[..120_000].chunks(60_000) {
        s.send(&data(chunk)).await.unwrap();
    }

    // SIGTERM arrives in the middle of the file.
    server.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A new device is no longer accepted.
    let refused = TcpStream::connect(server.addr).await;
    if let Ok(stream) = refused {
        assert!(
            Session::connect(stream, pki().device_config(), Duration::from_secs(2))
                .await
                .is_err()
        );
    }

    for chunk in content[120_000..].chunks(60_000) {
        s.send(&data(chunk)).await.unwrap();
    }
    s.send(&done("late.png", &content)).await.unwrap();
    expect(&mut s, AckStatus::Ok).await;
    // Then the session is closed: nothing more is accepted.
    expect_unavailable(&mut s).await;

    let stored = std::fs::read(server.data_dir.path().join("device-1/late.png")).unwrap();
    assert_eq!(stored, content);
    assert!(incoming_is_empty(server.data_dir.path()));
    tokio::time::timeout(Duration::from_secs(5), server.handle)
        .await
        .expect("the server stops once the file is stored")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn after_the_grace_period_a_file_in_flight_is_dropped_whole() {
    let server = start_server_with(pki().server_config(), |s| {
        s.shutdown_grace = Duration::from_millis(300);
    })
    .await;
    let mut s = session(&server).await;
    s.send(&open("never.png", 1_000_000)).await.unwrap();
    expect(&mut s, AckStatus::Ok).await;
    s.send(&data(&[1u8; 50_000])).await.unwrap();
    server.shutdown.cancel();
    // The device stalls past the grace period.
    expect_unavailable(&mut s).await;
    tokio::time::timeout(Duration::from_secs(5), server.handle)
        .await
        .expect("the server stops after the grace period")
        .unwrap()
        .unwrap();
    assert!(!server.data_dir.path().join("device-1/never.png").exists());
    assert!(incoming_is_empty(server.data_dir.path()));
}

#[tokio::test]
async fn idle_sessions_and_handshakes_are_closed_at_once() {
    let server = start_server_with(pki().server_config(), |s| {
        s.shutdown_grace = Duration::from_secs(30);
    })
    .await;
    let mut idle = session(&server).await;
    let half_open = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown.cancel();
    expect_unavailable(&mut idle).await;
    drop(half_open);
    // Nothing is in flight, so the grace period is not waited for.
    tokio::time::timeout(Duration::from_secs(5), server.handle)
        .await
        .expect("the server stops without waiting for the grace period")
        .unwrap()
        .unwrap();
}
