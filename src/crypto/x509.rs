//! Adapter between the crypto seam and the `x509-cert` certificate builder.
//!
//! The builder signs through the `signature` traits; [`PssSha256Signer`]
//! implements them over an [`RsaPrivateKey`] held by whichever backend the
//! [`CryptoProvider`](super::CryptoProvider) chose, so the PKI module never
//! names the `rsa` crate. Certificates are signed with RSASSA-PSS, SHA-256,
//! MGF1-SHA256 and a 32-byte salt, identified by
//! [`pss_sha256_algorithm_identifier`]; PKCS#1 v1.5 is never used.

use std::sync::Arc;

use der::asn1::BitString;
use rsa::sha2::Sha256;
use rsa::signature::{self, Keypair, Signer};
use spki::{
    AlgorithmIdentifierOwned, Document, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SignatureBitStringEncoding,
};

use super::RsaPrivateKey;

/// The `rsassaPss` AlgorithmIdentifier with explicit parameters: hash
/// SHA-256, MGF1 with SHA-256, salt length 32, trailer field 1 (RFC 4055).
///
/// # Errors
/// Only an ASN.1 encoding failure, which does not happen for these fixed
/// parameters.
pub fn pss_sha256_algorithm_identifier() -> spki::Result<AlgorithmIdentifierOwned> {
    rsa::pss::get_default_pss_signature_algo_id::<Sha256>()
}

/// A certificate signer: RSASSA-PSS-SHA256 with a key from the crypto seam.
#[derive(Clone)]
pub struct PssSha256Signer {
    key: Arc<dyn RsaPrivateKey>,
}

impl PssSha256Signer {
    /// Wraps a private key.
    #[must_use]
    pub fn new(key: Arc<dyn RsaPrivateKey>) -> Self {
        Self { key }
    }
}

impl std::fmt::Debug for PssSha256Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PssSha256Signer(<redacted>)")
    }
}

/// The signer's public key, as the DER SubjectPublicKeyInfo the backend
/// reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpkiPublicKey(Vec<u8>);

impl EncodePublicKey for SpkiPublicKey {
    fn to_public_key_der(&self) -> spki::Result<Document> {
        Ok(Document::try_from(self.0.as_slice())?)
    }
}

/// A raw RSASSA-PSS signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PssSignature(Vec<u8>);

impl SignatureBitStringEncoding for PssSignature {
    fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

impl Keypair for PssSha256Signer {
    type VerifyingKey = SpkiPublicKey;

    fn verifying_key(&self) -> SpkiPublicKey {
        SpkiPublicKey(self.key.public_key_spki_der().to_vec())
    }
}

impl DynSignatureAlgorithmIdentifier for PssSha256Signer {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        pss_sha256_algorithm_identifier()
    }
}

impl Signer<PssSignature> for PssSha256Signer {
    fn try_sign(&self, msg: &[u8]) -> Result<PssSignature, signature::Error> {
        self.key
            .pss_sign(msg)
            .map(PssSignature)
            .map_err(signature::Error::from_source)
    }
}

#[cfg(test)]
mod tests {
    use der::Encode;

    use super::*;

    #[test]
    fn pss_identifier_has_explicit_sha256_parameters() {
        let der = pss_sha256_algorithm_identifier().unwrap().to_der().unwrap();
        // SEQUENCE { rsassaPss, SEQUENCE { [0] sha256+NULL, [1] mgf1(sha256+NULL), [2] 32 } }
        let expected: &[u8] = &[
            0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30,
            0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
            0x02, 0x01, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
            0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65,
            0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x20,
        ];
        assert_eq!(der, expected);
    }
}
