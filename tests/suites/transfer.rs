// Included once per crypto backend by tests/transfer.rs; `PROVIDER` names it.

include!("prelude.rs");

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::device::{RawDevice, data, done, open};
use crate::common::files::{outgoing, source_file};
use crate::common::server::ending_of;
use crate::common::store::{incoming_is_empty, stored, stored_content, stored_files};
use crate::common::{next_ending, start_server_with};
use secured::client::{ClientError, ClientSettings, DeviceClient, OutgoingFile};
use secured::crypto::hash::sha256;
use secured::message::{AckStatus, AlertCode, MAX_CHUNK_LEN, MediaKind};
use secured::service::Ending;
use secured::store::INDEX_FILE;
use secured::testkit::pki;
use tokio::net::TcpStream;

/// The file at `path`, sent as the video `name` declaring `size` bytes.
fn video(path: &Path, name: &str, size: u64) -> OutgoingFile {
    outgoing(path, name, MediaKind::Video, size)
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

/// A device of this backend speaking raw messages.
async fn raw_device(addr: std::net::SocketAddr) -> RawDevice {
    RawDevice::connect(addr, device_config()).await
}

/// The server reports the session from `device` ended as `ending`.
async fn ended(
    events: &mut tokio::sync::broadcast::Receiver<secured::service::Event>,
    device: &RawDevice,
    ending: Ending,
) {
    assert_eq!(
        ending_of(events, device.local, Duration::from_secs(5)).await,
        Some((Some("device-1".to_owned()), ending))
    );
}

#[tokio::test]
async fn files_of_every_boundary_size_round_trip_byte_for_byte() {
    let server = start_server_here().await;
    let mut events = server.watch();
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
        let (path, content) = source_file(src.path(), &name, size);
        let mut progressed = 0;
        let receipt = d
            .send_file(&video(&path, &name, size as u64), |n| progressed += n)
            .await
            .unwrap();
        assert!(receipt.verified(), "size {size}");
        assert_eq!(receipt.stored_as, name);
        assert_eq!(receipt.local_sha256, sha256(&[&content]));
        assert_eq!(progressed, size as u64);
        let on_disk = stored_content(server.data(), "device-1", &name).unwrap();
        assert!(on_disk == content, "size {size}: stored bytes differ");
        let row = stored(server.data(), "device-1")
            .into_iter()
            .find(|f| f.stored_as == name)
            .unwrap();
        assert_eq!(row.name, name);
        assert_eq!(row.size, size as i64);
        assert_eq!(row.sha256, sha256(&[&content]));
    }
    d.close().await.unwrap();
    assert_eq!(
        next_ending(&mut events, Duration::from_secs(5)).await,
        Some((Some("device-1".to_owned()), Ending::Clean))
    );
    assert!(incoming_is_empty(server.data()));
    server.stop().await;
}

#[tokio::test]
async fn a_large_file_round_trips() {
    let server = start_server_here().await;
    let src = tempfile::tempdir().unwrap();
    let size = 64 << 20;
    let (path, content) = source_file(src.path(), "big.mp4", size);
    let mut d = device(server.addr).await;
    let receipt = d
        .send_file(&video(&path, "big.mp4", size as u64), |_| {})
        .await
        .unwrap();
    d.close().await.unwrap();
    assert!(receipt.verified());
    let on_disk = stored_content(server.data(), "device-1", "big.mp4").unwrap();
    assert_eq!(on_disk.len(), content.len());
    assert!(on_disk == content, "stored bytes differ");
    server.stop().await;
}

#[tokio::test]
async fn a_name_collision_keeps_both_files() {
    let server = start_server_here().await;
    let src = tempfile::tempdir().unwrap();
    let (a, a_content) = source_file(src.path(), "a", 10);
    let (b, b_content) = source_file(src.path(), "b", 20);
    let mut d = device(server.addr).await;
    let first = d.send_file(&video(&a, "clip.mp4", 10), |_| {}).await.unwrap();
    let second = d.send_file(&video(&b, "clip.mp4", 20), |_| {}).await.unwrap();
    d.close().await.unwrap();
    assert_eq!(first.stored_as, "clip.mp4");
    assert_eq!(second.stored_as, "clip (1).mp4");
    let data = server.data();
    assert_eq!(stored_content(data, "device-1", "clip.mp4"), Some(a_content));
    assert_eq!(
        stored_content(data, "device-1", "clip (1).mp4"),
        Some(b_content)
    );
    server.stop().await;
}

#[tokio::test]
async fn concurrent_uploads_from_several_devices_land_in_their_own_folders() {
    let server = start_server_here().await;
    let src = tempfile::tempdir().unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (path, _) = source_file(src.path(), &format!("src{i}"), 200_000 + i * 1000);
        let config = device1_or_2(i);
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut d = DeviceClient::connect(&addr.to_string(), config, ClientSettings::default())
                .await
                .unwrap();
            let size = std::fs::metadata(&path).unwrap().len();
            let r = d
                .send_file(&video(&path, "same.mp4", size), |_| {})
                .await
                .unwrap();
            d.close().await.unwrap();
            assert!(r.verified());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let data = server.data();
    assert_eq!(
        stored_files(data, "device-1"),
        ["same (1).mp4", "same (2).mp4", "same.mp4"]
    );
    assert_eq!(stored_files(data, "device-2").len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn a_file_over_the_server_limit_is_refused_before_upload() {
    let server = start_server_with(server_config(), |s| s.uploads.max_file_size = 1000).await;
    let src = tempfile::tempdir().unwrap();
    let (path, _) = source_file(src.path(), "x", 1001);
    let mut d = device(server.addr).await;
    let mut sent = 0;
    let err = d
        .send_file(&video(&path, "x.mp4", 1001), |n| sent += n)
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
    assert!(stored_files(server.data(), "device-1").is_empty());
    server.stop().await;
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
        let mut s = raw_device(server.addr).await;
        s.send(&open(1, name, 3)).await;
        s.expect_alert(AlertCode::IllegalParameter).await;
    }
    // An over-long name does not even decode.
    let mut s = raw_device(server.addr).await;
    s.send(&open(1, &long, 3)).await;
    s.expect_alert(AlertCode::DecodeError).await;
    assert!(stored_files(server.data(), "device-1").is_empty());
    // No file but the index (and its journal): no temporary file, no content.
    let index = server.data().join(INDEX_FILE);
    let written: Vec<_> = walk(server.data())
        .into_iter()
        .filter(|p| !p.is_dir() && !p.to_string_lossy().starts_with(&*index.to_string_lossy()))
        .collect();
    assert!(written.is_empty(), "files written: {written:?}");
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
    let mut events = server.watch();
    let mut s = raw_device(server.addr).await;
    let content = b"pixels";
    let (stream, ack) = s.open("forged.png", 6).await;
    assert_eq!(ack.status, AckStatus::Ok);
    s.send(&data(stream, content)).await;
    // Signed by device-2, sent in device-1's session.
    let device2 = pki().device2.identity_with(provider());
    s.send(&done(&device2, stream, "forged.png", content)).await;
    s.expect_ack(AckStatus::BadSignature).await;
    // A signature over other metadata fails too.
    let (stream, ack) = s.open("renamed.png", 6).await;
    assert_eq!(ack.status, AckStatus::Ok);
    s.send(&data(stream, content)).await;
    let device1 = pki().device.identity_with(provider());
    s.send(&done(&device1, stream, "forged.png", content)).await;
    s.expect_ack(AckStatus::BadSignature).await;
    let local = s.local;
    s.close().await;
    assert_eq!(
        ending_of(&mut events, local, Duration::from_secs(5)).await,
        Some((Some("device-1".to_owned()), Ending::Clean))
    );
    assert!(stored_files(server.data(), "device-1").is_empty());
    assert!(incoming_is_empty(server.data()));
    server.stop().await;
}

#[tokio::test]
async fn a_stream_cut_mid_file_stores_nothing() {
    let server = start_server_here().await;
    let mut events = server.watch();
    let mut s = raw_device(server.addr).await;
    let (stream, ack) = s.open("cut.png", 1_000_000).await;
    assert_eq!(ack.status, AckStatus::Ok);
    s.send(&data(stream, b"the first part of the file")).await;
    let local = s.local;
    drop(s); // connection gone, no DONE, no ENDD
    assert_eq!(
        ending_of(&mut events, local, Duration::from_secs(5)).await,
        Some((Some("device-1".to_owned()), Ending::Truncated))
    );
    assert!(incoming_is_empty(server.data()));
    assert!(stored_files(server.data(), "device-1").is_empty());
    server.stop().await;
}

#[tokio::test]
async fn wrong_sizes_are_fatal_and_store_nothing() {
    let server = start_server_here().await;
    let mut events = server.watch();
    // More data than declared.
    let mut s = raw_device(server.addr).await;
    let (stream, ack) = s.open("a.png", 3).await;
    assert_eq!(ack.status, AckStatus::Ok);
    s.send(&data(stream, b"four")).await;
    s.expect_alert(AlertCode::IllegalParameter).await;
    ended(&mut events, &s, Ending::Alert(AlertCode::IllegalParameter)).await;
    // DONE before all data.
    let mut s = raw_device(server.addr).await;
    let (stream, ack) = s.open("b.png", 10).await;
    assert_eq!(ack.status, AckStatus::Ok);
    s.send(&data(stream, b"four")).await;
    s.send(&secured::message::Message::Imgx(secured::message::Imgx::Done {
        stream: secured::message::StreamId(stream),
        signature: vec![0; 256],
    }))
    .await;
    s.expect_alert(AlertCode::IllegalParameter).await;
    ended(&mut events, &s, Ending::Alert(AlertCode::IllegalParameter)).await;
    // Data for a stream that is not open.
    let mut s = raw_device(server.addr).await;
    s.send(&data(1, b"orphan")).await;
    s.expect_alert(AlertCode::UnexpectedMessage).await;
    ended(&mut events, &s, Ending::Alert(AlertCode::UnexpectedMessage)).await;
    assert!(incoming_is_empty(server.data()));
    assert!(stored_files(server.data(), "device-1").is_empty());
    server.stop().await;
}

#[tokio::test]
async fn an_aborted_stream_stores_nothing_and_the_session_goes_on() {
    let server = start_server_here().await;
    let mut s = raw_device(server.addr).await;
    let (stream, ack) = s.open("a.png", 100).await;
    assert_eq!(ack.status, AckStatus::Ok);
    s.send(&data(stream, b"some")).await;
    assert_eq!(s.abort(stream).await.status, AckStatus::Aborted);
    let (stream, ack) = s.open("b.png", 0).await;
    assert_eq!(ack.status, AckStatus::Ok);
    assert_eq!(s.done(stream, "b.png", &[]).await.status, AckStatus::Ok);
    s.close().await;
    assert_eq!(stored_files(server.data(), "device-1"), ["b.png"]);
    server.stop().await;
}

#[tokio::test]
async fn a_file_that_changes_while_sent_is_aborted() {
    let server = start_server_here().await;
    let src = tempfile::tempdir().unwrap();
    let (path, _) = source_file(src.path(), "grows", 1000);
    let mut d = device(server.addr).await;
    // Declare sizes other than the file's: as if it grew or shrank after stat.
    for declared in [999, 1001, 10] {
        let err = d
            .send_file(&video(&path, "grows.mp4", declared), |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::FileChanged { expected, got, .. }
                    if expected == declared && got == 1000
            ),
            "{declared}: {err}"
        );
    }
    // The session is still usable, and nothing was stored.
    d.send_text("after the aborts").await.unwrap();
    d.close().await.unwrap();
    assert!(stored_files(server.data(), "device-1").is_empty());
    server.stop().await;
}
