//! The PKI: one private CA, server and device certificates, and the checks
//! that turn a peer's certificate into a [`CertifiedPeer`].
//!
//! Where it sits in the data path: the handshake receives the peer's
//! certificate DER in HELO and calls [`verify_peer`] with the configured
//! [`TrustAnchor`]; only a successful call yields a [`CertifiedPeer`] (a
//! claimed identity), and only the handshake's proof of key possession turns
//! it into the [`VerifiedPeer`] that the handshake's final state carries (the
//! rustls `ServerCertVerified` idiom). Our own side is an [`Identity`] (certificate
//! plus private key). `secured pki init` and `secured pki issue` use
//! [`store::init`] and [`store::issue_files`], which build on the in-memory
//! [`CertificateAuthority`].
//!
//! * [`anchor`]: the trusted CA certificate, checked when it is loaded.
//! * [`identity`]: our certificate and private key, checked to match.
//! * [`verify`]: peer certificate verification, through a chain of up to
//!   two intermediate CAs to the root.
//! * [`csr`]: PKCS#10 certificate requests, for enrollment and renewal.
//! * [`crl`]: certificate revocation lists signed by the CA, and their
//!   checks ([`VerifiedCrl`]).
//! * [`issue`]: the CA and certificate issuance (x509-cert builder).
//! * [`store`]: PEM files on disk (keys 0600, no overwrite without force).
//! * [`keyfile`]: passphrase-encrypted keys (PKCS#8 with PBES2, scrypt and
//!   AES-256-CBC) and where the passphrase comes from.
//!
//! Certificates are X.509 v3 signed with RSASSA-PSS-SHA256 (MGF1-SHA256,
//! 32-byte salt) only; RSA operations go through the
//! [`CryptoProvider`](crate::crypto::CryptoProvider) seam.

pub mod anchor;
pub mod crl;
pub mod csr;
mod error;
pub mod identity;
pub mod issue;
pub mod keyfile;
mod names;
mod parse;
pub mod show;
pub mod store;
pub mod token;
pub mod verify;

#[cfg(test)]
mod testutil;

pub use anchor::TrustAnchor;
pub use crl::{
    CrlError, CrlIssuer, Revocation, RevocationReason, RevokedEntry, VerifiedCrl, read_crl_pem,
    write_crl_pem,
};
pub use csr::{CertRequest, CsrError, ProvenRequest, build_request};
pub use error::{CertError, PkiError};
pub use identity::Identity;
pub use issue::{CertificateAuthority, IssuedLeaf, Validity, generate_key_pair};
pub use keyfile::{Passphrase, PassphraseSource};
pub use names::{Role, ServerName, validate_device_name};
pub use parse::MAX_CERT_LEN;
pub use show::CertSummary;
pub use store::{
    DEFAULT_DEVICE_DAYS, DEFAULT_SERVER_DAYS, ISSUING_CA_STEM, InitOptions, IssueOptions, PkiPaths,
    init, issue_files, key_is_encrypted, load_signing_ca, write_cert_chain_pem, write_cert_pem,
    write_key_pem, write_key_pem_encrypted,
};
pub use token::{EnrollmentToken, TokenFormatError};
pub use verify::{
    CertifiedPeer, KeyPossession, MAX_CHAIN_CERTS, MAX_INTERMEDIATES, VerifiedPeer, verify_ca,
    verify_chain, verify_peer,
};

/// The serial number (lowercase hex) and the end of validity of a
/// certificate that parses under the rules of [`verify_peer`].
///
/// # Errors
/// [`PkiError::Cert`] when it does not parse.
pub fn serial_and_expiry(der: &[u8]) -> Result<(String, std::time::SystemTime), PkiError> {
    let parsed = parse::parse(der).map_err(|source| PkiError::Cert {
        origin: "the certificate".to_owned(),
        source,
    })?;
    Ok((hex::encode(parsed.serial()), parsed.not_after()))
}

/// The SubjectPublicKeyInfo (DER) of a certificate.
///
/// # Errors
/// [`PkiError::Cert`] when it does not parse.
pub fn spki_of_cert(der: &[u8]) -> Result<Vec<u8>, PkiError> {
    let cert_error = |source| PkiError::Cert {
        origin: "the certificate".to_owned(),
        source,
    };
    parse::parse(der)
        .map_err(cert_error)?
        .spki_der()
        .map_err(cert_error)
}

/// Reads a PEM file of one or more certificates (a leaf, then its chain).
///
/// # Errors
/// File errors naming the file, [`PkiError::NotPem`].
pub fn read_cert_chain(path: &std::path::Path) -> Result<Vec<Vec<u8>>, PkiError> {
    store::read_cert_chain_pem(path)
}

/// The CA whose CRL covers `leaf`: the certificate of `chain` that issued
/// it, or the anchor when it issued the leaf itself.
///
/// # Errors
/// That CA's certificate does not fit the CRL profile.
pub fn crl_issuer_for(
    anchor: &TrustAnchor,
    leaf: &[u8],
    chain: &[Vec<u8>],
    provider: &crate::crypto::CryptoProvider,
) -> Result<crl::CrlIssuer, crl::CrlError> {
    let issuer_name = parse::parse(leaf).map(|p| p.tbs().issuer().clone());
    if let Ok(issuer_name) = issuer_name
        && &issuer_name != anchor.subject()
        && let Some(der) = chain
            .iter()
            .find(|der| parse::parse(der).is_ok_and(|p| p.tbs().subject() == &issuer_name))
    {
        return crl::CrlIssuer::from_verified_ca_cert(der, provider);
    }
    crl::CrlIssuer::from_anchor(anchor)
}

/// Where a renewed key waits until its certificate is in place:
/// `<key>.next`.
#[must_use]
pub fn next_key_path(key: &std::path::Path) -> std::path::PathBuf {
    let mut name = key.file_name().unwrap_or_default().to_os_string();
    name.push(".next");
    key.with_file_name(name)
}

/// Finishes a renewal with a new key that was cut short: when `cert` no
/// longer matches `key` but matches `<key>.next`, the new key is moved
/// into place. Does nothing otherwise.
///
/// # Errors
/// [`PkiError::Write`] when the rename fails.
pub fn complete_key_rotation(
    cert: &std::path::Path,
    key: &std::path::Path,
    passphrase: Option<&PassphraseSource>,
    provider: &'static crate::crypto::CryptoProvider,
) -> Result<(), PkiError> {
    let next = next_key_path(key);
    if !next.exists() {
        return Ok(());
    }
    if Identity::load_with(cert, key, passphrase, provider).is_ok() {
        return Ok(());
    }
    if Identity::load_with(cert, &next, passphrase, provider).is_ok() {
        std::fs::rename(&next, key).map_err(|source| PkiError::Write {
            path: key.to_owned(),
            source,
        })?;
    }
    Ok(())
}
