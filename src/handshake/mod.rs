//! The handshake (proto-spec.md §5), as pure state machines: frames in,
//! frames out, no I/O. `session` drives them over a socket; tests and the
//! fuzzers drive them in memory.
//!
//! ```text
//! device                                   server
//!   HELO(role=1, versions, nonce_d, cert_d) ->
//!                         <- HELO(role=2, version, nonce_s, cert_s)
//!   PREM(OAEP(pk_s, pre_master), PSS(sk_d, proof)) ->
//!   [FINI(HMAC(fin_d, th))] ->                  (protected, d2s seq 0)
//!                         <- [FINI(HMAC(fin_s, th))] (protected, s2d seq 0)
//! ```
//!
//! Each state is its own type and consumes itself, so a step cannot be
//! skipped or repeated; [`Established`] can only be built once the peer's
//! certificate verified (a [`VerifiedPeer`]) and its Finished MAC checked.

mod device;
mod server;

pub use device::{DeviceConfig, DeviceStart, ExpectServerFinished, ExpectServerHelo};
pub use device::{EnrollConfig, EnrollStart};
pub use server::{
    AfterHelo, Claimant, ExpectDeviceFinished, ExpectDeviceHelo, ExpectPrem, ServerConfig,
};

use subtle::ConstantTimeEq;

use crate::crypto::hash::{HASH_LEN, sha256};
use crate::crypto::{CryptoError, kdf};
use crate::frame::{Frame, FrameKind};
use crate::message::{AlertCode, DecodeError, Fini, Message};
use crate::pki::{CertError, CsrError, Role, VerifiedPeer};
use crate::record::{RecordError, RecordReader, RecordWriter};

/// Context string at the start of the device's signed proof (proto-spec.md §5.3).
pub const DEVICE_PROOF_CONTEXT: &[u8] = b"secured/1 device proof\0";

/// The result of a completed handshake: the record layer of both directions
/// and the verified identity of the peer (for the server facing an
/// enrolling device, the request whose key it proved).
pub struct Established<P = VerifiedPeer> {
    /// Sealing half for our direction, after our `FINI` (next seq 1).
    pub writer: RecordWriter,
    /// Opening half for the peer's direction, after its `FINI` (next seq 1).
    pub reader: RecordReader,
    /// The peer, as its certificate proved it.
    pub peer: P,
    /// The negotiated protocol version.
    pub version: u16,
    /// `th`, the transcript hash both Finished MACs cover (proto-spec.md
    /// §5.5); enrollment binds the token's proof to it (§14.3).
    pub transcript_hash: [u8; HASH_LEN],
}

impl<P: std::fmt::Debug> std::fmt::Debug for Established<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Established")
            .field("peer", &self.peer)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A message did not decode.
    #[error("malformed handshake message: {0}")]
    Decode(#[from] DecodeError),
    /// A message arrived out of order.
    #[error("expected {expected} but received {got}")]
    Unexpected {
        /// What the state machine waited for.
        expected: FrameKind,
        /// What arrived.
        got: FrameKind,
    },
    /// A `HELO` claimed the wrong role (e.g. a reflected message).
    #[error("the peer's HELO claims the wrong role")]
    WrongRole,
    /// No protocol version in common.
    #[error(
        "no protocol version in common (the other side offered {offered:?}, this side speaks {ours:?})"
    )]
    ProtocolVersion {
        /// What the peer offered or chose.
        offered: Vec<u16>,
        /// What this side speaks.
        ours: &'static [u16],
    },
    /// The peer's certificate failed verification.
    #[error("the {peer}'s certificate was refused: {error}")]
    Certificate {
        /// The role the certificate was checked for.
        peer: Role,
        /// The failed check.
        error: CertError,
    },
    /// An enrolling device's certificate request was refused.
    #[error("the certificate request was refused: {0}")]
    Request(CsrError),
    /// The device's PREM signature did not verify: it does not hold the key
    /// of the certificate it presented.
    #[error("the device could not prove it holds the private key of its certificate")]
    BadDeviceProof,
    /// The peer's Finished record or MAC did not verify: the handshake was
    /// tampered with, or the peer derived other keys (for the device: the
    /// server could not decrypt the pre-master, so it is not the server).
    #[error(
        "the peer's Finished message did not verify (tampering, or a peer without the right key)"
    )]
    FinishedFailed,
    /// The server refused the device's certificate for a reason outside
    /// the certificate itself (revoked, or revocation cannot be checked).
    #[error("the device's certificate was refused: {1}")]
    Refused(AlertCode, String),
    /// The peer sent an alert.
    #[error("the other side ended the handshake with alert {code}: {meaning}", code = .0, meaning = .0.meaning())]
    PeerAlert(AlertCode),
    /// A local cryptographic operation failed.
    #[error("local cryptographic failure: {0}")]
    Crypto(#[from] CryptoError),
}

impl HandshakeError {
    /// The alert to send to the peer for this error, if any.
    #[must_use]
    pub fn alert(&self) -> Option<AlertCode> {
        Some(match self {
            Self::Decode(_) => AlertCode::DecodeError,
            Self::Unexpected { .. } | Self::WrongRole => AlertCode::UnexpectedMessage,
            Self::ProtocolVersion { .. } => AlertCode::ProtocolVersion,
            Self::Certificate { error, .. } => cert_alert(error),
            Self::Request(CsrError::WeakKey { .. }) => AlertCode::WeakKey,
            Self::Request(_) => AlertCode::BadRequest,
            Self::BadDeviceProof => AlertCode::DecryptError,
            Self::FinishedFailed => AlertCode::HandshakeFailure,
            Self::Refused(code, _) => *code,
            Self::PeerAlert(_) => return None,
            Self::Crypto(_) => AlertCode::InternalError,
        })
    }
}

/// The alert for a refused certificate (proto-spec.md §9).
#[must_use]
pub fn cert_alert(e: &CertError) -> AlertCode {
    use CertError as C;
    match e {
        C::UnknownIssuer { .. }
        | C::SelfSigned { .. }
        | C::BadSignature
        | C::AnchorExpired { .. } => AlertCode::UnknownCa,
        C::Expired { .. } => AlertCode::CertificateExpired,
        C::NotYetValid { .. } => AlertCode::CertificateNotYetValid,
        C::WrongRole { .. } | C::IsCa | C::NameMismatch { .. } => AlertCode::CertificateRole,
        C::UnsupportedAlgorithm { .. } | C::UnsupportedCriticalExtension { .. } => {
            AlertCode::UnsupportedCertificate
        }
        C::Intermediate { source, .. } => cert_alert(source),
        _ => AlertCode::BadCertificate,
    }
}

/// Refuses anything but `expected`, turning a peer's alert into
/// [`HandshakeError::PeerAlert`].
fn expect_kind(frame: &Frame, expected: FrameKind) -> Result<(), HandshakeError> {
    if frame.kind == expected {
        return Ok(());
    }
    if frame.kind == FrameKind::ALRT
        && let Ok(Message::Alert(code)) = Message::decode(FrameKind::ALRT, &frame.body)
    {
        return Err(HandshakeError::PeerAlert(code));
    }
    Err(HandshakeError::Unexpected {
        expected,
        got: frame.kind,
    })
}

/// The bytes the device signs in `PREM` (proto-spec.md §5.3):
/// [`DEVICE_PROOF_CONTEXT`] ‖ `hellos_hash` (SHA-256 of both `HELO` frames)
/// ‖ SHA-256(`encrypted_pre_master`). Public for the test vectors and for
/// tools that craft their own `PREM`.
#[must_use]
pub fn device_proof_input(hellos_hash: &[u8; HASH_LEN], encrypted_pre_master: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DEVICE_PROOF_CONTEXT.len() + 2 * HASH_LEN);
    m.extend_from_slice(DEVICE_PROOF_CONTEXT);
    m.extend_from_slice(hellos_hash);
    m.extend_from_slice(&sha256(&[encrypted_pre_master]));
    m
}

/// Seals our `FINI` as the first record of our direction.
fn seal_finished(
    writer: &mut RecordWriter,
    finished_key: &[u8; 32],
    th: &[u8; HASH_LEN],
) -> Result<Frame, HandshakeError> {
    let body = Message::Fini(Fini {
        verify_data: kdf::finished_mac(finished_key, th),
    })
    .to_body();
    writer
        .seal_frame(FrameKind::FINI, &body)
        .map_err(|_| HandshakeError::Crypto(CryptoError::Encrypt))
}

/// Opens and checks the peer's `FINI` record.
fn check_finished(
    reader: &mut RecordReader,
    frame: Frame,
    finished_key: &[u8; 32],
    th: &[u8; HASH_LEN],
) -> Result<(), HandshakeError> {
    expect_kind(&frame, FrameKind::FINI)?;
    let plain = reader
        .open(frame)
        .map_err(|_: RecordError| HandshakeError::FinishedFailed)?;
    let Message::Fini(fini) = Message::decode(FrameKind::FINI, &plain)? else {
        return Err(HandshakeError::FinishedFailed);
    };
    let expected = kdf::finished_mac(finished_key, th);
    if bool::from(fini.verify_data.ct_eq(&expected)) {
        Ok(())
    } else {
        Err(HandshakeError::FinishedFailed)
    }
}

#[cfg(test)]
mod tests;
