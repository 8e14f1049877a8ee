//! The server side: `ExpectDeviceHelo` → `ExpectPrem` →
//! `ExpectDeviceFinished` → [`Established`].

use std::sync::Arc;
use std::time::SystemTime;

use zeroize::Zeroizing;

use super::{
    Established, HandshakeError, check_finished, device_proof_input, expect_kind, seal_finished,
};
use crate::crypto::hash::{HASH_LEN, Transcript};
use crate::crypto::kdf::{self, NONCE_LEN};
use crate::crypto::{CryptoProvider, PreMaster, unwrap_premaster};
use crate::frame::{Frame, FrameKind};
use crate::message::{Helo, HeloRole, Message};
use crate::pki::{
    CertifiedPeer, Identity, KeyPossession, Role, TrustAnchor, VerifiedPeer, verify_peer,
};
use crate::record::{RecordReader, RecordWriter};

/// What a server needs to accept devices.
#[derive(Clone)]
pub struct ServerConfig {
    /// The server's certificate and key.
    pub identity: Arc<Identity>,
    /// The CA that must have issued device certificates.
    pub anchor: Arc<TrustAnchor>,
    /// The crypto backend.
    pub provider: &'static CryptoProvider,
    /// The protocol versions accepted ([`SUPPORTED_VERSIONS`] unless a
    /// test needs an older server).
    pub versions: &'static [u16],
}

/// Waiting for the device's `HELO`.
pub struct ExpectDeviceHelo {
    config: ServerConfig,
}

impl ExpectDeviceHelo {
    /// A new handshake.
    #[must_use]
    pub fn new(config: ServerConfig) -> Self {
        Self { config }
    }

    /// Verifies the device `HELO` and its certificate, and answers with the
    /// server `HELO`.
    ///
    /// # Errors
    /// Any [`HandshakeError`]; the caller sends [`HandshakeError::alert`].
    pub fn handle(
        self,
        frame: Frame,
        now: SystemTime,
    ) -> Result<(ExpectPrem, Frame), HandshakeError> {
        expect_kind(&frame, FrameKind::HELO)?;
        let Message::Helo(helo) = Message::decode(FrameKind::HELO, &frame.body)? else {
            return Err(HandshakeError::WrongRole);
        };
        if helo.role != HeloRole::Device {
            return Err(HandshakeError::WrongRole);
        }
        // The first version in the device's list that this side speaks
        // (proto-spec.md §5.2).
        let Some(version) = helo
            .versions
            .iter()
            .copied()
            .find(|v| self.config.versions.contains(v))
        else {
            return Err(HandshakeError::ProtocolVersion {
                offered: helo.versions,
                ours: self.config.versions,
            });
        };
        let claimed = verify_peer(&self.config.anchor, &helo.cert_der, Role::Device, None, now)
            .map_err(|error| HandshakeError::Certificate {
                peer: Role::Device,
                error,
            })?;

        let mut transcript = Transcript::new();
        transcript.add(&frame.to_wire());
        let mut nonce = [0u8; NONCE_LEN];
        self.config.provider.random.fill(&mut nonce)?;
        let reply = Message::Helo(Helo {
            role: HeloRole::Server,
            versions: vec![version],
            nonce,
            cert_der: self.config.identity.cert_der().to_vec(),
            extensions: Vec::new(),
        })
        .to_plain_frame();
        transcript.add(&reply.to_wire());
        Ok((
            ExpectPrem {
                config: self.config,
                claimed,
                nonce_device: helo.nonce,
                nonce_server: nonce,
                transcript,
                version,
            },
            reply,
        ))
    }
}

/// Waiting for the device's `PREM`.
pub struct ExpectPrem {
    config: ServerConfig,
    claimed: CertifiedPeer,
    nonce_device: [u8; NONCE_LEN],
    nonce_server: [u8; NONCE_LEN],
    transcript: Transcript,
    version: u16,
}

impl ExpectPrem {
    /// The device this connection claims to be: its certificate verified,
    /// but a certificate is public, so possession of its key is not proven
    /// yet. Log it as claimed, never as the device.
    #[must_use]
    pub fn claimed(&self) -> &CertifiedPeer {
        &self.claimed
    }

    /// Checks the device's proof of possession and unwraps the pre-master
    /// with implicit rejection: a ciphertext that does not decrypt yields a
    /// random secret, and the failure shows only as a bad `FINI`.
    ///
    /// # Errors
    /// [`HandshakeError::BadDeviceProof`], a decode error or an alert.
    pub fn handle(mut self, frame: Frame) -> Result<ExpectDeviceFinished, HandshakeError> {
        expect_kind(&frame, FrameKind::PREM)?;
        let Message::Prem(prem) = Message::decode(FrameKind::PREM, &frame.body)? else {
            return Err(HandshakeError::BadDeviceProof);
        };
        let proof = device_proof_input(&self.transcript.hash(), &prem.encrypted_pre_master);
        self.claimed
            .public_key()
            .pss_verify(&proof, &prem.device_signature)
            .map_err(|_| HandshakeError::BadDeviceProof)?;
        let device = self.claimed.into_verified(KeyPossession::assertion());

        let provider = self.config.provider;
        let fallback = PreMaster::random(provider.random)?;
        let pre_master = unwrap_premaster(
            self.config.identity.key().as_ref(),
            &prem.encrypted_pre_master,
            fallback,
        );
        self.transcript.add(&frame.to_wire());
        let th = self.transcript.hash();
        let keys = kdf::derive(&pre_master, &self.nonce_device, &self.nonce_server, &th);
        Ok(ExpectDeviceFinished {
            writer: RecordWriter::new(&keys.server_to_device),
            reader: RecordReader::new(&keys.device_to_server),
            device_finished: Zeroizing::new(keys.device_finished),
            server_finished: Zeroizing::new(keys.server_finished),
            th,
            device,
            version: self.version,
        })
    }
}

/// Waiting for the device's `FINI`.
pub struct ExpectDeviceFinished {
    writer: RecordWriter,
    reader: RecordReader,
    device_finished: Zeroizing<[u8; 32]>,
    server_finished: Zeroizing<[u8; 32]>,
    th: [u8; HASH_LEN],
    device: VerifiedPeer,
    version: u16,
}

impl ExpectDeviceFinished {
    /// The device, which has proven that it holds its certificate's key.
    #[must_use]
    pub fn device(&self) -> &VerifiedPeer {
        &self.device
    }

    /// Checks the device's `FINI` and answers with the server's.
    ///
    /// # Errors
    /// [`HandshakeError::FinishedFailed`], or an alert or unexpected message.
    pub fn handle(mut self, frame: Frame) -> Result<(Established, Frame), HandshakeError> {
        check_finished(&mut self.reader, frame, &self.device_finished, &self.th)?;
        let fini = seal_finished(&mut self.writer, &self.server_finished, &self.th)?;
        Ok((
            Established {
                writer: self.writer,
                reader: self.reader,
                peer: self.device,
                version: self.version,
            },
            fini,
        ))
    }
}
