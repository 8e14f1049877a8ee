//! The server side: `ExpectDeviceHelo` → `ExpectPrem` →
//! `ExpectDeviceFinished` → [`Established`]. An enrolling device (a
//! request instead of a certificate, proto-spec.md §14.2) takes the same
//! steps with a [`CertRequest`] as its claim.

use std::sync::Arc;
use std::time::SystemTime;

use zeroize::Zeroizing;

use super::{
    Established, HandshakeError, check_finished, device_proof_input, expect_kind, seal_finished,
};
use crate::crypto::RsaPublicKey;
use crate::crypto::hash::{HASH_LEN, Transcript};
use crate::crypto::kdf::{self, NONCE_LEN};
use crate::crypto::{CryptoProvider, PreMaster, unwrap_premaster};
use crate::frame::{Frame, FrameKind};
use crate::message::{Helo, HeloRole, Message, PROTOCOL_VERSION_3, chain_extension};
use crate::pki::csr::ProvenRequest;
use crate::pki::{
    CertRequest, CertifiedPeer, Identity, KeyPossession, Role, TrustAnchor, VerifiedPeer,
    verify_chain,
};
use crate::record::{RecordReader, RecordWriter};

/// What a server needs to accept devices.
#[derive(Clone)]
pub struct ServerConfig {
    /// The server's certificate and key.
    pub identity: Arc<Identity>,
    /// The root that device certificates must chain to.
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

/// Where the server's handshake goes after the device's `HELO`: a device
/// with a certificate, or a device enrolling with a certificate request
/// (proto-spec.md §14.2). Both continue with the same steps; only what the
/// `PREM` signature proves differs.
pub enum AfterHelo {
    /// A device with a certificate.
    Device(ExpectPrem<CertifiedPeer>),
    /// A device asking for its first certificate.
    Enrollee(ExpectPrem<CertRequest>),
}

impl ExpectDeviceHelo {
    /// A new handshake.
    #[must_use]
    pub fn new(config: ServerConfig) -> Self {
        Self { config }
    }

    /// Verifies the device `HELO` and its certificate, and answers with the
    /// server `HELO`. A `HELO` of an enrolling device is refused with
    /// [`HandshakeError::WrongRole`]; see [`Self::handle_any`].
    ///
    /// # Errors
    /// Any [`HandshakeError`]; the caller sends [`HandshakeError::alert`].
    pub fn handle(
        self,
        frame: Frame,
        now: SystemTime,
    ) -> Result<(ExpectPrem<CertifiedPeer>, Frame), HandshakeError> {
        match self.handle_any(frame, now, false)? {
            (AfterHelo::Device(state), reply) => Ok((state, reply)),
            (AfterHelo::Enrollee(_), _) => Err(HandshakeError::WrongRole),
        }
    }

    /// As [`Self::handle`], and when `enrollment` is true also accepts the
    /// `HELO` of an enrolling device (role 3), whose request is checked
    /// here and whose key the `PREM` signature must then prove.
    ///
    /// # Errors
    /// Any [`HandshakeError`]; the caller sends [`HandshakeError::alert`].
    pub fn handle_any(
        self,
        frame: Frame,
        now: SystemTime,
        enrollment: bool,
    ) -> Result<(AfterHelo, Frame), HandshakeError> {
        expect_kind(&frame, FrameKind::HELO)?;
        let Message::Helo(helo) = Message::decode(FrameKind::HELO, &frame.body)? else {
            return Err(HandshakeError::WrongRole);
        };
        let enrolling = match helo.role {
            HeloRole::Device => false,
            HeloRole::Enrollee if enrollment => true,
            HeloRole::Enrollee | HeloRole::Server => return Err(HandshakeError::WrongRole),
        };
        // The first version in the device's list that this side speaks
        // (proto-spec.md §5.2); enrollment exists from version 3 on
        // (§14.2), so an enrollee's older versions are not candidates.
        let Some(version) = helo
            .versions
            .iter()
            .copied()
            .filter(|v| !enrolling || *v >= PROTOCOL_VERSION_3)
            .find(|v| self.config.versions.contains(v))
        else {
            return Err(HandshakeError::ProtocolVersion {
                offered: helo.versions,
                ours: self.config.versions,
            });
        };
        let chain = helo.chain()?;
        let claim = if enrolling {
            Claim::Enrollee(
                CertRequest::verify(&helo.cert_der, self.config.provider)
                    .map_err(HandshakeError::Request)?,
            )
        } else {
            Claim::Device(
                verify_chain(
                    &self.config.anchor,
                    &helo.cert_der,
                    &chain,
                    Role::Device,
                    None,
                    now,
                )
                .map_err(|error| HandshakeError::Certificate {
                    peer: Role::Device,
                    error,
                })?,
            )
        };

        let mut transcript = Transcript::new();
        transcript.add(&frame.to_wire());
        let mut nonce = [0u8; NONCE_LEN];
        self.config.provider.random.fill(&mut nonce)?;
        // An enrolling device holds no root yet, only its fingerprint: it
        // gets the root with the chain (proto-spec.md §14.2).
        let mut our_chain = self.config.identity.chain().to_vec();
        if enrolling && our_chain.len() < crate::pki::MAX_CHAIN_CERTS {
            our_chain.push(self.config.anchor.cert_der().to_vec());
        }
        let reply = Message::Helo(Helo {
            role: HeloRole::Server,
            versions: vec![version],
            nonce,
            cert_der: self.config.identity.cert_der().to_vec(),
            extensions: chain_extension(&our_chain).into_iter().collect(),
        })
        .to_plain_frame();
        transcript.add(&reply.to_wire());
        let hello = Hello {
            config: self.config,
            nonce_device: helo.nonce,
            nonce_server: nonce,
            transcript,
            version,
        };
        Ok((
            match claim {
                Claim::Device(claimed) => AfterHelo::Device(ExpectPrem { hello, claimed }),
                Claim::Enrollee(claimed) => AfterHelo::Enrollee(ExpectPrem { hello, claimed }),
            },
            reply,
        ))
    }
}

enum Claim {
    Device(CertifiedPeer),
    Enrollee(CertRequest),
}

/// What a `HELO` claims about the device: a key it must prove it holds in
/// `PREM`, and what that proof turns the claim into.
pub trait Claimant: Sized {
    /// The claim once proven.
    type Proven;
    /// The key the device's `PREM` signature must verify under.
    fn public_key(&self) -> &Arc<dyn RsaPublicKey>;
    /// Turns the claim into its proven form.
    fn prove(self, proof: KeyPossession) -> Self::Proven;
}

impl Claimant for CertifiedPeer {
    type Proven = VerifiedPeer;

    fn public_key(&self) -> &Arc<dyn RsaPublicKey> {
        CertifiedPeer::public_key(self)
    }

    fn prove(self, proof: KeyPossession) -> VerifiedPeer {
        self.into_verified(proof)
    }
}

impl Claimant for CertRequest {
    type Proven = ProvenRequest;

    fn public_key(&self) -> &Arc<dyn RsaPublicKey> {
        CertRequest::public_key(self)
    }

    fn prove(self, proof: KeyPossession) -> ProvenRequest {
        self.into_proven(proof)
    }
}

/// The state both `HELO`s leave behind.
struct Hello {
    config: ServerConfig,
    nonce_device: [u8; NONCE_LEN],
    nonce_server: [u8; NONCE_LEN],
    transcript: Transcript,
    version: u16,
}

/// Waiting for the device's `PREM`.
pub struct ExpectPrem<C> {
    hello: Hello,
    claimed: C,
}

impl<C: Claimant> ExpectPrem<C> {
    /// What this connection claims to be: its certificate (or request)
    /// verified, but a certificate is public, so possession of its key is
    /// not proven yet. Log it as claimed, never as the device.
    #[must_use]
    pub fn claimed(&self) -> &C {
        &self.claimed
    }

    /// Checks the device's proof of possession and unwraps the pre-master
    /// with implicit rejection: a ciphertext that does not decrypt yields a
    /// random secret, and the failure shows only as a bad `FINI`.
    ///
    /// # Errors
    /// [`HandshakeError::BadDeviceProof`], a decode error or an alert.
    pub fn handle(self, frame: Frame) -> Result<ExpectDeviceFinished<C::Proven>, HandshakeError> {
        let Self { hello, claimed } = self;
        let Hello {
            config,
            nonce_device,
            nonce_server,
            mut transcript,
            version,
        } = hello;
        expect_kind(&frame, FrameKind::PREM)?;
        let Message::Prem(prem) = Message::decode(FrameKind::PREM, &frame.body)? else {
            return Err(HandshakeError::BadDeviceProof);
        };
        let proof = device_proof_input(&transcript.hash(), &prem.encrypted_pre_master);
        claimed
            .public_key()
            .pss_verify(&proof, &prem.device_signature)
            .map_err(|_| HandshakeError::BadDeviceProof)?;
        let device = claimed.prove(KeyPossession::assertion());

        let provider = config.provider;
        let fallback = PreMaster::random(provider.random)?;
        let pre_master = unwrap_premaster(
            config.identity.key().as_ref(),
            &prem.encrypted_pre_master,
            fallback,
        );
        transcript.add(&frame.to_wire());
        let th = transcript.hash();
        let keys = kdf::derive(&pre_master, &nonce_device, &nonce_server, &th);
        Ok(ExpectDeviceFinished {
            writer: RecordWriter::new(&keys.server_to_device),
            reader: RecordReader::new(&keys.device_to_server),
            device_finished: Zeroizing::new(keys.device_finished),
            server_finished: Zeroizing::new(keys.server_finished),
            th,
            device,
            version,
        })
    }
}

/// Waiting for the device's `FINI`.
pub struct ExpectDeviceFinished<P = VerifiedPeer> {
    writer: RecordWriter,
    reader: RecordReader,
    device_finished: Zeroizing<[u8; 32]>,
    server_finished: Zeroizing<[u8; 32]>,
    th: [u8; HASH_LEN],
    device: P,
    version: u16,
}

impl<P> ExpectDeviceFinished<P> {
    /// The device, which has proven that it holds its certificate's (or
    /// request's) key.
    #[must_use]
    pub fn device(&self) -> &P {
        &self.device
    }

    /// Checks the device's `FINI` and answers with the server's.
    ///
    /// # Errors
    /// [`HandshakeError::FinishedFailed`], or an alert or unexpected message.
    pub fn handle(mut self, frame: Frame) -> Result<(Established<P>, Frame), HandshakeError> {
        check_finished(&mut self.reader, frame, &self.device_finished, &self.th)?;
        let fini = seal_finished(&mut self.writer, &self.server_finished, &self.th)?;
        Ok((
            Established {
                writer: self.writer,
                reader: self.reader,
                peer: self.device,
                version: self.version,
                transcript_hash: self.th,
            },
            fini,
        ))
    }
}
