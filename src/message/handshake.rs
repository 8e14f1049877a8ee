//! Handshake messages: `HELO`, `PREM`, `FINI` (proto-spec.md §5).

use super::DecodeError;
use super::codec::{Reader, put_vec_u16};
use crate::crypto::kdf::NONCE_LEN;

/// The first protocol version (proto-spec.md §1 to §12).
pub const PROTOCOL_VERSION: u16 = 1;
/// Version 2: sharing, listings, downloads and notices (proto-spec.md §13).
pub const PROTOCOL_VERSION_2: u16 = 2;
/// Version 3: enrollment and renewal (proto-spec.md §14).
pub const PROTOCOL_VERSION_3: u16 = 3;
/// The versions this implementation speaks, most preferred first.
pub const SUPPORTED_VERSIONS: &[u16] = &[PROTOCOL_VERSION_3, PROTOCOL_VERSION_2, PROTOCOL_VERSION];
/// Largest certificate accepted in a `HELO`.
pub const MAX_CERT_LEN: usize = 16 * 1024;
/// Largest extensions block in a `HELO`.
pub const MAX_EXTENSIONS_LEN: usize = 4096;
/// Most extensions a `HELO` may carry. The block has room for 1,024 empty
/// ones; the cap bounds the work a receiver does before anything is
/// authenticated.
pub const MAX_EXTENSIONS: usize = 32;
/// Most versions a `HELO` may list.
pub const MAX_VERSIONS: usize = 16;
/// Length of the Finished MAC.
pub const VERIFY_DATA_LEN: usize = 32;
/// Bounds of an RSA ciphertext or signature: 2048- to 4096-bit moduli.
const RSA_LEN: (usize, usize) = (256, 512);

/// Who sent a `HELO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeloRole {
    /// The connecting device (value 1).
    Device,
    /// The server (value 2).
    Server,
    /// A device without a certificate yet, asking for one (value 3): its
    /// `certificate` field carries a PKCS#10 request (proto-spec.md §14.2).
    Enrollee,
}

/// `HELO` extension type 1, `certificate_chain` (proto-spec.md §2.2): the
/// certificates after the sender's own, nearest issuer first.
pub const EXT_CERTIFICATE_CHAIN: u16 = 1;

/// Largest certificate inside a `certificate_chain` extension: what is
/// left of the extension's 4,096 bytes after its 2-byte length prefix.
pub const MAX_CHAIN_CERT_LEN: usize = MAX_EXTENSIONS_LEN - 2;

/// Most certificates in a `certificate_chain` extension.
pub const MAX_CHAIN_CERTS: usize = 3;

/// Encodes a `certificate_chain` extension; `None` for an empty chain
/// (the extension is then left out).
#[must_use]
pub fn chain_extension(chain: &[Vec<u8>]) -> Option<Extension> {
    if chain.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    for cert in chain.iter().take(MAX_CHAIN_CERTS) {
        put_vec_u16(&mut data, cert);
    }
    Some(Extension {
        kind: EXT_CERTIFICATE_CHAIN,
        data,
    })
}

impl Helo {
    /// The certificates of the `certificate_chain` extension (empty when
    /// there is none).
    ///
    /// # Errors
    /// A [`DecodeError`] when the extension does not split into 1 to
    /// [`MAX_CHAIN_CERTS`] certificates of 1 to [`MAX_CHAIN_CERT_LEN`] bytes.
    pub fn chain(&self) -> Result<Vec<Vec<u8>>, DecodeError> {
        let Some(ext) = self
            .extensions
            .iter()
            .find(|e| e.kind == EXT_CERTIFICATE_CHAIN)
        else {
            return Ok(Vec::new());
        };
        let mut r = Reader::new("HELO", &ext.data);
        let mut chain = Vec::new();
        while !r.is_empty() || chain.is_empty() {
            if chain.len() == MAX_CHAIN_CERTS {
                return Err(r.invalid("certificate_chain", "more than 3 certificates"));
            }
            chain.push(
                r.vec_u16("certificate_chain", 1, MAX_CHAIN_CERT_LEN)?
                    .to_vec(),
            );
        }
        Ok(chain)
    }
}

/// One `HELO` extension. Version 1 defines none; receivers ignore unknown
/// types, which keeps room for later features without a version change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Extension type.
    pub kind: u16,
    /// Extension data.
    pub data: Vec<u8>,
}

/// `HELO` (proto-spec.md §5.1).
#[derive(Clone, PartialEq, Eq)]
pub struct Helo {
    /// Sender's role.
    pub role: HeloRole,
    /// Device: versions it supports, most preferred first. Server: exactly
    /// one, the version chosen.
    pub versions: Vec<u16>,
    /// Fresh random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Sender's X.509 certificate, DER; for [`HeloRole::Enrollee`], its
    /// PKCS#10 certificate request.
    pub cert_der: Vec<u8>,
    /// Extensions.
    pub extensions: Vec<Extension>,
}

impl std::fmt::Debug for Helo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helo")
            .field("role", &self.role)
            .field("versions", &self.versions)
            .field("cert_len", &self.cert_der.len())
            .field("extensions", &self.extensions.len())
            .finish_non_exhaustive()
    }
}

impl Helo {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("HELO", body);
        let role = match r.u8("role")? {
            1 => HeloRole::Device,
            2 => HeloRole::Server,
            3 => HeloRole::Enrollee,
            _ => {
                return Err(r.invalid(
                    "role",
                    "must be 1 (device), 2 (server) or 3 (enrolling device)",
                ));
            }
        };
        let count = usize::from(r.u8("version_count")?);
        if count == 0 || count > MAX_VERSIONS {
            return Err(r.invalid("version_count", "must be 1 to 16"));
        }
        let mut versions = Vec::with_capacity(count);
        for _ in 0..count {
            versions.push(r.u16("versions")?);
        }
        let nonce = r.array::<NONCE_LEN>("nonce")?;
        let cert_der = r.vec_u16("certificate", 1, MAX_CERT_LEN)?.to_vec();
        let ext_block = r.vec_u16("extensions", 0, MAX_EXTENSIONS_LEN)?;
        r.finish()?;

        let mut er = Reader::new("HELO", ext_block);
        let mut extensions: Vec<Extension> = Vec::new();
        while !er.is_empty() {
            if extensions.len() == MAX_EXTENSIONS {
                return Err(er.invalid("extensions", "more than 32 extensions"));
            }
            let kind = er.u16("extension_type")?;
            let data = er
                .vec_u16("extension_data", 0, MAX_EXTENSIONS_LEN)?
                .to_vec();
            extensions.push(Extension { kind, data });
        }
        // Repeated types, found by sorting: n log n in the number of
        // extensions, which is at most 32 anyway.
        let mut kinds: Vec<u16> = extensions.iter().map(|e| e.kind).collect();
        kinds.sort_unstable();
        if kinds.windows(2).any(|w| w[0] == w[1]) {
            return Err(er.invalid("extension_type", "duplicate extension"));
        }
        Ok(Self {
            role,
            versions,
            nonce,
            cert_der,
            extensions,
        })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self.role {
            HeloRole::Device => 1,
            HeloRole::Server => 2,
            HeloRole::Enrollee => 3,
        });
        let versions = &self.versions[..self.versions.len().min(MAX_VERSIONS)];
        out.push(versions.len() as u8);
        for v in versions {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&self.nonce);
        put_vec_u16(out, &self.cert_der);
        let mut ext = Vec::new();
        for e in &self.extensions {
            ext.extend_from_slice(&e.kind.to_be_bytes());
            put_vec_u16(&mut ext, &e.data);
        }
        put_vec_u16(out, &ext);
    }
}

/// `PREM` (proto-spec.md §5.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prem {
    /// RSA-OAEP-SHA256 encryption of the 32-byte pre-master under the
    /// server's certificate key.
    pub encrypted_pre_master: Vec<u8>,
    /// RSA-PSS-SHA256 signature by the device key over the proof input.
    pub device_signature: Vec<u8>,
}

impl Prem {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("PREM", body);
        let encrypted_pre_master = r
            .vec_u16("encrypted_pre_master", RSA_LEN.0, RSA_LEN.1)?
            .to_vec();
        let device_signature = r
            .vec_u16("device_signature", RSA_LEN.0, RSA_LEN.1)?
            .to_vec();
        r.finish()?;
        Ok(Self {
            encrypted_pre_master,
            device_signature,
        })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        put_vec_u16(out, &self.encrypted_pre_master);
        put_vec_u16(out, &self.device_signature);
    }
}

/// `FINI` (proto-spec.md §5.4): always carried in a protected record.
#[derive(Clone, PartialEq, Eq)]
pub struct Fini {
    /// HMAC-SHA256(finished_key, transcript_hash).
    pub verify_data: [u8; VERIFY_DATA_LEN],
}

impl std::fmt::Debug for Fini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fini")
    }
}

impl Fini {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("FINI", body);
        let verify_data = r.array("verify_data")?;
        r.finish()?;
        Ok(Self { verify_data })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.verify_data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `HELO` body with `extensions` as its extensions block.
    fn helo_with(extensions: &[u8]) -> Vec<u8> {
        let mut body = vec![1, 1, 0, 1];
        body.extend_from_slice(&[7; NONCE_LEN]);
        put_vec_u16(&mut body, &[0x30, 0x00]);
        put_vec_u16(&mut body, extensions);
        body
    }

    /// `n` empty extensions of the types `first`, `first + 1`, …
    fn empty_extensions(first: u16, n: usize) -> Vec<u8> {
        let mut block = Vec::new();
        for kind in (first..).take(n) {
            block.extend_from_slice(&kind.to_be_bytes());
            block.extend_from_slice(&[0, 0]);
        }
        block
    }

    #[test]
    fn at_most_32_extensions() {
        let helo = Helo::decode(&helo_with(&empty_extensions(0x100, 32))).unwrap();
        assert_eq!(helo.extensions.len(), MAX_EXTENSIONS);
        for n in [33, 1024] {
            assert_eq!(
                Helo::decode(&helo_with(&empty_extensions(0x100, n))).unwrap_err(),
                DecodeError::Invalid {
                    msg: "HELO",
                    field: "extensions",
                    reason: "more than 32 extensions",
                },
                "{n} extensions"
            );
        }
        // The block limit still holds on its own.
        assert!(Helo::decode(&helo_with(&empty_extensions(0x100, 1025))).is_err());
    }

    #[test]
    fn repeated_extension_types_are_refused_wherever_they_are() {
        let mut block = empty_extensions(0x200, 31);
        block.extend_from_slice(&empty_extensions(0x200, 1));
        assert!(matches!(
            Helo::decode(&helo_with(&block)),
            Err(DecodeError::Invalid {
                field: "extension_type",
                ..
            })
        ));
        let mut block = empty_extensions(0x300, 1);
        block.extend_from_slice(&[0x03, 0x00, 0x00, 0x01, 0xaa]);
        assert!(Helo::decode(&helo_with(&block)).is_err());
        // Unknown types in any order are fine.
        let mut block = empty_extensions(0x400, 2);
        block.extend_from_slice(&empty_extensions(0x10, 2));
        assert_eq!(
            Helo::decode(&helo_with(&block)).unwrap().extensions.len(),
            4
        );
    }
}
