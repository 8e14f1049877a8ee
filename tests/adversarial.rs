//! The manipulation matrix: a proxy between a real device and a real server
//! on 127.0.0.1 applies one manipulation at one position of a session
//! (handshake, a text, a small file, the close), in either direction, for
//! every frame position and every manipulation, and truncates the stream at
//! many byte offsets. Every case must be detected: the device ends with an
//! error and the server ends the connection otherwise than cleanly (the one
//! exception is a record appended after the server's last one, which only
//! the device can see, proto-spec.md §8.4), the server stores nothing it
//! did not receive intact and whole, and a good device is served afterwards.
//! The test prints its count.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::files::{outgoing, write_varied};
use common::proxy::{
    Action, At, Dir, Recording, Tamper, start_proxy, start_recording_proxy, wire_len,
};
use common::server::ending_of;
use common::store::{incoming_is_empty, stored_content};
use common::{TestServer, start_server_with};
use secured::client::{ClientError, ClientSettings, DeviceClient, OutgoingFile};
use secured::frame::HEADER_LEN;
use secured::message::MediaKind;
use secured::service::{Ending, Events};
use secured::testkit::pki;
use tokio::sync::Semaphore;

fn settings() -> ClientSettings {
    ClientSettings {
        connect_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_millis(1500),
        reply_timeout: Duration::from_millis(1500),
        busy_retry_for: Duration::ZERO,
        ..ClientSettings::default()
    }
}

/// The session every case manipulates: a text, a small file, a clean close.
async fn device_run(addr: SocketAddr, file: &OutgoingFile) -> Result<(), ClientError> {
    let mut d = DeviceClient::connect(&addr.to_string(), pki().device_config(), settings()).await?;
    d.send_text("the matrix text").await?;
    let receipt = d.send_file(file, |_| {}).await?;
    assert!(receipt.verified());
    d.close().await
}

/// The file every session sends, and its content.
fn source() -> &'static (tempfile::TempDir, PathBuf, Vec<u8>) {
    static SRC: OnceLock<(tempfile::TempDir, PathBuf, Vec<u8>)> = OnceLock::new();
    SRC.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.png");
        let content = write_varied(&path, 3000);
        (dir, path, content)
    })
}

fn image(name: &str) -> OutgoingFile {
    let (_, path, content) = source();
    outgoing(path, name, MediaKind::Image, content.len() as u64)
}

/// Runs the session through a proxy that changes nothing, and returns its
/// frames; the server must see it end cleanly.
async fn record_session(server: &TestServer, name: &str) -> Recording {
    let mut events = server.watch();
    let proxy = start_recording_proxy(server.addr).await;
    device_run(proxy.addr, &image(name))
        .await
        .expect("an untouched session succeeds");
    let proxied = proxy.finished(Duration::from_secs(5)).await;
    let peer = proxied.server_saw.expect("the proxy reached the server");
    assert_eq!(
        ending_of(&mut events, peer, Duration::from_secs(5)).await,
        Some((Some("device-1".to_owned()), Ending::Clean))
    );
    proxied.recording
}

/// Cases run at once.
const AT_ONCE: usize = 8;

/// The device sends the file's `DONE` as its frame 6; the server stores the
/// file once it has it.
const UP_DONE: usize = 6;
/// The device sends the file only after the server's frame 3, the `ACK_`
/// of its `OPEN`.
const DOWN_OPEN_ACK: usize = 3;

/// Whether the server may store the file despite `tamper`: only if it takes
/// effect after the file is whole at the server (`recorded` is an untouched
/// session).
fn may_store(tamper: &Tamper, recorded: &Recording) -> bool {
    match tamper {
        Tamper::Frame { dir, index, action } => {
            // The first frame the receiver sees differently.
            let effect = match action {
                Action::Duplicate => index + 1,
                _ => *index,
            };
            match dir {
                Dir::Up => effect > UP_DONE,
                Dir::Down => effect > DOWN_OPEN_ACK,
            }
        }
        Tamper::Truncate { dir: Dir::Up, at } => *at >= wire_len(&recorded.up[..=UP_DONE]),
        Tamper::Truncate { dir: Dir::Down, at } => {
            *at >= wire_len(&recorded.down[..=DOWN_OPEN_ACK])
        }
        Tamper::Cut { .. } => unreachable!("the matrix truncates, it does not cut"),
    }
}

/// A record appended after the server's last one (its `ENDD`, sent twice)
/// can only be seen by the device (proto-spec.md §8.4).
fn device_alone_can_see(tamper: &Tamper, recorded: &Recording) -> bool {
    matches!(
        tamper,
        Tamper::Frame { dir: Dir::Down, index, action: Action::Duplicate }
            if index + 1 == recorded.down.len()
    )
}

/// Every manipulation at every frame of both directions of `a`, frames of
/// `b` spliced in, and truncation at every byte of each frame header and of
/// the first 16 bytes of each body, at the last byte of each frame, and at
/// every 29th byte.
fn cases(a: &Recording, b: &Recording) -> Vec<Tamper> {
    let mut cases = Vec::new();
    for (dir, frames, other) in [(Dir::Up, &a.up, &b.up), (Dir::Down, &a.down, &b.down)] {
        for (i, spliced) in other.iter().enumerate().take(frames.len()) {
            let mut actions = vec![
                Action::Flip {
                    at: At::Start(0),
                    mask: 0x04,
                },
                Action::Flip {
                    at: At::Middle,
                    mask: 0x04,
                },
                Action::Flip {
                    at: At::End(1),
                    mask: 0x04,
                },
                Action::FlipType,
                Action::LengthPlusOne,
                Action::Duplicate,
                Action::Drop,
                Action::Garbage,
                Action::Replace(spliced.clone()),
            ];
            if i + 1 < frames.len() {
                actions.push(Action::SwapWithNext);
            }
            cases.extend(actions.into_iter().map(|action| Tamper::Frame {
                dir,
                index: i,
                action,
            }));
        }
        let total = wire_len(frames);
        let mut offsets = std::collections::BTreeSet::new();
        let mut start = 0;
        for f in frames {
            for k in 0..(HEADER_LEN + 16).min(HEADER_LEN + f.body.len()) {
                offsets.insert(start + k);
            }
            start += HEADER_LEN + f.body.len();
            offsets.insert(start - 1);
        }
        offsets.extend((0..total).step_by(29));
        cases.extend(
            offsets
                .into_iter()
                .filter(|&at| at < total)
                .map(|at| Tamper::Truncate { dir, at }),
        );
    }
    cases
}

/// What one case came to.
struct Outcome {
    n: usize,
    tamper: Tamper,
    name: String,
    device_error: Option<ClientError>,
    /// How the server ended the connection.
    ending: Option<Ending>,
}

/// Runs one case: the session through a proxy applying `tamper`, and the
/// server's account of the connection.
async fn run_case(target: SocketAddr, events: Events, n: usize, tamper: Tamper) -> Outcome {
    let mut watch = events.subscribe();
    let name = format!("case-{n}.png");
    let proxy = start_proxy(target, tamper.clone()).await;
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        device_run(proxy.addr, &image(&name)),
    )
    .await
    .expect("every case ends by itself");
    let proxied = proxy.finished(Duration::from_secs(10)).await;
    let peer = proxied.server_saw.expect("the proxy reached the server");
    let ending = ending_of(&mut watch, peer, Duration::from_secs(10))
        .await
        .map(|(_, ending)| ending);
    Outcome {
        n,
        tamper,
        name,
        device_error: result.err(),
        ending,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_manipulation_at_every_position_is_detected() {
    let server = start_server_with(pki().server_config(), |s| {
        s.handshake_timeout = Duration::from_millis(1500);
        s.idle_timeout = Duration::from_millis(1500);
        // Every case runs as device-1: each may hold an upload until the
        // server ends its connection, and none may be refused for others.
        s.storage.max_uploads_per_device = AT_ONCE;
    })
    .await;
    let data = server.data().to_owned();
    let a = record_session(&server, "recorded-a.png").await;
    let b = record_session(&server, "recorded-b.png").await;
    // The layout the cases rely on.
    let up_kinds: Vec<String> = a.up.iter().map(|f| f.kind.to_string()).collect();
    let down_kinds: Vec<String> = a.down.iter().map(|f| f.kind.to_string()).collect();
    assert_eq!(
        up_kinds,
        [
            "HELO", "PREM", "FINI", "SECX", "IMGX", "IMGX", "IMGX", "ENDD"
        ]
    );
    assert_eq!(down_kinds, ["HELO", "FINI", "ACK_", "ACK_", "ACK_", "ENDD"]);
    assert_eq!(up_kinds[UP_DONE], "IMGX");
    assert_eq!(down_kinds[DOWN_OPEN_ACK], "ACK_");

    let cases = cases(&a, &b);
    let total = cases.len();
    let limit = Arc::new(Semaphore::new(AT_ONCE));
    let mut tasks = tokio::task::JoinSet::new();
    for (n, tamper) in cases.into_iter().enumerate() {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (target, events) = (server.addr, server.events.clone());
        tasks.spawn(async move {
            let outcome = run_case(target, events, n, tamper).await;
            drop(permit);
            outcome
        });
    }
    let mut outcomes = Vec::with_capacity(total);
    while let Some(r) = tasks.join_next().await {
        outcomes.push(r.unwrap());
    }
    outcomes.sort_by_key(|o| o.n);

    let mut detected = 0;
    let mut device_only = 0;
    let mut failures = Vec::new();
    let (_, _, content) = source();
    for o in outcomes {
        let Outcome {
            n,
            tamper,
            name,
            device_error,
            ending,
        } = o;
        if let Some(bytes) = stored_content(&data, "device-1", &name)
            && (!may_store(&tamper, &a) || &bytes != content)
        {
            failures.push(format!(
                "case {n} {tamper:?}: stored a file it must not have"
            ));
            continue;
        }
        // The device sees it as a failure of the session itself (not, say,
        // a refusal by the server), and the server ends the connection
        // otherwise than cleanly, unless only the device can see it.
        let session_failed = matches!(device_error, Some(ClientError::Session(_)));
        match ending {
            Some(Ending::Clean) if session_failed && device_alone_can_see(&tamper, &a) => {
                detected += 1;
                device_only += 1;
            }
            Some(ending)
                if session_failed
                    && ending != Ending::Clean
                    && !device_alone_can_see(&tamper, &a) =>
            {
                detected += 1;
            }
            _ => failures.push(format!(
                "case {n} {tamper:?}: device error {device_error:?}, server ending {ending:?}"
            )),
        }
    }
    println!(
        "manipulation matrix: {total} manipulations, {detected} detected \
         ({device_only} seen by the device alone, as the protocol allows)"
    );
    assert!(
        failures.is_empty(),
        "{} undetected:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(detected, total);

    // The server goes on serving a good device.
    let mut good =
        DeviceClient::connect(&server.addr.to_string(), pki().device_config(), settings())
            .await
            .expect("a good device is served after the matrix");
    good.send_text("still serving").await.unwrap();
    good.close().await.unwrap();
    assert!(incoming_is_empty(&data), "partial files left behind");
    server.stop().await;
}
