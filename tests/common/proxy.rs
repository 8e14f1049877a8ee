//! The tampering proxy: it sits between a device and a server on
//! 127.0.0.1, forwards one connection frame by frame in both directions,
//! and applies one [`Tamper`]: an [`Action`] on one frame of one direction
//! (bit flips, a changed type or length, replays, reordering, drops,
//! garbage, a replaced or rewritten frame), or the end of one direction at
//! a byte offset. It can record the frames of both directions as they were
//! on the wire.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use secured::frame::{Frame, FrameCodec, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Device to server.
    Up,
    /// Server to device.
    Down,
}

/// Where in a frame's body a bit is flipped.
#[derive(Debug, Clone, Copy)]
pub enum At {
    /// This many bytes from the start.
    Start(usize),
    /// The middle byte (`len / 2`).
    Middle,
    /// This many bytes from the end (1 = the last byte).
    End(usize),
}

/// A function that rewrites a frame.
pub type Rewrite = Arc<dyn Fn(Frame) -> Frame + Send + Sync>;

/// What the proxy does to one frame.
#[derive(Clone)]
pub enum Action {
    /// XOR `mask` into the body byte at `at` (nothing if there is none).
    Flip { at: At, mask: u8 },
    /// Change the frame type (a bit of its second letter).
    FlipType,
    /// Announce one byte more than the body has.
    LengthPlusOne,
    /// Send the frame twice.
    Duplicate,
    /// Send the frame after the next one.
    SwapWithNext,
    /// Do not forward the frame.
    Drop,
    /// Send bytes that are no frame before it.
    Garbage,
    /// Send this frame instead (from another session, say).
    Replace(Frame),
    /// Send what the function makes of the frame instead.
    Rewrite(Rewrite),
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flip { at, mask } => write!(f, "Flip({at:?}, {mask:#04x})"),
            Self::FlipType => f.write_str("FlipType"),
            Self::LengthPlusOne => f.write_str("LengthPlusOne"),
            Self::Duplicate => f.write_str("Duplicate"),
            Self::SwapWithNext => f.write_str("SwapWithNext"),
            Self::Drop => f.write_str("Drop"),
            Self::Garbage => f.write_str("Garbage"),
            Self::Replace(frame) => write!(f, "Replace({})", frame.kind),
            Self::Rewrite(_) => f.write_str("Rewrite"),
        }
    }
}

/// The one manipulation a proxy applies.
#[derive(Debug, Clone)]
pub enum Tamper {
    /// `action` on frame `index` (0 = the first) of direction `dir`.
    Frame {
        dir: Dir,
        index: usize,
        action: Action,
    },
    /// Forwards the first `at` bytes of `dir`, then ends that direction
    /// (the other one goes on).
    Truncate { dir: Dir, at: usize },
    /// Forwards the first `at` bytes of `dir`, then closes the connection
    /// both ways.
    Cut { dir: Dir, at: usize },
}

impl Tamper {
    /// `action` on device → server frame `index` (0 = `HELO`, 1 = `PREM`,
    /// 2 = `FINI`, 3 = the first application record, …).
    pub fn up(index: usize, action: Action) -> Self {
        Self::Frame {
            dir: Dir::Up,
            index,
            action,
        }
    }

    /// `action` on server → device frame `index`.
    pub fn down(index: usize, action: Action) -> Self {
        Self::Frame {
            dir: Dir::Down,
            index,
            action,
        }
    }

    /// The direction it applies to.
    pub fn dir(&self) -> Dir {
        match self {
            Self::Frame { dir, .. } | Self::Truncate { dir, .. } | Self::Cut { dir, .. } => *dir,
        }
    }
}

/// The frames of a proxied connection, per direction, as they arrived at
/// the proxy.
#[derive(Debug, Default)]
pub struct Recording {
    pub up: Vec<Frame>,
    pub down: Vec<Frame>,
}

/// The wire length of `frames`.
pub fn wire_len(frames: &[Frame]) -> usize {
    frames.iter().map(|f| HEADER_LEN + f.body.len()).sum()
}

/// A proxy for one connection to a server.
pub struct Proxy {
    /// Where the device connects.
    pub addr: SocketAddr,
    server_saw: oneshot::Receiver<SocketAddr>,
    task: JoinHandle<Recording>,
}

/// What a proxy saw of its connection.
#[derive(Debug, Default)]
pub struct Proxied {
    /// The address the server saw the connection from (as its
    /// `Event::Closed` names it); `None` if the proxy never reached it.
    pub server_saw: Option<SocketAddr>,
    /// The frames, if the proxy recorded them.
    pub recording: Recording,
}

impl Proxy {
    /// Waits (at most `within`) until the connection has ended both ways;
    /// a proxy still running then is stopped, and what it recorded is lost.
    pub async fn finished(mut self, within: Duration) -> Proxied {
        let recording = match tokio::time::timeout(within, &mut self.task).await {
            Ok(done) => done.unwrap_or_default(),
            Err(_) => {
                self.task.abort();
                Recording::default()
            }
        };
        Proxied {
            server_saw: self.server_saw.try_recv().ok(),
            recording,
        }
    }
}

/// A proxy to `target` for one connection, applying `tamper`.
pub async fn start_proxy(target: SocketAddr, tamper: impl Into<Option<Tamper>>) -> Proxy {
    spawn(target, tamper.into(), false).await
}

/// A proxy to `target` for one connection that changes nothing and records
/// the frames.
pub async fn start_recording_proxy(target: SocketAddr) -> Proxy {
    spawn(target, None, true).await
}

/// [`start_proxy`] for a test without a runtime: the proxy runs on a thread
/// of its own; returns where the device connects.
pub fn start_proxy_thread(target: SocketAddr, tamper: Tamper) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the proxy");
        runtime.block_on(async move {
            let proxy = start_proxy(target, tamper).await;
            let _ = tx.send(proxy.addr);
            proxy.finished(Duration::from_secs(120)).await;
        });
    });
    rx.recv().expect("the proxy starts")
}

async fn spawn(target: SocketAddr, tamper: Option<Tamper>, record: bool) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    let (tx, server_saw) = oneshot::channel();
    let task = tokio::spawn(async move {
        let Ok((device, _)) = listener.accept().await else {
            return Recording::default();
        };
        let Ok(server) = TcpStream::connect(target).await else {
            return Recording::default();
        };
        if let Ok(local) = server.local_addr() {
            let _ = tx.send(local);
        }
        let (d_read, d_write) = device.into_split();
        let (s_read, s_write) = server.into_split();
        let up = pump(d_read, s_write, Dir::Up, tamper.as_ref(), record);
        let down = pump(s_read, d_write, Dir::Down, tamper.as_ref(), record);
        tokio::pin!(up, down);
        let (mut up_frames, mut down_frames) = (None, None);
        while up_frames.is_none() || down_frames.is_none() {
            let (dir, (end, frames)) = tokio::select! {
                r = &mut up, if up_frames.is_none() => (Dir::Up, r),
                r = &mut down, if down_frames.is_none() => (Dir::Down, r),
            };
            match dir {
                Dir::Up => up_frames = Some(frames),
                Dir::Down => down_frames = Some(frames),
            }
            if end == End::Cut {
                // Returning drops both directions: both sockets close.
                break;
            }
        }
        Recording {
            up: up_frames.unwrap_or_default(),
            down: down_frames.unwrap_or_default(),
        }
    });
    Proxy {
        addr,
        server_saw,
        task,
    }
}

/// How a direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its input ended, or its output failed.
    Done,
    /// A [`Tamper::Cut`]: the whole connection is to close.
    Cut,
}

/// What `action` makes of `frame`, appended to `out`; a frame held back for
/// later goes to `held`.
fn apply(action: &Action, frame: Frame, out: &mut Vec<u8>, held: &mut Option<Vec<u8>>) {
    let mut wire = frame.to_wire();
    match action {
        Action::Flip { at, mask } => {
            let body = wire.len() - HEADER_LEN;
            let pos = match *at {
                At::Start(n) => Some(n),
                At::Middle => Some(body / 2),
                At::End(n) => body.checked_sub(n),
            };
            if let Some(pos) = pos.filter(|&p| p < body) {
                wire[HEADER_LEN + pos] ^= mask;
            }
            out.extend(wire);
        }
        Action::FlipType => {
            wire[1] ^= 0x20;
            out.extend(wire);
        }
        Action::LengthPlusOne => {
            let len = u32::from_be_bytes([wire[4], wire[5], wire[6], wire[7]]) + 1;
            wire[4..8].copy_from_slice(&len.to_be_bytes());
            out.extend(wire);
        }
        Action::Duplicate => {
            out.extend(&wire);
            out.extend(wire);
        }
        Action::SwapWithNext => *held = Some(wire),
        Action::Drop => {}
        Action::Garbage => {
            out.extend(b"\x13\x37garbage-garbage-garbage\x00\xff");
            out.extend(wire);
        }
        Action::Replace(other) => out.extend(other.to_wire()),
        Action::Rewrite(rewrite) => out.extend(rewrite(frame).to_wire()),
    }
}

/// Forwards one direction, applying `tamper` where it is for this one, and
/// recording the frames if asked. Returns when the input ends, the output
/// fails, or a truncation or cut ends the direction.
async fn pump<R, W>(
    input: R,
    mut output: W,
    dir: Dir,
    tamper: Option<&Tamper>,
    record: bool,
) -> (End, Vec<Frame>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let tamper = tamper.filter(|t| t.dir() == dir);
    let limit = match tamper {
        Some(Tamper::Truncate { at, .. }) => Some((*at, End::Done)),
        Some(Tamper::Cut { at, .. }) => Some((*at, End::Cut)),
        _ => None,
    };
    let mut frames = FramedRead::new(input, FrameCodec::new());
    let mut recorded = Vec::new();
    let mut index = 0usize;
    let mut sent = 0usize;
    let mut held: Option<Vec<u8>> = None;
    while let Some(Ok(frame)) = frames.next().await {
        if record {
            recorded.push(frame.clone());
        }
        let mut out: Vec<u8> = Vec::new();
        match tamper {
            Some(Tamper::Frame {
                index: at, action, ..
            }) if *at == index => apply(action, frame, &mut out, &mut held),
            _ => {
                out.extend(frame.to_wire());
                if let Some(h) = held.take() {
                    out.extend(h);
                }
            }
        }
        index += 1;
        if let Some((at, end)) = limit
            && sent + out.len() > at
        {
            let _ = output.write_all(&out[..at - sent]).await;
            let _ = output.shutdown().await;
            return (end, recorded);
        }
        sent += out.len();
        if output.write_all(&out).await.is_err() {
            return (End::Done, recorded);
        }
    }
    if let Some(h) = held.take() {
        let _ = output.write_all(&h).await;
    }
    let _ = output.shutdown().await;
    (End::Done, recorded)
}
