//! PKCS#10 certificate requests (RFC 2986): built by a device that enrolls
//! or renews, checked by the server before it issues anything.
//!
//! A request names a device (a subject of exactly one common name, a valid
//! device name) and carries its RSA public key, self-signed with
//! RSASSA-PSS-SHA256 like every signature of `secured`. The server copies
//! nothing else from it: the certificate it issues has the device profile
//! of [`super::issue`], whatever attributes the request carries.

use std::fmt;
use std::sync::Arc;

use const_oid::db::rfc5912::RSA_ENCRYPTION;
use der::{Decode, Encode};
use x509_cert::builder::{Builder, RequestBuilder};
use x509_cert::request::{CertReq, Version};

use super::issue::make_name;
use super::names::device_name_problem;
use super::parse::{MAX_CERT_LEN, common_name, tbs_slice};
use super::{CertError, KeyPossession, PkiError};
use crate::crypto::x509::{PssSha256Signer, PssSignature, pss_sha256_algorithm_identifier};
use crate::crypto::{CryptoError, CryptoProvider, RsaPrivateKey, RsaPublicKey};

/// Why a certificate request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Not a strictly DER-encoded PKCS#10 request of at most
    /// [`MAX_CERT_LEN`] bytes.
    #[error("the certificate request is not a valid DER-encoded PKCS#10 request ({reason})")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// Signed with another algorithm than RSASSA-PSS-SHA256.
    #[error(
        "the certificate request is signed with algorithm {oid}, but only RSASSA-PSS with SHA-256 is accepted"
    )]
    UnsupportedAlgorithm {
        /// The algorithm's object identifier.
        oid: String,
    },
    /// The key is not RSA, or RSA outside the accepted sizes.
    #[error("the certificate request's key is too weak or not RSA ({reason})")]
    WeakKey {
        /// What is wrong with it.
        reason: String,
    },
    /// The self-signature does not verify.
    #[error("the certificate request's signature does not verify with its own key")]
    BadSignature,
    /// The subject is not a single valid device name.
    #[error("the certificate request's subject is not a valid device name ({reason})")]
    BadName {
        /// What is wrong with it.
        reason: String,
    },
}

/// A request whose structure, key and self-signature checked out: the
/// device it names holds the key (for this request; the enrollment
/// handshake proves it again for the session, proto-spec.md §14.2).
#[derive(Clone)]
pub struct CertRequest {
    der: Vec<u8>,
    name: String,
    spki_der: Vec<u8>,
    public_key: Arc<dyn RsaPublicKey>,
}

impl fmt::Debug for CertRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertRequest")
            .field("name", &self.name)
            .field("bits", &self.public_key.bits())
            .finish_non_exhaustive()
    }
}

impl CertRequest {
    /// Checks a DER request: at most [`MAX_CERT_LEN`] bytes of strict DER
    /// with nothing after it, version 1, RSASSA-PSS-SHA256, an RSA key of
    /// 2,048 to 4,096 bits, a self-signature that verifies over the
    /// request info exactly as received, and a subject that is one valid
    /// device name.
    ///
    /// # Errors
    /// One [`CsrError`] per failed check.
    pub fn verify(der: &[u8], provider: &CryptoProvider) -> Result<Self, CsrError> {
        let malformed = |reason: String| CsrError::Malformed { reason };
        if der.len() > MAX_CERT_LEN {
            return Err(malformed(format!(
                "{} bytes, more than the {MAX_CERT_LEN}-byte limit",
                der.len()
            )));
        }
        let req = CertReq::from_der(der).map_err(|e| malformed(e.to_string()))?;
        let info_der = tbs_slice(der).map_err(|e| malformed(e.to_string()))?;
        if req.info.version != Version::V1 {
            return Err(malformed("not version 1".to_owned()));
        }
        let expected = pss_sha256_algorithm_identifier().map_err(|e| malformed(e.to_string()))?;
        if req.algorithm != expected {
            return Err(CsrError::UnsupportedAlgorithm {
                oid: req.algorithm.oid.to_string(),
            });
        }
        if req.info.public_key.algorithm.oid != RSA_ENCRYPTION {
            return Err(CsrError::WeakKey {
                reason: "not an RSA key".to_owned(),
            });
        }
        let spki_der = req
            .info
            .public_key
            .to_der()
            .map_err(|e| malformed(e.to_string()))?;
        let public_key = provider
            .rsa
            .load_public_key(&spki_der)
            .map_err(|e| match e {
                CryptoError::KeySize { bits } => CsrError::WeakKey {
                    reason: format!(
                        "{bits} bits; {}..={} bits are accepted",
                        crate::crypto::MIN_RSA_BITS,
                        crate::crypto::MAX_RSA_BITS
                    ),
                },
                other => CsrError::WeakKey {
                    reason: other.to_string(),
                },
            })?;
        let signature = req.signature.as_bytes().ok_or(CsrError::BadSignature)?;
        public_key
            .pss_verify(info_der, signature)
            .map_err(|_| CsrError::BadSignature)?;
        let name = common_name(&req.info.subject).map_err(|e: CertError| CsrError::BadName {
            reason: e.to_string(),
        })?;
        if req.info.subject.iter().count() != 1 {
            return Err(CsrError::BadName {
                reason: "the subject must hold only the common name".to_owned(),
            });
        }
        if let Some(reason) = device_name_problem(&name) {
            return Err(CsrError::BadName {
                reason: format!("{name:?}: {reason}"),
            });
        }
        Ok(Self {
            der: der.to_vec(),
            name,
            spki_der,
            public_key,
        })
    }

    /// The device name requested.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The requested key, DER SubjectPublicKeyInfo.
    #[must_use]
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The requested key.
    #[must_use]
    pub fn public_key(&self) -> &Arc<dyn RsaPublicKey> {
        &self.public_key
    }

    /// The request, DER, exactly as received.
    #[must_use]
    pub fn der(&self) -> &[u8] {
        &self.der
    }
}

impl CertRequest {
    /// Turns the request into a proven one, given proof that the peer
    /// holds its key in this session (the enrollment handshake's `PREM`).
    #[must_use]
    pub fn into_proven(self, _proof: KeyPossession) -> ProvenRequest {
        ProvenRequest { request: self }
    }
}

/// A request whose key the enrolling device proved it holds in this
/// session. It names no one yet: only a valid token turns it into a
/// certificate (proto-spec.md §14.3).
#[derive(Clone, Debug)]
pub struct ProvenRequest {
    request: CertRequest,
}

impl std::ops::Deref for ProvenRequest {
    type Target = CertRequest;

    fn deref(&self) -> &CertRequest {
        &self.request
    }
}

/// Builds a request for `name` with `key`, signed with RSASSA-PSS-SHA256.
///
/// # Errors
/// [`PkiError::InvalidDeviceName`] or [`PkiError::Build`].
pub fn build_request(name: &str, key: &Arc<dyn RsaPrivateKey>) -> Result<Vec<u8>, PkiError> {
    super::validate_device_name(name)?;
    let err = |reason: String| PkiError::Build {
        what: format!("certificate request for {name:?}"),
        reason,
    };
    let subject = make_name(None, name).map_err(|e| err(e.to_string()))?;
    let builder = RequestBuilder::new(subject).map_err(|e| err(e.to_string()))?;
    let signer = PssSha256Signer::new(Arc::clone(key));
    let req = builder
        .build::<_, PssSignature>(&signer)
        .map_err(|e| err(e.to_string()))?;
    req.to_der().map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testutil::{fixture, load_key, provider};

    fn device_key() -> Arc<dyn RsaPrivateKey> {
        load_key(&fixture().device.key_pkcs8_der)
    }

    #[test]
    fn round_trip() {
        let der = build_request("cam-7", &device_key()).unwrap();
        let req = CertRequest::verify(&der, provider()).unwrap();
        assert_eq!(req.name(), "cam-7");
        assert_eq!(req.public_key().bits(), 2048);
        assert_eq!(req.der(), der.as_slice());
        assert!(format!("{req:?}").contains("cam-7"));
    }

    #[test]
    fn refuses_tampering_and_junk() {
        let der = build_request("cam-7", &device_key()).unwrap();
        // The last byte is inside the signature.
        let mut flipped = der.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            CertRequest::verify(&flipped, provider()).unwrap_err(),
            CsrError::BadSignature
        );
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(matches!(
            CertRequest::verify(&trailing, provider()).unwrap_err(),
            CsrError::Malformed { .. }
        ));
        assert!(matches!(
            CertRequest::verify(b"junk", provider()).unwrap_err(),
            CsrError::Malformed { .. }
        ));
        let huge = vec![0x30; MAX_CERT_LEN + 1];
        assert!(matches!(
            CertRequest::verify(&huge, provider()).unwrap_err(),
            CsrError::Malformed { .. }
        ));
    }

    #[test]
    fn refuses_bad_names() {
        assert!(build_request("../x", &device_key()).is_err());
        // A request signed for a name the builder would refuse: build it
        // with another CN through the x509 builder directly.
        let subject = make_name(Some("secured"), "cam-7").unwrap();
        let builder = RequestBuilder::new(subject).unwrap();
        let signer = PssSha256Signer::new(device_key());
        let der = builder
            .build::<_, PssSignature>(&signer)
            .unwrap()
            .to_der()
            .unwrap();
        assert!(matches!(
            CertRequest::verify(&der, provider()).unwrap_err(),
            CsrError::BadName { .. }
        ));
    }
}
