//! Version 3 messages (proto-spec.md §14): enrollment (`ENRQ` → `CERT`)
//! and renewal (`RNEW` → `CERT`).

use super::DecodeError;
use super::app::StreamId;
use super::codec::{Reader, put_vec_u16};
use super::handshake::MAX_CERT_LEN;

/// Length of an enrollment token's identifier.
pub const TOKEN_ID_LEN: usize = 16;
/// Length of the token proof (HMAC-SHA256).
pub const TOKEN_PROOF_LEN: usize = 32;
/// Most certificates in a `CERT` chain.
pub const MAX_CERT_CHAIN: usize = 3;

/// `ENRQ`: an enrolling device redeems a token for the request of its
/// `HELO` (proto-spec.md §14.3).
#[derive(Clone, PartialEq, Eq)]
pub struct Enrq {
    /// Stream id (device-opened, odd).
    pub stream: StreamId,
    /// Which token.
    pub token_id: [u8; TOKEN_ID_LEN],
    /// HMAC-SHA256 under the token key over the transcript and request.
    pub proof: [u8; TOKEN_PROOF_LEN],
}

impl std::fmt::Debug for Enrq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrq")
            .field("stream", &self.stream)
            .field("token_id", &hex::encode(self.token_id))
            .finish_non_exhaustive()
    }
}

impl Enrq {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("ENRQ", body);
        let stream = StreamId(r.u32("stream")?);
        let token_id = r.array("token_id")?;
        let proof = r.array("proof")?;
        r.finish()?;
        Ok(Self {
            stream,
            token_id,
            proof,
        })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream.0.to_be_bytes());
        out.extend_from_slice(&self.token_id);
        out.extend_from_slice(&self.proof);
    }
}

/// `RNEW`: a device with a valid certificate asks for a new one
/// (proto-spec.md §14.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rnew {
    /// Stream id (device-opened, odd).
    pub stream: StreamId,
    /// PKCS#10 request, DER.
    pub request: Vec<u8>,
}

impl Rnew {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("RNEW", body);
        let stream = StreamId(r.u32("stream")?);
        let request = r.vec_u16("request", 1, MAX_CERT_LEN)?.to_vec();
        r.finish()?;
        Ok(Self { stream, request })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream.0.to_be_bytes());
        put_vec_u16(out, &self.request);
    }
}

/// `CERT`: the certificate the server issued, and the chain to send with
/// it (proto-spec.md §14.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertMsg {
    /// The stream of the request it answers.
    pub stream: StreamId,
    /// The new certificate, DER.
    pub certificate: Vec<u8>,
    /// The issuing CA certificate and any above it, nearest first; after an
    /// enrollment the last is the root.
    pub chain: Vec<Vec<u8>>,
}

impl CertMsg {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("CERT", body);
        let stream = StreamId(r.u32("stream")?);
        let certificate = r.vec_u16("certificate", 1, MAX_CERT_LEN)?.to_vec();
        let mut chain = Vec::new();
        while !r.is_empty() {
            if chain.len() == MAX_CERT_CHAIN {
                return Err(r.invalid("chain", "more than 3 certificates"));
            }
            chain.push(r.vec_u16("chain", 1, MAX_CERT_LEN)?.to_vec());
        }
        Ok(Self {
            stream,
            certificate,
            chain,
        })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream.0.to_be_bytes());
        put_vec_u16(out, &self.certificate);
        for cert in self.chain.iter().take(MAX_CERT_CHAIN) {
            put_vec_u16(out, cert);
        }
    }
}
