//! The device side: `DeviceStart` → `ExpectServerHelo` →
//! `ExpectServerFinished` → [`Established`]. An enrolling device starts
//! from [`EnrollStart`] instead: a request in place of its certificate,
//! and the root pinned by fingerprint (proto-spec.md §14.2).

use std::sync::Arc;
use std::time::SystemTime;

use super::{
    Established, HandshakeError, check_finished, device_proof_input, expect_kind, seal_finished,
};
use subtle::ConstantTimeEq;

use crate::crypto::hash::{HASH_LEN, Transcript, sha256};
use crate::crypto::kdf::{self, NONCE_LEN};
use crate::crypto::{CryptoProvider, PreMaster, RsaPrivateKey};
use crate::frame::{Frame, FrameKind};
use crate::message::{Helo, HeloRole, Message, Prem, chain_extension};
use crate::pki::{
    CertError, CertifiedPeer, Identity, KeyPossession, Role, ServerName, TrustAnchor, verify_chain,
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
        let DeviceConfig {
            identity,
            anchor,
            server_name,
            provider,
            versions,
        } = self.config;
        Hello {
            role: HeloRole::Device,
            credential: identity.cert_der().to_vec(),
            chain: identity.chain().to_vec(),
            key: Arc::clone(identity.key()),
            trust: ServerTrust::Anchor(anchor),
            server_name,
            provider,
            versions,
        }
        .start()
    }
}

/// What an enrolling device needs for its handshake (proto-spec.md
/// §14.2): its request and key instead of a certificate, and the root's
/// fingerprint (from the token) instead of the root.
#[derive(Clone)]
pub struct EnrollConfig {
    /// The PKCS#10 request, DER.
    pub request_der: Vec<u8>,
    /// The request's private key.
    pub key: Arc<dyn RsaPrivateKey>,
    /// SHA-256 of the root certificate the server must chain to.
    pub root_fingerprint: [u8; 32],
    /// The name the device dialled; the server certificate must carry it.
    pub server_name: ServerName,
    /// The crypto backend.
    pub provider: &'static CryptoProvider,
    /// The protocol versions offered, most preferred first.
    pub versions: &'static [u16],
}

/// An enrolling device before anything was sent.
pub struct EnrollStart {
    config: EnrollConfig,
}

impl EnrollStart {
    /// A new enrollment handshake.
    #[must_use]
    pub fn new(config: EnrollConfig) -> Self {
        Self { config }
    }

    /// Produces the enrolling device's `HELO` (role 3, the request in place
    /// of a certificate).
    ///
    /// # Errors
    /// [`HandshakeError::Crypto`] if the random source fails.
    pub fn start(self) -> Result<(ExpectServerHelo, Frame), HandshakeError> {
        let c = self.config;
        Hello {
            role: HeloRole::Enrollee,
            credential: c.request_der,
            chain: Vec::new(),
            key: c.key,
            trust: ServerTrust::Pinned(c.root_fingerprint),
            server_name: c.server_name,
            provider: c.provider,
            versions: c.versions,
        }
        .start()
    }
}

/// How the device decides to trust the server's chain.
enum ServerTrust {
    /// The configured root.
    Anchor(Arc<TrustAnchor>),
    /// The root the server sends in its chain, if its SHA-256 is this one.
    Pinned([u8; 32]),
}

/// What the device side needs from its `HELO` to its `FINI`.
struct Hello {
    role: HeloRole,
    credential: Vec<u8>,
    chain: Vec<Vec<u8>>,
    key: Arc<dyn RsaPrivateKey>,
    trust: ServerTrust,
    server_name: ServerName,
    provider: &'static CryptoProvider,
    versions: &'static [u16],
}

impl Hello {
    fn start(self) -> Result<(ExpectServerHelo, Frame), HandshakeError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.provider.random.fill(&mut nonce)?;
        let frame = Message::Helo(Helo {
            role: self.role,
            versions: self.versions.to_vec(),
            nonce,
            cert_der: self.credential.clone(),
            extensions: chain_extension(&self.chain).into_iter().collect(),
        })
        .to_plain_frame();
        let mut transcript = Transcript::new();
        transcript.add(&frame.to_wire());
        Ok((
            ExpectServerHelo {
                hello: self,
                nonce,
                transcript,
            },
            frame,
        ))
    }
}

/// Waiting for the server's `HELO`.
pub struct ExpectServerHelo {
    hello: Hello,
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
        let ours = self.hello.versions;
        let [chosen] = helo.versions[..] else {
            return Err(HandshakeError::ProtocolVersion {
                offered: helo.versions,
                ours,
            });
        };
        if !ours.contains(&chosen) {
            return Err(HandshakeError::ProtocolVersion {
                offered: helo.versions,
                ours,
            });
        }
        let chain = helo.chain()?;
        let certificate_error = |error| HandshakeError::Certificate {
            peer: Role::Server,
            error,
        };
        let anchor = match &self.hello.trust {
            ServerTrust::Anchor(anchor) => Arc::clone(anchor),
            ServerTrust::Pinned(fingerprint) => Arc::new(
                pinned_root(&chain, fingerprint, self.hello.provider).map_err(certificate_error)?,
            ),
        };
        let server = verify_chain(
            &anchor,
            &helo.cert_der,
            &chain,
            Role::Server,
            Some(&self.hello.server_name),
            now,
        )
        .map_err(certificate_error)?;
        self.transcript.add(&frame.to_wire());
        let hellos_hash = self.transcript.hash();

        let provider = self.hello.provider;
        let pre_master = PreMaster::random(provider.random)?;
        let encrypted_pre_master = server.public_key().oaep_encrypt(pre_master.as_bytes())?;
        let proof = device_proof_input(&hellos_hash, &encrypted_pre_master);
        let device_signature = self.hello.key.pss_sign(&proof)?;
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

/// The root among the server's chain whose SHA-256 is `fingerprint`,
/// checked as a trust anchor.
fn pinned_root(
    chain: &[Vec<u8>],
    fingerprint: &[u8; 32],
    provider: &'static CryptoProvider,
) -> Result<TrustAnchor, CertError> {
    let Some(root) = chain
        .iter()
        .find(|der| bool::from(sha256(&[der]).ct_eq(fingerprint)))
    else {
        return Err(CertError::PinnedRootMissing {
            fingerprint: hex::encode(fingerprint),
        });
    };
    TrustAnchor::check(root, provider)
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
            transcript_hash: self.th,
        })
    }
}
