// Included once per crypto backend by tests/transfer.rs; `PROVIDER` names it.

include!("prelude.rs");


use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::start_server_with;
use secured::client::{ClientError, ClientSettings, DeviceClient, OutgoingFile};
use secured::crypto::hash::sha256;
use secured::message::{
    AckStatus, AlertCode, Imgx, ImgxOpen, MAX_CHUNK_LEN, MediaKind, Message, StreamId,
};
use secured::session::{Session, SessionError};
use secured::testkit::pki;
use secured::transfer::file_digest;
use tokio::net::TcpStream;

/// Files stored for `device`, sorted, without the hidden folders.
fn stored(data: &Path, device: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data.join(device)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Waits (bounded) until no temporary file is left for `device`.
async fn no_partials(data: &Path, device: &str) -> bool {
    for _ in 0..200 {
        let left = std::fs::read_dir(data.join(device).join(".incoming"))
            .map(|d| d.count())
            .unwrap_or(0);
        if left == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn write_file(dir: &Path, name: &str, size: usize) -> (PathBuf, Vec<u8>) {
    let content: Vec<u8> = (0..size)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, &content).unwrap();
    (path, content)
}

fn outgoing(path: &Path, name: &str, size: u64) -> OutgoingFile {
    OutgoingFile {
        path: path.to_owned(),
        name: name.to_owned(),
        kind: MediaKind::Video,
        content_type: "video/mp4".into(),
        size,
    }
}

async fn device(addr: std::net::SocketAddr) -> DeviceClient<TcpStream> {
    DeviceClient::connect(
        &addr.to_string(),
        device_config(),
        ClientSettings::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn files_of_every_boundary_size_round_trip_byte_for_byte() {
    let server = start_server_here().await;
    let src = tempfile::tempdir().unwrap();
    let mut d = device(server.addr).await;
    let sizes = [
        0,
        1,
        MAX_CHUNK_LEN - 1,
        MAX_CHUNK_LEN,
        MAX_CHUNK_LEN + 1,
        3 * MAX_CHUNK_LEN + 17,
    ];
    for (i, size) in sizes.into_iter().enumerate() {
        let name = format!("f{i}.mp4");
        let (path, content) = write_file(src.path(), &name, size);
        let mut progressed = 0;
        let receipt = d
            .send_file(&outgoing(&path, &name, size as u64), |n| progressed += n)
            .await
            .unwrap();
        assert!(receipt.verified(), "size {size}");
        assert_eq!(receipt.stored_as, name);
        assert_eq!(receipt.local_sha256, sha256(&[&content]));
        assert_eq!(progressed, size as u64);
        let on_disk = std::fs::read(server.data_dir.path().join("device-1").join(&name)).unwrap();
        assert!(on_disk == content, "size {size}: stored bytes differ");
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                server
                    .data_dir
                    .path()
                    .join(format!("device-1/.meta/{name}.json")),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(meta["size"], size as u64);
        assert_eq!(meta["device"], "device-1");
        assert_eq!(meta["sha256"], hex::encode(sha256(&[&content])));
    }
    d.close().await.unwrap();
    assert!(no_partials(server.data_dir.path(), "device-1").await);
    server.stop().await;
}

#[tokio::test]
async fn a_large_file_round_trips() {
    let server = start_server_here().await;
    let src = tempfile::tempdir().unwrap();
    let size = 64 << 20;
    let (path, content) = write_file(src.path(), "big.mp4", size);
    let mut d = device(server.addr).await;
    let receipt = d
        .send_file(&outgoing(&path, "big.mp4", size as u64), |_| {})
        .await
        .unwrap();
    d.close().await.unwrap();
    assert!(receipt.verified());
    let on_disk = std::fs::read(server.data_dir.path().join("device-1/big.mp4")).unwrap();
    assert_eq!(on_disk.len(), content.len());
    assert!(on_disk == content, "stored bytes differ");
    server.stop().await;
}

#[tokio::test]
async fn a_name_collision_keeps_both_files() {
    let server = start_server_here().await;
    let src = tempfile::tempdir().unwrap();
    let (a, a_content) = write_file(src.path(), "a", 10);
    let (b, b_content) = write_file(src.path(), "b", 20);
    let mut d = device(server.addr).await;
    let first = d
        .send_file(&outgoing(&a, "clip.mp4", 10), |_| {})
        .await
        .unwrap();
    let second = d
        .send_file(&outgoing(&b, "clip.mp4", 20), |_| {})
        .await
        .unwrap();
    d.close().await.unwrap();
    assert_eq!(first.stored_as, "clip.mp4");
    assert_eq!(second.stored_as, "clip (1).mp4");
    let dir = server.data_dir.path().join("device-1");
    assert_eq!(std::fs::read(dir.join("clip.mp4")).unwrap(), a_content);
    assert_eq!(std::fs::read(dir.join("clip (1).mp4")).unwrap(), b_content);
    server.stop().await;
}

#[tokio::test]
async fn concurrent_uploads_from_several_devices_land_in_their_own_folders() {
    let server = start_server_here().await;
    let src = tempfile::tempdir().unwrap();
    let p = pki();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (path, _) = write_file(src.path(), &format!("src{i}"), 200_000 + i * 1000);
        let config = if i % 2 == 0 {
            device_config()
        } else {
            device_config_as_leaf(p.device2.identity_with(provider()))
        };
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut d = DeviceClient::connect(&addr.to_string(), config, ClientSettings::default())
                .await
                .unwrap();
            let size = std::fs::metadata(&path).unwrap().len();
            let r = d
                .send_file(&outgoing(&path, "same.mp4", size), |_| {})
                .await
                .unwrap();
            d.close().await.unwrap();
            assert!(r.verified());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let data = server.data_dir.path();
    assert_eq!(
        stored(data, "device-1"),
        ["same (1).mp4", "same (2).mp4", "same.mp4"]
    );
    assert_eq!(stored(data, "device-2").len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn a_file_over_the_server_limit_is_refused_before_upload() {
    let server = start_server_with(server_config(), |s| s.uploads.max_file_size = 1000).await;
    let src = tempfile::tempdir().unwrap();
    let (path, _) = write_file(src.path(), "x", 1001);
    let mut d = device(server.addr).await;
    let mut sent = 0;
    let err = d
        .send_file(&outgoing(&path, "x.mp4", 1001), |n| sent += n)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Refused {
                status: AckStatus::TooLarge,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(sent, 0, "nothing is uploaded after a refused OPEN");
    // The session goes on.
    d.send_text("still connected").await.unwrap();
    d.close().await.unwrap();
    assert!(stored(server.data_dir.path(), "device-1").is_empty());
    server.stop().await;
}

/// A raw session for hostile-device tests.
async fn raw_session(addr: std::net::SocketAddr) -> Session<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    Session::connect(stream, device_config(), Duration::from_secs(10))
        .await
        .unwrap()
}

fn open(stream: u32, name: &str, size: u64) -> Message {
    Message::Imgx(Imgx::Open(ImgxOpen {
        stream: StreamId(stream),
        kind: MediaKind::Image,
        size,
        name: name.into(),
        content_type: "image/png".into(),
    }))
}

fn data(stream: u32, bytes: &'static [u8]) -> Message {
    Message::Imgx(Imgx::Data {
        stream: StreamId(stream),
        chunk: bytes::Bytes::from_static(bytes),
    })
}

async fn expect_ack(s: &mut Session<TcpStream>, status: AckStatus) {
    match s.recv().await.unwrap() {
        Message::Ack(a) => assert_eq!(a.status, status, "{a:?}"),
        other => panic!("expected ACK_ {status}, got {other:?}"),
    }
}

async fn expect_alert(s: &mut Session<TcpStream>, code: AlertCode) {
    match s.recv().await {
        Err(SessionError::PeerAlert(c)) => assert_eq!(c, code),
        other => panic!("expected alert {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn every_path_traversal_name_is_refused_and_nothing_is_written() {
    let server = start_server_here().await;
    let long = "x".repeat(201);
    for name in [
        "..",
        ".",
        "../../etc/passwd",
        "/etc/passwd",
        "a/b",
        "a\\b",
        ".hidden",
        "nul\0byte",
        "new\nline",
        "bell\u{7}",
        "c1\u{9b}",
        " padded",
        "padded ",
    ] {
        let mut s = raw_session(server.addr).await;
        s.send(&open(1, name, 3)).await.unwrap();
        expect_alert(&mut s, AlertCode::IllegalParameter).await;
    }
    // An over-long name does not even decode.
    let mut s = raw_session(server.addr).await;
    s.send(&open(1, &long, 3)).await.unwrap();
    expect_alert(&mut s, AlertCode::DecodeError).await;
    assert!(stored(server.data_dir.path(), "device-1").is_empty());
    let all: Vec<_> = walk(server.data_dir.path());
    assert!(all.iter().all(|p| p.is_dir()), "files written: {all:?}");
    server.stop().await;
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_signature_by_another_key_stores_nothing() {
    let server = start_server_here().await;
    let mut s = raw_session(server.addr).await;
    let content = b"pixels";
    s.send(&open(1, "forged.png", 6)).await.unwrap();
    expect_ack(&mut s, AckStatus::Ok).await;
    s.send(&data(1, content)).await.unwrap();
    let digest = file_digest(
        MediaKind::Image,
        6,
        "forged.png",
        "image/png",
        &sha256(&[content]),
    );
    // Signed by device-2, sent in device-1's session.
    let signature = pki()
        .device2
        .identity_with(provider())
        .key()
        .pss_sign_digest(&digest)
        .unwrap();
    s.send(&Message::Imgx(Imgx::Done {
        stream: StreamId(1),
        signature,
    }))
    .await
    .unwrap();
    expect_ack(&mut s, AckStatus::BadSignature).await;
    // A signature over other metadata fails too.
    s.send(&open(3, "renamed.png", 6)).await.unwrap();
    expect_ack(&mut s, AckStatus::Ok).await;
    s.send(&data(3, content)).await.unwrap();
    let signature = pki()
        .device
        .identity_with(provider())
        .key()
        .pss_sign_digest(&digest)
        .unwrap();
    s.send(&Message::Imgx(Imgx::Done {
        stream: StreamId(3),
        signature,
    }))
    .await
    .unwrap();
    expect_ack(&mut s, AckStatus::BadSignature).await;
    s.close(Duration::from_secs(5)).await.unwrap();
    assert!(stored(server.data_dir.path(), "device-1").is_empty());
    assert!(no_partials(server.data_dir.path(), "device-1").await);
    server.stop().await;
}

#[tokio::test]
async fn a_stream_cut_mid_file_stores_nothing() {
    let server = start_server_here().await;
    let mut s = raw_session(server.addr).await;
    s.send(&open(1, "cut.png", 1_000_000)).await.unwrap();
    expect_ack(&mut s, AckStatus::Ok).await;
    s.send(&data(1, b"the first part of the file"))
        .await
        .unwrap();
    drop(s); // connection gone, no DONE, no ENDD
    assert!(no_partials(server.data_dir.path(), "device-1").await);
    assert!(stored(server.data_dir.path(), "device-1").is_empty());
    server.stop().await;
}

#[tokio::test]
async fn wrong_sizes_are_fatal_and_store_nothing() {
    let server = start_server_here().await;
    // More data than declared.
    let mut s = raw_session(server.addr).await;
    s.send(&open(1, "a.png", 3)).await.unwrap();
    expect_ack(&mut s, AckStatus::Ok).await;
    s.send(&data(1, b"four")).await.unwrap();
    expect_alert(&mut s, AlertCode::IllegalParameter).await;
    // DONE before all data.
    let mut s = raw_session(server.addr).await;
    s.send(&open(1, "b.png", 10)).await.unwrap();
    expect_ack(&mut s, AckStatus::Ok).await;
    s.send(&data(1, b"four")).await.unwrap();
    s.send(&Message::Imgx(Imgx::Done {
        stream: StreamId(1),
        signature: vec![0; 256],
    }))
    .await
    .unwrap();
    expect_alert(&mut s, AlertCode::IllegalParameter).await;
    // Data for a stream that is not open.
    let mut s = raw_session(server.addr).await;
    s.send(&data(1, b"orphan")).await.unwrap();
    expect_alert(&mut s, AlertCode::UnexpectedMessage).await;
    assert!(no_partials(server.data_dir.path(), "device-1").await);
    assert!(stored(server.data_dir.path(), "device-1").is_empty());
    server.stop().await;
}

#[tokio::test]
async fn an_aborted_stream_stores_nothing_and_the_session_goes_on() {
    let server = start_server_here().await;
    let mut s = raw_session(server.addr).await;
    s.send(&open(1, "a.png", 100)).await.unwrap();
    expect_ack(&mut s, AckStatus::Ok).await;
    s.send(&data(1, b"some")).await.unwrap();
    s.send(&Message::Imgx(Imgx::Abort {
        stream: StreamId(1),
        reason: "changed".into(),
    }))
    .await
    .unwrap();
    expect_ack(&mut s, AckStatus::Aborted).await;
    s.send(&open(3, "b.png", 0)).await.unwrap();
    expect_ack(&mut s, AckStatus::Ok).await;
    let digest = file_digest(MediaKind::Image, 0, "b.png", "image/png", &sha256(&[]));
    let signature = pki()
        .device
        .identity_with(provider())
        .key()
        .pss_sign_digest(&digest)
        .unwrap();
    s.send(&Message::Imgx(Imgx::Done {
        stream: StreamId(3),
        signature,
    }))
    .await
    .unwrap();
    expect_ack(&mut s, AckStatus::Ok).await;
    s.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(stored(server.data_dir.path(), "device-1"), ["b.png"]);
    server.stop().await;
}

#[tokio::test]
async fn a_file_that_changes_while_sent_is_aborted() {
    let server = start_server_here().await;
    let src = tempfile::tempdir().unwrap();
    let (path, _) = write_file(src.path(), "grows", 1000);
    let mut d = device(server.addr).await;
    // Declare sizes other than the file's: as if it grew or shrank after stat.
    for declared in [999, 1001, 10] {
        let err = d
            .send_file(&outgoing(&path, "grows.mp4", declared), |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::FileChanged { .. }),
            "{declared}: {err}"
        );
    }
    // The session is still usable, and nothing was stored.
    d.send_text("after the aborts").await.unwrap();
    d.close().await.unwrap();
    assert!(stored(server.data_dir.path(), "device-1").is_empty());
    server.stop().await;
}
