//! A device that speaks the application protocol by hand over a real
//! session, so that each answer can be checked where it comes, and the
//! messages it sends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use secured::crypto::hash::sha256;
use secured::handshake::DeviceConfig;
use secured::message::{
    Ack, AckStatus, AlertCode, Imgx, ImgxOpen, MAX_CHUNK_LEN, MediaKind, Message, Secx, StreamId,
};
use secured::pki::Identity;
use secured::session::{Session, SessionError};
use secured::testkit::pki;
use secured::transfer::file_digest;
use tokio::net::TcpStream;

/// Longest wait for an answer; a device that gets none fails instead of
/// hanging.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// `SECX` on `stream`.
pub fn secx(stream: u32, text: &str) -> Message {
    Message::Secx(Secx {
        stream: StreamId(stream),
        text: text.into(),
    })
}

/// `IMGX OPEN` of an image `name` of `size` bytes on `stream`.
pub fn open(stream: u32, name: &str, size: u64) -> Message {
    Message::Imgx(Imgx::Open(ImgxOpen {
        stream: StreamId(stream),
        kind: MediaKind::Image,
        size,
        name: name.into(),
        content_type: "image/png".into(),
        sharing: None,
    }))
}

/// `IMGX DATA` with `chunk` on `stream`.
pub fn data(stream: u32, chunk: &[u8]) -> Message {
    Message::Imgx(Imgx::Data {
        stream: StreamId(stream),
        chunk: Bytes::copy_from_slice(chunk),
    })
}

/// `IMGX DONE` on `stream` for the image `name` with `content` (as
/// [`open`] declares it), signed by `signer`.
pub fn done(signer: &Identity, stream: u32, name: &str, content: &[u8]) -> Message {
    let digest = file_digest(
        MediaKind::Image,
        content.len() as u64,
        name,
        "image/png",
        &sha256(&[content]),
    );
    Message::Imgx(Imgx::Done {
        stream: StreamId(stream),
        signature: signer.key().pss_sign_digest(&digest).expect("sign"),
    })
}

/// `IMGX ABORT` on `stream`.
pub fn abort(stream: u32) -> Message {
    Message::Imgx(Imgx::Abort {
        stream: StreamId(stream),
        reason: "test".into(),
    })
}

/// An `ACK_`'s detail as text.
pub fn detail(ack: &Ack) -> String {
    String::from_utf8_lossy(&ack.detail).into_owned()
}

/// A device speaking raw messages over an established session of protocol
/// version 1 (its `IMGX` messages have version 1's layout; version 2 is
/// exercised through the device API in `tests/files.rs`).
pub struct RawDevice {
    pub session: Session<TcpStream>,
    /// The address the server sees this device's connection from.
    pub local: SocketAddr,
    identity: Arc<Identity>,
    next: u32,
}

impl RawDevice {
    /// Connects and completes a version 1 handshake with `config`.
    pub async fn connect(addr: SocketAddr, config: DeviceConfig) -> Self {
        let config = DeviceConfig {
            versions: &[secured::message::PROTOCOL_VERSION],
            ..config
        };
        let stream = TcpStream::connect(addr).await.expect("connect");
        let local = stream.local_addr().expect("local address");
        let identity = config.identity.clone();
        let session = Session::connect(stream, config, Duration::from_secs(10))
            .await
            .expect("the handshake completes");
        Self {
            session,
            local,
            identity,
            next: 1,
        }
    }

    /// `device-1` of the test PKI.
    pub async fn device1(addr: SocketAddr) -> Self {
        Self::connect(addr, pki().device_config()).await
    }

    /// `device-2` of the test PKI.
    pub async fn device2(addr: SocketAddr) -> Self {
        Self::connect(addr, pki().device_config_as(pki().device2.identity())).await
    }

    /// A new stream id.
    pub fn next_stream(&mut self) -> u32 {
        let stream = self.next;
        self.next += 2;
        stream
    }

    pub async fn send(&mut self, msg: &Message) {
        self.session.send(msg).await.expect("send");
    }

    /// The next message, or the error that ended the session (bounded).
    pub async fn recv(&mut self) -> Result<Message, SessionError> {
        tokio::time::timeout(ANSWER_WITHIN, self.session.recv())
            .await
            .unwrap_or_else(|_| panic!("no answer within {ANSWER_WITHIN:?}"))
    }

    /// The next message, which must be an `ACK_`.
    pub async fn ack(&mut self) -> Ack {
        match self.recv().await {
            Ok(Message::Ack(a)) => a,
            other => panic!("expected ACK_, got {other:?}"),
        }
    }

    /// The next message must be an `ACK_` with `status`.
    pub async fn expect_ack(&mut self, status: AckStatus) {
        let ack = self.ack().await;
        assert_eq!(ack.status, status, "{ack:?}: {}", detail(&ack));
    }

    /// The session must end with the server's protected alert `code`.
    pub async fn expect_alert(&mut self, code: AlertCode) {
        match self.recv().await {
            Err(SessionError::PeerAlert(c)) if c == code => {}
            other => panic!("expected ALRT {code}, got {other:?}"),
        }
    }

    /// Sends `OPEN` on a new stream and returns the stream and the answer.
    pub async fn open(&mut self, name: &str, size: u64) -> (u32, Ack) {
        let stream = self.next_stream();
        self.send(&open(stream, name, size)).await;
        (stream, self.ack().await)
    }

    /// Sends `content` on `stream` in chunks as large as allowed.
    pub async fn data(&mut self, stream: u32, content: &[u8]) {
        for chunk in content.chunks(MAX_CHUNK_LEN) {
            self.send(&data(stream, chunk)).await;
        }
    }

    /// Sends `DONE`, signed with this device's key, and returns the answer.
    pub async fn done(&mut self, stream: u32, name: &str, content: &[u8]) -> Ack {
        let done = done(&self.identity, stream, name, content);
        self.send(&done).await;
        self.ack().await
    }

    /// Sends `ABORT` and returns the answer.
    pub async fn abort(&mut self, stream: u32) -> Ack {
        self.send(&abort(stream)).await;
        self.ack().await
    }

    /// A whole upload: the `OPEN` refusal, or the final `ACK_`.
    pub async fn upload(&mut self, name: &str, content: &[u8]) -> Ack {
        let (stream, ack) = self.open(name, content.len() as u64).await;
        if ack.status != AckStatus::Ok {
            return ack;
        }
        self.data(stream, content).await;
        self.done(stream, name, content).await
    }

    /// Uploads, checks the server's receipt, and returns the name the file
    /// was stored under.
    pub async fn store(&mut self, name: &str, content: &[u8]) -> String {
        let ack = self.upload(name, content).await;
        assert_eq!(ack.status, AckStatus::Ok, "{name}: {}", detail(&ack));
        assert_eq!(&ack.detail[..32], &sha256(&[content])[..]);
        String::from_utf8(ack.detail[32..].to_vec()).expect("a UTF-8 name")
    }

    /// Sends a text, which must be acknowledged.
    pub async fn text(&mut self, text: &str) {
        let stream = self.next_stream();
        self.send(&secx(stream, text)).await;
        self.expect_ack(AckStatus::Ok).await;
    }

    /// Ends the session cleanly (`ENDD` both ways).
    pub async fn close(mut self) {
        self.session
            .close(Duration::from_secs(5))
            .await
            .expect("a clean close");
    }
}
