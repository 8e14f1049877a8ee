//! The server's storage end to end (proto-spec.md §8.3.2, §8.3.4, §13.9):
//! quotas, uploads in flight, the free-space reserve, collision names, file
//! names, the data folder at start-up (and the import of its old layout),
//! and every storage failure path, each with a real server on 127.0.0.1 (in
//! this process, or the built binary). The in-process servers run on a data
//! folder the test chooses, so that a server can be restarted on it.

mod common;

use std::time::Duration;

use common::binary::{
    SERVE, ServerProcess, assert_error_is, assert_one_sentence_error, assert_success, secured,
    send_files, send_text, stderr, workdir,
};
use common::device::{RawDevice, detail, open};
use common::files::{outgoing, source_file, write_varied};
use common::server::ending_of;
use common::start_server_in;
use common::store::{
    blob_count, incoming_dir, incoming_is_empty, old_layout_file, stored_content, stored_files,
    temporary_files,
};
use secured::client::{ClientError, ClientSettings, DeviceClient};
use secured::message::{Ack, AckStatus, AlertCode, MAX_CHUNK_LEN, MediaKind};
use secured::service::Ending;
use secured::store::{MAX_SUFFIX, OpenError, Store, StoreLimits};
use secured::testkit::pki;

fn assert_refused(ack: &Ack, status: AckStatus, detail_is: &str) {
    assert_eq!(ack.status, status, "{}", detail(ack));
    assert_eq!(detail(ack), detail_is);
}

// ---------------------------------------------------------------------------
// Quotas, uploads in flight, free space.

#[tokio::test]
async fn a_device_over_its_byte_quota_is_refused_at_open_and_others_still_upload() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let server = start_server_in(data, |s| s.storage.quota_bytes_per_device = 1000).await;
    let mut d1 = RawDevice::device1(server.addr).await;
    assert_eq!(d1.store("a.png", &[1; 600]).await, "a.png");
    let (_, ack) = d1.open("b.png", 600).await;
    assert_refused(
        &ack,
        AckStatus::QuotaExceeded,
        "the device has 600 B of its 1000 B quota in use; this file needs 600 B",
    );
    // Refused before anything was written: no temporary file, nothing new.
    assert!(incoming_is_empty(data));
    assert_eq!(stored_files(data, "device-1"), ["a.png"]);
    // The session goes on, and what still fits is accepted.
    d1.text("still here").await;
    assert_eq!(d1.store("c.png", &[2; 400]).await, "c.png");
    assert_eq!(
        d1.upload("d.png", &[3; 1]).await.status,
        AckStatus::QuotaExceeded
    );
    d1.close().await;
    // Another device has its own quota.
    let mut d2 = RawDevice::device2(server.addr).await;
    assert_eq!(d2.store("b.png", &[4; 600]).await, "b.png");
    d2.close().await;
    assert_eq!(stored_files(data, "device-1"), ["a.png", "c.png"]);
    server.stop().await;
}

#[tokio::test]
async fn the_file_quota_counts_what_is_stored_and_is_known_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let server = start_server_in(data, |s| s.storage.quota_files_per_device = 2).await;
    let mut d = RawDevice::device1(server.addr).await;
    d.store("a.png", b"a").await;
    d.store("b.png", b"b").await;
    let (_, ack) = d.open("c.png", 1).await;
    assert_refused(
        &ack,
        AckStatus::QuotaExceeded,
        "the device has 2 of its 2 files in use",
    );
    d.close().await;
    server.stop().await;
    // A restarted server counts the files already there.
    let server = start_server_in(data, |s| s.storage.quota_files_per_device = 3).await;
    let mut d = RawDevice::device1(server.addr).await;
    d.store("c.png", b"c").await;
    let (_, ack) = d.open("d.png", 1).await;
    assert_refused(
        &ack,
        AckStatus::QuotaExceeded,
        "the device has 3 of its 3 files in use",
    );
    d.close().await;
    assert_eq!(stored_files(data, "device-1"), ["a.png", "b.png", "c.png"]);
    server.stop().await;
}

#[tokio::test]
async fn uploads_in_flight_are_capped_per_device_over_all_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let server = start_server_in(data, |s| s.storage.max_uploads_per_device = 1).await;
    let mut events = server.watch();
    let mut a = RawDevice::device1(server.addr).await;
    let (held, ack) = a.open("held.png", 1000).await;
    assert_eq!(ack.status, AckStatus::Ok);
    a.data(held, &[0; 10]).await;
    // Another session of the same device is told to retry later …
    let mut b = RawDevice::device1(server.addr).await;
    let (_, ack) = b.open("b.png", 1).await;
    assert_refused(
        &ack,
        AckStatus::Busy,
        "the device already has as many uploads in progress as it may (1); retry when one has ended",
    );
    // … while another device is not affected.
    let mut other = RawDevice::device2(server.addr).await;
    other.store("other.png", b"o").await;
    // An abort gives the slot back.
    assert_eq!(a.abort(held).await.status, AckStatus::Aborted);
    let (cut, ack) = b.open("b.png", 1000).await;
    assert_eq!(ack.status, AckStatus::Ok, "{}", detail(&ack));
    b.data(cut, &[0; 10]).await;
    assert_eq!(a.upload("c.png", b"c").await.status, AckStatus::Busy);
    // So does a session cut in the middle of a file, once the server has
    // seen it end.
    let cut_session = b.local;
    drop(b);
    assert_eq!(
        ending_of(&mut events, cut_session, Duration::from_secs(5)).await,
        Some((Some("device-1".to_owned()), Ending::Truncated))
    );
    assert!(incoming_is_empty(data));
    assert_eq!(a.store("c.png", b"c").await, "c.png");
    a.close().await;
    other.close().await;
    assert_eq!(stored_files(data, "device-1"), ["c.png"]);
    assert!(incoming_is_empty(data));
    server.stop().await;
}

#[tokio::test]
async fn an_upload_that_would_go_below_the_free_space_reserve_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // Far more than any file system here has free.
    let reserve = 1u64 << 62;
    let server = start_server_in(data, |s| s.storage.min_free_space = reserve).await;
    let mut d = RawDevice::device1(server.addr).await;
    let (_, ack) = d.open("a.png", 1).await;
    assert_eq!(ack.status, AckStatus::InsufficientStorage);
    let text = detail(&ack);
    assert!(text.starts_with("the server has "), "{text}");
    assert!(
        text.ends_with(" free and keeps 4.0 EiB in reserve; this file needs 1 B"),
        "{text}"
    );
    d.text("the session goes on").await;
    d.close().await;
    // Nothing was written: no temporary file, no content, no record.
    assert!(incoming_is_empty(data));
    assert_eq!(blob_count(data), 0);
    assert!(stored_files(data, "device-1").is_empty());
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Collision names.

#[tokio::test]
async fn uploads_of_one_name_get_the_next_suffixes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let server = start_server_in(data, |_| {}).await;
    let mut d = RawDevice::device1(server.addr).await;
    let mut expected = Vec::new();
    for i in 0..40u8 {
        let name = d.store("a.jpg", &[i]).await;
        let want = if i == 0 {
            "a.jpg".to_owned()
        } else {
            format!("a ({i}).jpg")
        };
        assert_eq!(name, want);
        assert_eq!(stored_content(data, "device-1", &name).unwrap(), [i]);
        expected.push(want);
    }
    assert_eq!(d.store("archive.tar.gz", b"1").await, "archive.tar.gz");
    assert_eq!(d.store("archive.tar.gz", b"2").await, "archive (1).tar.gz");
    assert_eq!(d.store("README", b"1").await, "README");
    assert_eq!(d.store("README", b"2").await, "README (1)");
    // A name of the full 200 bytes collides into one of at most 200 bytes.
    let long = format!("{}.jpg", "é".repeat(98));
    assert_eq!(long.len(), 200);
    assert_eq!(d.store(&long, b"1").await, long);
    let second = d.store(&long, b"2").await;
    assert_eq!(second, format!("{} (1).jpg", "é".repeat(96)));
    assert!(second.len() <= 200);
    assert_eq!(stored_content(data, "device-1", &second).unwrap(), b"2");
    d.close().await;
    expected.sort();
    let all = stored_files(data, "device-1");
    let a: Vec<_> = all
        .iter()
        .filter(|n| n.starts_with("a.") || n.starts_with("a ("))
        .cloned()
        .collect();
    assert_eq!(a, expected);
    server.stop().await;
}

#[tokio::test]
async fn when_the_suffixes_run_out_the_file_is_refused_and_nothing_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // Every name taken, in the old layout, which the server imports.
    old_layout_file(data, "device-1", "full.jpg", b"");
    for n in 1..=MAX_SUFFIX {
        old_layout_file(data, "device-1", &format!("full ({n}).jpg"), b"");
    }
    let server = start_server_in(data, |s| s.storage.max_uploads_per_device = 1).await;
    // Served once the data folder is open.
    let mut d = RawDevice::device1(server.addr).await;
    let files = usize::try_from(MAX_SUFFIX).unwrap() + 1;
    assert_eq!(stored_files(data, "device-1").len(), files);
    assert_eq!(blob_count(data), files);
    let ack = d.upload("full.jpg", b"one too many").await;
    assert_refused(
        &ack,
        AckStatus::StorageError,
        "no free name: full.jpg, full (1).jpg to full (9999).jpg are all taken; send it under another name",
    );
    // The answer comes once the temporary file and the content are gone.
    assert!(incoming_is_empty(data));
    assert_eq!(
        stored_files(data, "device-1").len(),
        files,
        "a record was committed"
    );
    assert_eq!(blob_count(data), files, "the content was left behind");
    // The session goes on, and the reservation was given back.
    assert_eq!(d.store("other.jpg", b"fine").await, "other.jpg");
    d.close().await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// File names.

#[tokio::test]
async fn names_with_invisible_formatting_characters_are_refused_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let server = start_server_in(data, |_| {}).await;
    // The server refuses it with an alert …
    for name in ["invoice\u{202e}gpj.exe", "a\u{200b}.jpg", "\u{feff}b.jpg"] {
        let mut d = RawDevice::device1(server.addr).await;
        d.send(&open(1, name, 3)).await;
        d.expect_alert(AlertCode::IllegalParameter).await;
    }
    // … and the device does not send it.
    let src = tempfile::tempdir().unwrap();
    let (path, _) = source_file(src.path(), "f", 3);
    let mut client = DeviceClient::connect(
        &server.addr.to_string(),
        pki().device_config(),
        ClientSettings::default(),
    )
    .await
    .unwrap();
    let file = outgoing(&path, "invoice\u{202e}gpj.exe", MediaKind::Image, 3);
    let err = client.send_file(&file, |_| {}).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::BadFileName { name, .. } if *name == file.name),
        "{err}"
    );
    client.send_text("still connected").await.unwrap();
    client.close().await.unwrap();
    assert!(stored_files(data, "device-1").is_empty());
    server.stop().await;
}

// ---------------------------------------------------------------------------
// The data folder at start-up.

#[tokio::test]
async fn start_up_copes_with_folders_and_links_in_incoming() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let incoming = incoming_dir(&data);
    std::fs::create_dir_all(incoming.join("stray/inner")).unwrap();
    std::fs::write(incoming.join("stray/inner/x"), b"x").unwrap();
    let outside = dir.path().join("outside");
    std::fs::write(&outside, b"not ours").unwrap();
    std::os::unix::fs::symlink(&outside, incoming.join("link.part")).unwrap();
    std::os::unix::fs::symlink(dir.path(), incoming.join("dir-link")).unwrap();
    let server = start_server_in(&data, |_| {}).await;
    let mut d = RawDevice::device1(server.addr).await;
    assert_eq!(d.store("a.png", b"a").await, "a.png");
    d.close().await;
    assert!(incoming_is_empty(&data));
    assert_eq!(std::fs::read(&outside).unwrap(), b"not ours");
    server.stop().await;
}

#[tokio::test]
async fn a_data_folder_of_the_old_layout_is_imported_and_its_names_stay_taken() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    old_layout_file(data, "device-1", "a.jpg", b"first");
    old_layout_file(data, "device-1", "a (1).jpg", b"second");
    old_layout_file(data, "device-2", "b.png", b"other device");
    let partial = data.join("device-1/.incoming/x.part");
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::fs::write(&partial, b"half").unwrap();
    let server = start_server_in(data, |s| s.storage.quota_files_per_device = 3).await;
    // Served once the data folder is open.
    let mut d = RawDevice::device1(server.addr).await;
    // The old folders are gone; their files are in the index.
    assert!(!data.join("device-1").exists());
    assert!(!data.join("device-2").exists());
    assert_eq!(stored_files(data, "device-1"), ["a (1).jpg", "a.jpg"]);
    assert_eq!(
        stored_content(data, "device-1", "a (1).jpg").unwrap(),
        b"second"
    );
    assert_eq!(
        stored_content(data, "device-2", "b.png").unwrap(),
        b"other device"
    );
    assert_eq!(d.store("a.jpg", b"third").await, "a (2).jpg");
    // Imported files count against the quota.
    let (_, ack) = d.open("c.jpg", 1).await;
    assert_refused(
        &ack,
        AckStatus::QuotaExceeded,
        "the device has 3 of its 3 files in use",
    );
    d.close().await;
    server.stop().await;
}

#[test]
fn the_binary_names_what_it_cannot_import_and_does_not_start() {
    let dir = workdir();
    let data = dir.path().join("data");
    old_layout_file(&data, "device-1", "a.jpg", b"kept");
    std::fs::write(data.join("device-1/stray.txt"), b"not a stored file").unwrap();
    let out = secured(dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    // Each path is logged, then the first is the error.
    let err = stderr(&out);
    assert!(
        err.contains("cannot import from the old data-folder layout path=data/device-1/stray.txt"),
        "{err}"
    );
    assert_eq!(
        err.lines().last(),
        Some(
            "error: cannot import data/device-1/stray.txt from the old layout of the data folder: \
             it has no record in .meta (a stored file of the old layout has one); \
             move it out of the data folder and start again"
        )
    );
    // What could be imported was; the stray file is where it was.
    assert_eq!(stored_files(&data, "device-1"), ["a.jpg"]);
    assert!(data.join("device-1/stray.txt").exists());
    std::fs::remove_dir_all(data.join("device-1")).unwrap();
    let server = ServerProcess::start(dir.path());
    assert_success(&send_text(dir.path(), &server.addr, &["started"]));
}

#[tokio::test]
async fn a_second_server_on_the_same_data_folder_refuses_to_start_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let first = start_server_in(data, |_| {}).await;
    let mut d = RawDevice::device1(first.addr).await;
    let (stream, ack) = d.open("movie.png", 100).await;
    assert_eq!(ack.status, AckStatus::Ok);
    d.data(stream, &[7; 50]).await;
    // The temporary file is made before the OPEN is answered.
    let in_flight = temporary_files(data).expect("a temporary folder");
    assert_eq!(in_flight.len(), 1, "{in_flight:?}");

    // The second server gives up at once.
    let mut second = start_server_in(data, |_| {}).await;
    let err = second
        .outcome(Duration::from_secs(10))
        .await
        .expect_err("the data folder is in use");
    let open = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<OpenError>())
        .expect("an OpenError");
    assert!(matches!(open, OpenError::Locked { .. }), "{open}");
    // The first server's upload is intact and completes.
    assert_eq!(temporary_files(data), Some(in_flight));
    d.data(stream, &[7; 50]).await;
    assert_eq!(
        d.done(stream, "movie.png", &[7; 100]).await.status,
        AckStatus::Ok
    );
    d.close().await;
    first.stop().await;
    // Once the first server stopped, the folder is free again.
    let (_store, _) = Store::open(data, StoreLimits::default()).await.unwrap();
}

// ---------------------------------------------------------------------------
// Storage failure paths.

#[tokio::test]
async fn an_incoming_folder_that_cannot_be_created_refuses_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let server = start_server_in(data, |s| s.storage.max_uploads_per_device = 1).await;
    // Served once the data folder is open.
    let mut d = RawDevice::device1(server.addr).await;
    let incoming = incoming_dir(data);
    std::fs::remove_dir(&incoming).unwrap();
    std::fs::write(&incoming, b"a file where the folder should be").unwrap();
    let (_, ack) = d.open("a.png", 3).await;
    assert_refused(
        &ack,
        AckStatus::StorageError,
        "the server cannot store files now",
    );
    assert!(stored_files(data, "device-1").is_empty());
    assert!(incoming.is_file());
    // The session goes on; once the folder can be created, uploads work
    // (and the refused one holds no upload slot).
    d.text("still here").await;
    std::fs::remove_file(&incoming).unwrap();
    assert_eq!(d.store("a.png", b"abc").await, "a.png");
    d.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_failed_publish_leaves_nothing_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let server = start_server_in(data, |s| s.storage.max_uploads_per_device = 1).await;
    let mut d = RawDevice::device1(server.addr).await;
    let content = vec![5u8; 3 * MAX_CHUNK_LEN + 11];
    let (stream, ack) = d.open("a.png", content.len() as u64).await;
    assert_eq!(ack.status, AckStatus::Ok);
    d.data(stream, &content).await;
    // The blob store becomes a file before the signature arrives.
    let blobs = data.join("blobs");
    let moved = data.join("blobs.moved");
    std::fs::rename(&blobs, &moved).unwrap();
    std::fs::write(&blobs, b"").unwrap();
    let ack = d.done(stream, "a.png", &content).await;
    assert_refused(
        &ack,
        AckStatus::StorageError,
        "the server could not store the file",
    );
    assert!(
        stored_files(data, "device-1").is_empty(),
        "published anyway"
    );
    // The answer comes once the temporary file is gone.
    assert!(incoming_is_empty(data));
    // Repaired, the same session stores the file.
    std::fs::remove_file(&blobs).unwrap();
    std::fs::rename(&moved, &blobs).unwrap();
    assert_eq!(d.store("a.png", &content).await, "a.png");
    assert_eq!(stored_content(data, "device-1", "a.png").unwrap(), content);
    assert_eq!(blob_count(data), 1);
    d.close().await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// The built binary: PKI files from `secured pki init`, one server process.

#[test]
fn the_binary_refuses_a_data_folder_in_use_or_unusable_in_one_sentence() {
    let dir = workdir();
    // Deployed as it should be: the root's key is offline (else `serve`
    // warns about it first).
    std::fs::remove_file(dir.path().join("keys/ca.key")).unwrap();
    let first = ServerProcess::start(dir.path());
    let partial = incoming_dir(&dir.path().join("data")).join("in-flight.part");
    std::fs::write(&partial, b"someone else's upload").unwrap();
    let serve = ["serve", "--listen", "127.0.0.1:0"];
    let out = secured(dir.path(), &serve);
    assert_error_is(
        &out,
        "another secured server is using the data folder data; stop it or choose another --data-dir",
    );
    assert!(
        partial.exists(),
        "the second server deleted an upload in flight"
    );
    drop(first);

    std::fs::write(dir.path().join("a-file"), b"").unwrap();
    let out = secured(
        dir.path(),
        &[&serve[..], &["--data-dir", "a-file"]].concat(),
    );
    assert_error_is(
        &out,
        "the data folder a-file is not a folder; choose another --data-dir",
    );
    let out = secured(
        dir.path(),
        &[&serve[..], &["--data-dir", "/proc/self"]].concat(),
    );
    assert_one_sentence_error(&out, &[]);
    let err = stderr(&out);
    assert!(
        err.starts_with("error: the data folder /proc/self is not writable: ")
            && err.ends_with("; make it writable or choose another --data-dir\n"),
        "{err}"
    );
    let out = secured(
        dir.path(),
        &[&serve[..], &["--quota-files-per-device", "0"]].concat(),
    );
    assert_error_is(
        &out,
        "quota_files_per_device must be at least 1, or no device could store anything",
    );
}

#[test]
fn a_write_that_fails_mid_file_is_a_storage_error_and_the_server_goes_on() {
    let dir = workdir();
    // Files over 1 MiB cannot be written (512 KiB where the shell counts
    // 512-byte blocks): writes past the limit fail with EFBIG.
    let script = format!(r#"trap "" XFSZ; ulimit -f 1024 && {SERVE}"#);
    let server = ServerProcess::start_script(dir.path(), &script, &[]);
    write_varied(&dir.path().join("big.mp4"), 4 << 20);
    std::fs::write(dir.path().join("small.mp4"), b"small enough").unwrap();
    let (out, report) = send_files(
        dir.path(),
        &server.addr,
        &["--kind", "video", "big.mp4", "small.mp4"],
    );
    assert_one_sentence_error(&out, &["1 of 2 files were not stored as sent"]);
    let big = &report["files"][0];
    assert_eq!(big["status"], "refused", "{big}");
    assert_eq!(big["code"], "storage_error", "{big}");
    assert_eq!(
        big["message"],
        "the server refused stream 1: storage_error (the server could not write the file)"
    );
    assert_eq!(report["files"][1]["verified"], true, "{report}");
    server.wait_for(&["writing a received file failed"]);
    let data = dir.path().join("data");
    assert_eq!(stored_files(&data, "device-1"), ["small.mp4"]);
    assert!(incoming_is_empty(&data));
    assert_eq!(blob_count(&data), 1);
    // The server still serves.
    assert_success(&send_text(dir.path(), &server.addr, &["after"]));
}
