//! The device side: `DeviceStart` → `ExpectServerHelo` →
//! `ExpectServerFinished` → [`Established`].

use std::sync::Arc;
use std::time::SystemTime;

use super::{
    Established, HandshakeError, check_finished, device_proof_input, expect_kind, seal_finished,
};
use crate::crypto::hash::{HASH_LEN, Transcript};
use crate::crypto::kdf::{self, NONCE_LEN};
use crate::crypto::{CryptoProvider, PreMaster};
use crate::frame::{Frame, FrameKind};
use crate::message::{Helo, HeloRole, Message, Prem};
use crate::pki::{
    CertifiedPeer, Identity, KeyPossession, Role, ServerName, TrustAnchor, verify_peer,
};
use crate::record::{RecordReader, RecordWriter};
use zeroize::Zeroizing;

/// What a device needs to connect.
#[derive(Clone)]
pub struct DeviceConfig {
    /// The device's certificate and key.
    pub identity: Arc<Identity>,
    /// The CA that must have issued the server's certificate.
    pub anchor: Arc<TrustAnchor>,
    /// The name the device dialled; the server certificate must carry it.
    pub server_name: ServerName,
    /// The crypto backend.
    pub provider: &'static CryptoProvider,
    /// The protocol versions offered, most preferred first
    /// ([`SUPPORTED_VERSIONS`] unless a test needs an older device).
    pub versions: &'static [u16],
}

/// The device before anything was sent.
pub struct DeviceStart {
    config: DeviceConfig,
}

impl DeviceStart {
    /// A new handshake.
    #[must_use]
    pub fn new(config: DeviceConfig) -> Self {
        Self { config }
    }

    /// Produces the device `HELO`.
    ///
    /// # Errors
    /// [`HandshakeError::Crypto`] if the random source fails.
    pub fn start(self) -> Result<(ExpectServerHelo, Frame), HandshakeError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.config.provider.random.fill(&mut nonce)?;
        let frame = Message::Helo(Helo {
            role: HeloRole::Device,
            versions: self.config.versions.to_vec(),
            nonce,
            cert_der: self.config.identity.cert_der().to_vec(),
            extensions: Vec::new(),
        })
        .to_plain_frame();
        let mut transcript = Transcript::new();
        transcript.add(&frame.to_wire());
        Ok((
            ExpectServerHelo {
                config: self.config,
                nonce,
                transcript,
            },
            frame,
        ))
    }
}

/// Waiting for the server's `HELO`.
pub struct ExpectServerHelo {
    config: DeviceConfig,
    nonce: [u8; NONCE_LEN],
    transcript: Transcript,
}

impl ExpectServerHelo {
    /// Verifies the server `HELO` and answers with `PREM` and the device's
    /// `FINI`.
    ///
    /// # Errors
    /// Any [`HandshakeError`]; the caller sends [`HandshakeError::alert`].
    pub fn handle(
        mut self,
        frame: Frame,
        now: SystemTime,
    ) -> Result<(ExpectServerFinished, Vec<Frame>), HandshakeError> {
        expect_kind(&frame, FrameKind::HELO)?;
        let Message::Helo(helo) = Message::decode(FrameKind::HELO, &frame.body)? else {
            return Err(HandshakeError::WrongRole);
        };
        if helo.role != HeloRole::Server {
            return Err(HandshakeError::WrongRole);
        }
        let [chosen] = helo.versions[..] else {
            return Err(HandshakeError::ProtocolVersion {
                offered: helo.versions,
                ours: self.config.versions,
            });
        };
        if !self.config.versions.contains(&chosen) {
            return Err(HandshakeError::ProtocolVersion {
                offered: helo.versions,
                ours: self.config.versions,
            });
        }
        let server = verify_peer(
            &self.config.anchor,
            &helo.cert_der,
            Role::Server,
            Some(&self.config.server_name),
            now,
        )
        .map_err(|error| HandshakeError::Certificate {
            peer: Role::Server,
            error,
        })?;
        self.transcript.add(&frame.to_wire());
        let hellos_hash = self.transcript.hash();

        let provider = self.config.provider;
        let pre_master = PreMaster::random(provider.random)?;
        let encrypted_pre_master = server.public_key().oaep_encrypt(pre_master.as_bytes())?;
        let proof = device_proof_input(&hellos_hash, &encrypted_pre_master);
        let device_signature = self.config.identity.key().pss_sign(&proof)?;
        let prem = Message::Prem(Prem {
            encrypted_pre_master,
            device_signature,
        })
        .to_plain_frame();
        self.transcript.add(&prem.to_wire());
        let th = self.transcript.hash();

        let keys = kdf::derive(&pre_master, &self.nonce, &helo.nonce, &th);
        let mut writer = RecordWriter::new(&keys.device_to_server);
        let fini = seal_finished(&mut writer, &keys.device_finished, &th)?;
        Ok((
            ExpectServerFinished {
                writer,
                reader: RecordReader::new(&keys.server_to_device),
                server_finished: Zeroizing::new(keys.server_finished),
                th,
                server,
                version: chosen,
            },
            vec![prem, fini],
        ))
    }
}

/// Waiting for the server's `FINI`.
pub struct ExpectServerFinished {
    writer: RecordWriter,
    reader: RecordReader,
    server_finished: Zeroizing<[u8; 32]>,
    th: [u8; HASH_LEN],
    server: CertifiedPeer,
    version: u16,
}

impl ExpectServerFinished {
    /// Checks the server's `FINI`: it proves the server decrypted the
    /// pre-master, so it holds the key of the certificate it presented.
    ///
    /// # Errors
    /// [`HandshakeError::FinishedFailed`], or an alert or unexpected message.
    pub fn handle(mut self, frame: Frame) -> Result<Established, HandshakeError> {
        check_finished(&mut self.reader, frame, &self.server_finished, &self.th)?;
        // Only the holder of the server key could decrypt the pre-master
        // that the FINI's keys derive from.
        Ok(Established {
            writer: self.writer,
            reader: self.reader,
            peer: self.server.into_verified(KeyPossession::assertion()),
            version: self.version,
        })
    }
}
