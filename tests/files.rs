//! Files coming back (proto-spec.md §13): sharing scopes enforced on every
//! listing, download and notice; verified downloads that refuse a tampered
//! store and leave nothing behind; notices to many watchers while many
//! devices upload; resumption after the last notice handled; a watch and an
//! upload in one session; and version 1 devices still served. Real server
//! on 127.0.0.1, real devices.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::files::{outgoing, source_file};
use common::start_server;
use secured::client::{ClientError, ClientSettings, Destination, DeviceClient};
use secured::handshake::DeviceConfig;
use secured::message::{
    AckStatus, FileInfo, MediaKind, PROTOCOL_VERSION, SUPPORTED_VERSIONS, Scope, WatchFrom,
};
use secured::testkit::pki;
use tokio::net::TcpStream;

type Client = DeviceClient<TcpStream>;

fn named(name: &str) -> DeviceConfig {
    pki().device_named(name, SUPPORTED_VERSIONS)
}

async fn connect(addr: std::net::SocketAddr, config: DeviceConfig) -> Client {
    DeviceClient::connect(&addr.to_string(), config, ClientSettings::default())
        .await
        .expect("device connects")
}

/// Uploads `len` bytes of varied content as `name` with `scope`; returns
/// the content.
async fn upload(client: &mut Client, dir: &Path, name: &str, len: usize, scope: Scope) -> Vec<u8> {
    let (path, content) = source_file(dir, name, len);
    let mut file = outgoing(&path, name, MediaKind::File, len as u64);
    file.scope = scope;
    let receipt = client.send_file(&file, |_| {}).await.expect("upload");
    assert!(receipt.verified());
    content
}

fn names(files: &[FileInfo]) -> BTreeSet<String> {
    files
        .iter()
        .map(|f| format!("{}/{}", f.owner, f.stored_as))
        .collect()
}

fn into(dir: &Path) -> Destination {
    Destination {
        path: dir.to_owned(),
        is_dir: true,
        force: false,
    }
}

#[tokio::test]
async fn scopes_decide_who_lists_and_fetches_what() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let mut alice = connect(server.addr, named("alice")).await;
    upload(&mut alice, src.path(), "mine.txt", 10, Scope::Private).await;
    let all = upload(&mut alice, src.path(), "all.txt", 70_000, Scope::Everyone).await;
    let for_bob = upload(
        &mut alice,
        src.path(),
        "bob.txt",
        5,
        Scope::parse("bob").unwrap(),
    )
    .await;
    upload(
        &mut alice,
        src.path(),
        "carol.txt",
        7,
        Scope::parse("carol,dave").unwrap(),
    )
    .await;
    let own = alice.list(None).await.unwrap();
    assert_eq!(own.len(), 4);
    let private_id = own.iter().find(|f| f.name == "mine.txt").unwrap().id;
    alice.close().await.unwrap();

    let mut bob = connect(server.addr, named("bob")).await;
    let seen = bob.list(None).await.unwrap();
    assert_eq!(
        names(&seen),
        BTreeSet::from(["alice/all.txt".to_owned(), "alice/bob.txt".to_owned()])
    );
    assert!(bob.list(Some("carol")).await.unwrap().is_empty());
    // A file bob may not see is answered exactly like one that does not
    // exist.
    for id in [private_id, 12345] {
        let err = bob.fetch(id, &into(src.path()), |_| {}).await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Refused { status: AckStatus::NotFound, reason, .. } if reason == "no such file"),
            "{err}"
        );
    }
    // What bob may see arrives verified, under its signed name.
    let out = tempfile::tempdir().unwrap();
    for (name, content) in [("all.txt", &all), ("bob.txt", &for_bob)] {
        let id = seen.iter().find(|f| f.name == name).unwrap().id;
        let got = bob.fetch(id, &into(out.path()), |_| {}).await.unwrap();
        assert_eq!(got.signer, "alice");
        assert!(got.time_signed);
        assert_eq!(&std::fs::read(out.path().join(name)).unwrap(), content);
    }
    // Fetching again does not replace the file without force.
    let id = seen.iter().find(|f| f.name == "bob.txt").unwrap().id;
    let err = bob.fetch(id, &into(out.path()), |_| {}).await.unwrap_err();
    assert!(matches!(err, ClientError::Exists { .. }), "{err}");
    bob.close().await.unwrap();

    let mut carol = connect(server.addr, named("carol")).await;
    assert_eq!(
        names(&carol.list(None).await.unwrap()),
        BTreeSet::from(["alice/all.txt".to_owned(), "alice/carol.txt".to_owned()])
    );
    carol.close().await.unwrap();
    server.stop().await;
}

/// A version 1 device is still served: it uploads (privately), and is told
/// clearly what it cannot do. A version 2 device gets version 2.
#[tokio::test]
async fn a_version_1_device_keeps_working() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let mut old = connect(server.addr, pki().device_named("old", &[PROTOCOL_VERSION])).await;
    assert_eq!(old.version(), 1);
    upload(&mut old, src.path(), "v1.bin", 100, Scope::Private).await;
    let err = old.list(None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the server speaks protocol version 1, which cannot list files; upgrade the server"
    );
    let (path, _) = source_file(src.path(), "shared.bin", 3);
    let mut file = outgoing(&path, "shared.bin", MediaKind::File, 3);
    file.scope = Scope::Everyone;
    assert!(matches!(
        old.send_file(&file, |_| {}).await,
        Err(ClientError::NeedsVersion2 { .. })
    ));
    old.close().await.unwrap();
    // The owner, on the newest version, fetches its version 1 upload.
    let mut new = connect(server.addr, named("old")).await;
    assert_eq!(new.version(), 3);
    let files = new.list(None).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let got = new
        .fetch(files[0].id, &into(out.path()), |_| {})
        .await
        .unwrap();
    assert_eq!(got.signed_version, 1);
    assert!(!got.time_signed);
    new.close().await.unwrap();
    server.stop().await;
}

/// Opens the server's index beside it, to play a server whose disk was
/// tampered with.
async fn index_of(data: &Path) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", data.join("index.sqlite3").display());
    sqlx::SqlitePool::connect(&url).await.expect("index opens")
}

/// The stored content of file `id`.
async fn blob_path(data: &Path, pool: &sqlx::SqlitePool, id: u64) -> std::path::PathBuf {
    let key: String = sqlx::query_scalar("SELECT blob FROM files WHERE id = ?")
        .bind(i64::try_from(id).unwrap())
        .fetch_one(pool)
        .await
        .unwrap();
    data.join("blobs").join(&key[..2]).join(&key)
}

#[tokio::test]
async fn a_tampered_store_is_refused_and_leaves_nothing() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let mut alice = connect(server.addr, named("alice")).await;
    for name in ["flip.bin", "size.bin", "sig.bin", "other.bin"] {
        upload(&mut alice, src.path(), name, 200_000, Scope::Everyone).await;
    }
    let files = alice.list(None).await.unwrap();
    alice.close().await.unwrap();
    let id = |name: &str| files.iter().find(|f| f.name == name).unwrap().id;
    let pool = index_of(server.data()).await;

    // Bytes flipped in the stored content.
    let blob = blob_path(server.data(), &pool, id("flip.bin")).await;
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100_000] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    // The record names another size, and the content and its hash are cut
    // to match it: only the signature can tell.
    let blob = blob_path(server.data(), &pool, id("size.bin")).await;
    let bytes = std::fs::read(&blob).unwrap();
    let cut = &bytes[..bytes.len() - 1];
    std::fs::write(&blob, cut).unwrap();
    sqlx::query("UPDATE files SET size = size - 1, sha256 = ? WHERE id = ?")
        .bind(secured::crypto::hash::sha256(&[cut]).to_vec())
        .bind(i64::try_from(id("size.bin")).unwrap())
        .execute(&pool)
        .await
        .unwrap();
    // The signature of another file.
    sqlx::query(
        "UPDATE files SET signature = (SELECT signature FROM files WHERE id = ?) WHERE id = ?",
    )
    .bind(i64::try_from(id("other.bin")).unwrap())
    .bind(i64::try_from(id("sig.bin")).unwrap())
    .execute(&pool)
    .await
    .unwrap();

    let mut bob = connect(server.addr, named("bob")).await;
    let out = tempfile::tempdir().unwrap();
    let refused = [
        ("flip.bin", "the content does not match its signed SHA-256"),
        ("size.bin", "the owner's signature does not verify"),
        ("sig.bin", "the owner's signature does not verify"),
    ];
    for (name, why) in refused {
        let err = bob
            .fetch(id(name), &into(out.path()), |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Download { .. }) && err.to_string().contains(why),
            "{name}: {err}"
        );
        assert!(err.to_string().ends_with("; nothing was written"), "{err}");
    }
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    // The intact file still arrives over the same session.
    bob.fetch(id("other.bin"), &into(out.path()), |_| {})
        .await
        .unwrap();
    bob.close().await.unwrap();
    server.stop().await;
}

/// Twenty devices upload at once while three watch: every watcher gets
/// exactly one notice per file it may see, and none it may not.
#[tokio::test]
async fn notices_reach_exactly_the_watchers_that_may_see() {
    let server = start_server().await;
    let watchers = ["w1", "w2", "w3"];
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(3);
    for w in watchers {
        let addr = server.addr;
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(addr, named(w)).await;
            c.watch(WatchFrom::Now).await.unwrap();
            ready.send(()).await.unwrap();
            let mut seen = Vec::new();
            // Stops by itself: no notice within 5 s ends the count.
            while let Ok(Ok(note)) = tokio::time::timeout(
                Duration::from_secs(5),
                c.next_notice(Duration::from_secs(30)),
            )
            .await
            {
                seen.push(note.info.name.clone());
            }
            c.close().await.unwrap();
            (w, seen)
        }));
    }
    for _ in 0..3 {
        ready_rx.recv().await.unwrap();
    }
    let src = tempfile::tempdir().unwrap();
    let mut uploads = Vec::new();
    for i in 0..20 {
        let addr = server.addr;
        let dir = src.path().to_owned();
        uploads.push(tokio::spawn(async move {
            let scope = match i % 3 {
                0 => Scope::Everyone,
                1 => Scope::parse("w1").unwrap(),
                _ => Scope::Private,
            };
            let mut c = connect(addr, named(&format!("up{i}"))).await;
            upload(&mut c, &dir, &format!("f{i}.bin"), 1000 + i, scope).await;
            c.close().await.unwrap();
        }));
    }
    for u in uploads {
        u.await.unwrap();
    }
    let mut got = BTreeMap::new();
    for t in tasks {
        let (w, seen) = t.await.unwrap();
        got.insert(w, seen);
    }
    let expect = |pred: fn(usize) -> bool| -> BTreeSet<String> {
        (0..20)
            .filter(|&i| pred(i))
            .map(|i| format!("f{i}.bin"))
            .collect()
    };
    for (w, seen) in &got {
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "{w} got a notice twice: {seen:?}");
        let wanted = if *w == "w1" {
            expect(|i| i % 3 != 2)
        } else {
            expect(|i| i % 3 == 0)
        };
        assert_eq!(unique, wanted, "{w}");
    }
    server.stop().await;
}

/// A watcher that goes away gets, when it resumes after the last event it
/// handled, every notice it missed and none it had.
#[tokio::test]
async fn a_watcher_resumes_after_its_last_event() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let mut up = connect(server.addr, named("up")).await;
    let mut w = connect(server.addr, named("w")).await;
    w.watch(WatchFrom::Now).await.unwrap();
    for name in ["a", "b"] {
        upload(&mut up, src.path(), name, 10, Scope::Everyone).await;
    }
    let first = w.next_notice(Duration::from_secs(30)).await.unwrap();
    let second = w.next_notice(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        (first.info.name.as_str(), second.info.name.as_str()),
        ("a", "b")
    );
    assert!(second.event > first.event);
    // Gone without a word: the connection simply drops.
    drop(w);
    for name in ["c", "d", "e"] {
        upload(&mut up, src.path(), name, 10, Scope::Everyone).await;
    }
    let mut w = connect(server.addr, named("w")).await;
    let start = w.watch(WatchFrom::After(second.event)).await.unwrap();
    assert!(start.last >= second.event + 3);
    let mut again = Vec::new();
    for _ in 0..3 {
        again.push(
            w.next_notice(Duration::from_secs(30))
                .await
                .unwrap()
                .info
                .name,
        );
    }
    assert_eq!(again, ["c", "d", "e"]);
    // Nothing more is due.
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            w.next_notice(Duration::from_secs(30))
        )
        .await
        .is_err()
    );
    w.close().await.unwrap();
    up.close().await.unwrap();
    server.stop().await;
}

/// One session watches, uploads and downloads: notices that arrive while
/// the device waits for its own answers are kept for it.
#[tokio::test]
async fn one_session_watches_uploads_and_downloads() {
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut me = connect(server.addr, named("me")).await;
    me.watch(WatchFrom::Now).await.unwrap();
    let mut other = connect(server.addr, named("other")).await;
    upload(
        &mut other,
        src.path(),
        "theirs.bin",
        300_000,
        Scope::Everyone,
    )
    .await;
    // My own upload and a download while the notice is in flight.
    let mine = upload(&mut me, src.path(), "mine.bin", 200_000, Scope::Everyone).await;
    let files = me.list(None).await.unwrap();
    let id = files.iter().find(|f| f.name == "mine.bin").unwrap().id;
    me.fetch(id, &into(out.path()), |_| {}).await.unwrap();
    assert_eq!(std::fs::read(out.path().join("mine.bin")).unwrap(), mine);
    let a = me.next_notice(Duration::from_secs(30)).await.unwrap();
    let b = me.next_notice(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        (a.info.name.as_str(), b.info.name.as_str()),
        ("theirs.bin", "mine.bin")
    );
    other.close().await.unwrap();
    me.close().await.unwrap();
    server.stop().await;
}

/// A heartbeat keeps an idle watch alive and is answered.
#[tokio::test]
async fn an_idle_watch_is_kept_alive_by_heartbeats() {
    let server = start_server().await;
    let mut w = connect(server.addr, named("w")).await;
    w.watch(WatchFrom::Now).await.unwrap();
    // Three heartbeats' worth of silence, each answered.
    let waited = tokio::time::timeout(
        Duration::from_millis(700),
        w.next_notice(Duration::from_millis(200)),
    )
    .await;
    assert!(waited.is_err(), "a notice or an error came: {waited:?}");
    w.close().await.unwrap();
    server.stop().await;
}

/// A version 2 session driven message by message, for the refusals of
/// proto-spec.md §13.6 that the device API never provokes.
async fn raw_v2(addr: std::net::SocketAddr, name: &str) -> secured::session::Session<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let session = secured::session::Session::connect(stream, named(name), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(session.version(), 3);
    session
}

async fn next_ack(s: &mut secured::session::Session<TcpStream>) -> secured::message::Ack {
    loop {
        match s.recv_within(Duration::from_secs(10)).await.unwrap() {
            secured::message::Message::Ack(a) => return a,
            // Data of a download in progress.
            secured::message::Message::File(_) => {}
            other => panic!("expected an ACK_, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn version_2_refusals() {
    use secured::message::{Ftch, Imgx, ImgxOpen, Message, Sharing, StreamId, Wtch};
    let server = start_server().await;
    let src = tempfile::tempdir().unwrap();
    let mut alice = connect(server.addr, named("alice")).await;
    upload(&mut alice, src.path(), "big.bin", 4 << 20, Scope::Everyone).await;
    let id = alice.list(None).await.unwrap()[0].id;
    alice.close().await.unwrap();

    let mut s = raw_v2(server.addr, "bob").await;
    // open-clock: signed an hour ago.
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    s.send(&Message::Imgx(Imgx::Open(ImgxOpen {
        stream: StreamId(1),
        kind: MediaKind::File,
        size: 1,
        name: "late.bin".into(),
        content_type: "application/octet-stream".into(),
        sharing: Some(Sharing {
            signed_at: an_hour_ago,
            scope: Scope::Private,
        }),
    })))
    .await
    .unwrap();
    let ack = next_ack(&mut s).await;
    assert_eq!(ack.status, AckStatus::Rejected);
    assert!(String::from_utf8_lossy(&ack.detail).contains("set the device's clock"));
    // watch-twice.
    let watch = |stream| {
        Message::Wtch(Wtch {
            stream: StreamId(stream),
            from: WatchFrom::Now,
        })
    };
    s.send(&watch(3)).await.unwrap();
    assert_eq!(next_ack(&mut s).await.status, AckStatus::Ok);
    s.send(&watch(5)).await.unwrap();
    let ack = next_ack(&mut s).await;
    assert_eq!(
        (ack.stream, ack.status),
        (StreamId(5), AckStatus::BadRequest)
    );
    // fetch-busy: a second download while the first is in progress.
    s.send(&Message::Ftch(Ftch {
        stream: StreamId(7),
        id,
    }))
    .await
    .unwrap();
    s.send(&Message::Ftch(Ftch {
        stream: StreamId(9),
        id,
    }))
    .await
    .unwrap();
    let first = next_ack(&mut s).await;
    assert_eq!((first.stream, first.status), (StreamId(9), AckStatus::Busy));
    let done = next_ack(&mut s).await;
    assert_eq!((done.stream, done.status), (StreamId(7), AckStatus::Ok));
    // v2-from-device: a PONG is the server's to send.
    let mut events = server.watch();
    s.send(&Message::Pong(1)).await.unwrap();
    assert!(matches!(
        s.recv_within(Duration::from_secs(10)).await,
        Err(secured::session::SessionError::PeerAlert(
            secured::message::AlertCode::UnexpectedMessage
        ))
    ));
    assert_eq!(
        common::next_ending(&mut events, Duration::from_secs(5)).await,
        Some((
            Some("bob".to_owned()),
            secured::service::Ending::Alert(secured::message::AlertCode::UnexpectedMessage)
        ))
    );
    server.stop().await;
}
