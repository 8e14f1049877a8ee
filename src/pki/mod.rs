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
//! * [`verify`]: peer certificate verification.
//! * [`issue`]: the CA and certificate issuance (x509-cert builder).
//! * [`store`]: PEM files on disk (keys 0600, no overwrite without force).
//! * [`keyfile`]: passphrase-encrypted keys (PKCS#8 with PBES2, scrypt and
//!   AES-256-CBC) and where the passphrase comes from.
//!
//! Certificates are X.509 v3 signed with RSASSA-PSS-SHA256 (MGF1-SHA256,
//! 32-byte salt) only; RSA operations go through the
//! [`CryptoProvider`](crate::crypto::CryptoProvider) seam.

pub mod anchor;
mod error;
pub mod identity;
pub mod issue;
pub mod keyfile;
mod names;
mod parse;
pub mod store;
pub mod verify;

#[cfg(test)]
mod testutil;

pub use anchor::TrustAnchor;
pub use error::{CertError, PkiError};
pub use identity::Identity;
pub use issue::{CertificateAuthority, IssuedLeaf, Validity};
pub use keyfile::{Passphrase, PassphraseSource};
pub use names::{Role, ServerName, validate_device_name};
pub use parse::MAX_CERT_LEN;
pub use store::{
    InitOptions, IssueOptions, PkiPaths, init, issue_files, write_cert_pem, write_key_pem,
    write_key_pem_encrypted,
};
pub use verify::{CertifiedPeer, KeyPossession, VerifiedPeer, verify_peer};
