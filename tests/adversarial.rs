//! The manipulation matrix: a proxy between a real device and a real server
//! on 127.0.0.1 applies one manipulation at one position of a session
//! (handshake, a text, a small file, the close), in either direction, for
//! every frame position and every manipulation, and truncates the stream at
//! many byte offsets. Every case must be detected: both sides end with an
//! error (the one exception is a record appended after the server's last
//! one, which only the device can see, proto-spec.md §8.4), the server
//! stores nothing it did not receive intact and whole, and a good device is
//! served afterwards. The test prints its count.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{Logs, TestServer, start_server_with};
use futures_util::StreamExt;
use secured::client::{ClientError, ClientSettings, DeviceClient, OutgoingFile};
use secured::frame::{Frame, FrameCodec, HEADER_LEN};
use secured::message::MediaKind;
use secured::testkit::pki;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio_util::codec::FramedRead;

/// Which direction a manipulation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Device to server.
    Up,
    /// Server to device.
    Down,
}

/// One manipulation.
#[derive(Debug, Clone)]
enum Manip {
    FlipFirst,
    FlipMiddle,
    FlipLast,
    FlipType,
    LengthPlusOne,
    Replay,
    Reorder,
    Drop,
    Garbage,
    Splice(Frame),
    Truncate(usize),
}

#[derive(Debug, Clone)]
struct Case {
    dir: Dir,
    frame: usize,
    manip: Manip,
}

impl Case {
    /// Frame index of the first frame the receiver sees differently.
    fn first_effect(&self) -> usize {
        match self.manip {
            Manip::Replay => self.frame + 1,
            _ => self.frame,
        }
    }
}

/// Frames of a recorded session, per direction, as they were on the wire.
#[derive(Default)]
struct Recording {
    up: Vec<Frame>,
    down: Vec<Frame>,
}

fn settings() -> ClientSettings {
    ClientSettings {
        connect_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_millis(1500),
        reply_timeout: Duration::from_millis(1500),
        busy_retry_for: Duration::ZERO,
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

fn source() -> &'static (tempfile::TempDir, PathBuf, Vec<u8>) {
    static SRC: OnceLock<(tempfile::TempDir, PathBuf, Vec<u8>)> = OnceLock::new();
    SRC.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.png");
        let content: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        (dir, path, content)
    })
}

fn outgoing(name: &str) -> OutgoingFile {
    let (_, path, content) = source();
    OutgoingFile {
        path: path.clone(),
        name: name.to_owned(),
        kind: MediaKind::Image,
        content_type: "image/png".into(),
        size: content.len() as u64,
    }
}

/// Forwards one direction, applying `case` if it is for this direction.
/// Records frames when `record` is given. Returns when the input ends or a
/// truncation closes the connection.
async fn pump<R, W>(
    input: R,
    mut output: W,
    dir: Dir,
    case: Option<Case>,
    record: Option<Arc<Mutex<Recording>>>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = FramedRead::new(input, FrameCodec::new());
    let case = case.filter(|c| c.dir == dir);
    let mut index = 0usize;
    let mut sent = 0usize;
    let mut held: Option<Vec<u8>> = None;
    while let Some(Ok(frame)) = frames.next().await {
        if let Some(rec) = &record {
            let mut r = rec.lock().await;
            match dir {
                Dir::Up => r.up.push(frame.clone()),
                Dir::Down => r.down.push(frame.clone()),
            }
        }
        let mut out: Vec<u8> = Vec::new();
        let wire = frame.to_wire();
        match &case {
            Some(c) if c.frame == index => match &c.manip {
                Manip::FlipFirst | Manip::FlipMiddle | Manip::FlipLast => {
                    let mut w = wire.clone();
                    let body = w.len() - HEADER_LEN;
                    let at = HEADER_LEN
                        + match c.manip {
                            Manip::FlipFirst => 0,
                            Manip::FlipMiddle => body / 2,
                            _ => body.saturating_sub(1),
                        };
                    if at < w.len() {
                        w[at] ^= 0x04;
                    }
                    out.extend(w);
                }
                Manip::FlipType => {
                    let mut w = wire.clone();
                    w[1] ^= 0x20;
                    out.extend(w);
                }
                Manip::LengthPlusOne => {
                    let mut w = wire.clone();
                    let len = u32::from_be_bytes([w[4], w[5], w[6], w[7]]) + 1;
                    w[4..8].copy_from_slice(&len.to_be_bytes());
                    out.extend(w);
                }
                Manip::Replay => {
                    out.extend(&wire);
                    out.extend(&wire);
                }
                Manip::Reorder => held = Some(wire.clone()),
                Manip::Drop => {}
                Manip::Garbage => {
                    out.extend(b"\x13\x37garbage-garbage-garbage\x00\xff");
                    out.extend(&wire);
                }
                Manip::Splice(other) => out.extend(other.to_wire()),
                Manip::Truncate(_) => out.extend(&wire),
            },
            _ => {
                out.extend(&wire);
                if let Some(h) = held.take() {
                    out.extend(h);
                }
            }
        }
        index += 1;
        if let Some(Case {
            manip: Manip::Truncate(at),
            ..
        }) = &case
            && sent + out.len() > *at
        {
            let keep = at - sent;
            let _ = output.write_all(&out[..keep]).await;
            let _ = output.shutdown().await;
            return;
        }
        sent += out.len();
        if output.write_all(&out).await.is_err() {
            return;
        }
    }
    if let Some(h) = held.take() {
        let _ = output.write_all(&h).await;
    }
    let _ = output.shutdown().await;
}

/// A one-connection proxy to `target`. Returns its address, the address the
/// server sees as the peer (for the server's logs), and a handle to wait on.
async fn proxy(
    target: SocketAddr,
    case: Option<Case>,
    record: Option<Arc<Mutex<Recording>>>,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Receiver<SocketAddr>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let Ok((device, _)) = listener.accept().await else {
            return;
        };
        let Ok(server) = TcpStream::connect(target).await else {
            return;
        };
        if let Ok(local) = server.local_addr() {
            let _ = tx.send(local);
        }
        let (d_read, d_write) = device.into_split();
        let (s_read, s_write) = server.into_split();
        let up = pump(d_read, s_write, Dir::Up, case.clone(), record.clone());
        let down = pump(s_read, d_write, Dir::Down, case, record);
        tokio::join!(up, down);
    });
    (addr, rx, task)
}

async fn record_session(server: &TestServer, name: &str) -> Recording {
    let rec = Arc::new(Mutex::new(Recording::default()));
    let (addr, _, task) = proxy(server.addr, None, Some(rec.clone())).await;
    device_run(addr, &outgoing(name))
        .await
        .expect("an untouched session succeeds");
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    Arc::try_unwrap(rec)
        .ok()
        .expect("recording done")
        .into_inner()
}

fn wire_len(frames: &[Frame]) -> usize {
    frames.iter().map(|f| HEADER_LEN + f.body.len()).sum()
}

/// Index of the first frame that ends after byte `at` of a direction.
fn frame_at(frames: &[Frame], at: usize) -> usize {
    let mut end = 0;
    for (i, f) in frames.iter().enumerate() {
        end += HEADER_LEN + f.body.len();
        if at < end {
            return i;
        }
    }
    frames.len()
}

fn stored(data: &Path, name: &str) -> Option<Vec<u8>> {
    std::fs::read(data.join("device-1").join(name)).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_manipulation_at_every_position_is_detected() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber per test binary");

    let server = start_server_with(pki().server_config(), |s| {
        s.handshake_timeout = Duration::from_millis(1500);
        s.idle_timeout = Duration::from_millis(1500);
    })
    .await;
    let data = server.data_dir.path().to_owned();
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
    // The file is stored once the server has the DONE (up 6); the device
    // only sends it after the ACK_ of its OPEN (down 3).
    const UP_DONE: usize = 6;
    const DOWN_OPEN_ACK: usize = 3;

    let mut cases = Vec::new();
    for (dir, frames, other) in [(Dir::Up, &a.up, &b.up), (Dir::Down, &a.down, &b.down)] {
        for (i, spliced) in other.iter().enumerate().take(frames.len()) {
            let mut manips = vec![
                Manip::FlipFirst,
                Manip::FlipMiddle,
                Manip::FlipLast,
                Manip::FlipType,
                Manip::LengthPlusOne,
                Manip::Replay,
                Manip::Drop,
                Manip::Garbage,
                Manip::Splice(spliced.clone()),
            ];
            if i + 1 < frames.len() {
                manips.push(Manip::Reorder);
            }
            cases.extend(manips.into_iter().map(|manip| Case {
                dir,
                frame: i,
                manip,
            }));
        }
        // Truncation: every byte of each frame header and of the first 16
        // bytes of each body, the last byte of each frame, and every 29th.
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
        for at in offsets.into_iter().filter(|&at| at < total) {
            cases.push(Case {
                dir,
                frame: frame_at(frames, at),
                manip: Manip::Truncate(at),
            });
        }
    }

    let total = cases.len();
    let limit = Arc::new(Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for (n, case) in cases.into_iter().enumerate() {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let target = server.addr;
        tasks.spawn(async move {
            let name = format!("case-{n}.png");
            let (addr, peer_rx, task) = proxy(target, Some(case.clone()), None).await;
            let result =
                tokio::time::timeout(Duration::from_secs(30), device_run(addr, &outgoing(&name)))
                    .await
                    .expect("every case ends by itself");
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
            let peer = peer_rx.await.ok();
            drop(permit);
            (n, case, name, result.err().map(|e| e.to_string()), peer)
        });
    }
    let mut outcomes = Vec::with_capacity(total);
    while let Some(r) = tasks.join_next().await {
        outcomes.push(r.unwrap());
    }
    // Let the server finish logging the last sessions.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = logs.text();

    let mut detected = 0;
    let mut device_only = 0;
    let mut failures = Vec::new();
    let (_, _, content) = source();
    for (n, case, name, device_error, peer) in outcomes {
        let effect = case.first_effect();
        let stored_ok = match (&case.dir, &case.manip) {
            (Dir::Up, Manip::Truncate(at)) => *at >= wire_len(&a.up[..=UP_DONE]),
            (Dir::Up, _) => effect > UP_DONE,
            (Dir::Down, Manip::Truncate(at)) => *at >= wire_len(&a.down[..=DOWN_OPEN_ACK]),
            (Dir::Down, _) => effect > DOWN_OPEN_ACK,
        };
        let file = stored(&data, &name);
        if let Some(bytes) = &file
            && (!stored_ok || bytes != content)
        {
            failures.push(format!("case {n} {case:?}: stored a file it must not have"));
            continue;
        }
        let server_saw = peer.is_some_and(|p| {
            let peer = format!("\"peer\":\"{p}\"");
            log.lines()
                .any(|l| l.contains(&peer) && (l.contains("\"WARN\"") || l.contains("\"ERROR\"")))
        });
        match (&device_error, server_saw) {
            (Some(_), true) => detected += 1,
            // A record appended after the server's last one can only be seen
            // by the device (proto-spec.md §8.4).
            (Some(_), false)
                if case.dir == Dir::Down
                    && matches!(case.manip, Manip::Replay)
                    && case.frame + 1 == a.down.len() =>
            {
                detected += 1;
                device_only += 1;
            }
            _ => failures.push(format!(
                "case {n} {case:?}: device error {device_error:?}, server reported: {server_saw}"
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
    assert!(
        std::fs::read_dir(data.join("device-1/.incoming")).is_ok_and(|d| d.count() == 0),
        "partial files left behind"
    );
    server.stop().await;
}
