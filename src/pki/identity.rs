//! Our own identity: a certificate and the private key that belongs to it.
//!
//! Loading refuses a key whose public half is not the certificate's
//! SubjectPublicKeyInfo, naming both sources, so a daemon never starts with a
//! pair that would fail every handshake. The certificate is parsed with the
//! same strict rules as a peer's, but its issuer and validity are not
//! checked here: the peer does that.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use super::keyfile::PassphraseSource;
use super::parse::parse;
use super::{PkiError, store};
use crate::crypto::{CryptoProvider, RsaPrivateKey};

/// Our certificate and private key.
pub struct Identity {
    cert_der: Vec<u8>,
    /// The certificates sent after ours (nearest issuer first).
    chain: Vec<Vec<u8>>,
    key: Arc<dyn RsaPrivateKey>,
    name: String,
    not_before: SystemTime,
    not_after: SystemTime,
    serial: Vec<u8>,
}

impl Identity {
    /// Loads a certificate PEM file and a PKCS#8 private key PEM file. The
    /// certificate file may continue with the certificate's chain (the
    /// issuing CA first), which is sent to peers with it. An encrypted key
    /// is refused (see [`load_with`](Self::load_with)).
    ///
    /// # Errors
    /// File errors naming the file, [`PkiError::Cert`] or [`PkiError::Key`]
    /// for unusable contents, [`PkiError::KeyEncrypted`], and
    /// [`PkiError::KeyMismatch`] (naming both files) when the key does not
    /// belong to the certificate.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        provider: &'static CryptoProvider,
    ) -> Result<Self, PkiError> {
        Self::load_with(cert_path, key_path, None, provider)
    }

    /// [`load`](Self::load), with the passphrase of an encrypted key from
    /// `passphrase` (asked only when the key is encrypted).
    ///
    /// # Errors
    /// As [`load`](Self::load), and the passphrase and decryption errors of
    /// [`keyfile`](super::keyfile).
    pub fn load_with(
        cert_path: &Path,
        key_path: &Path,
        passphrase: Option<&PassphraseSource>,
        provider: &'static CryptoProvider,
    ) -> Result<Self, PkiError> {
        let mut certs = store::read_cert_chain_pem(cert_path)?.into_iter();
        let cert_der = certs.next().unwrap_or_default();
        let key_der = store::read_key_pem_with(key_path, passphrase)?;
        Ok(Self::build(
            cert_der,
            &key_der,
            provider,
            &cert_path.display().to_string(),
            &key_path.display().to_string(),
        )?
        .with_chain(certs.collect()))
    }

    /// The same identity, sending `chain` (nearest issuer first) after its
    /// certificate.
    #[must_use]
    pub fn with_chain(mut self, chain: Vec<Vec<u8>>) -> Self {
        self.chain = chain;
        self
    }

    /// Builds an identity from a DER certificate and a PKCS#8 DER key.
    ///
    /// # Errors
    /// [`PkiError::Cert`], [`PkiError::Key`] or [`PkiError::KeyMismatch`].
    pub fn from_der(
        cert_der: Vec<u8>,
        key_pkcs8_der: &[u8],
        provider: &'static CryptoProvider,
    ) -> Result<Self, PkiError> {
        Self::build(
            cert_der,
            key_pkcs8_der,
            provider,
            "the certificate",
            "the private key",
        )
    }

    fn build(
        cert_der: Vec<u8>,
        key_pkcs8_der: &[u8],
        provider: &'static CryptoProvider,
        cert_origin: &str,
        key_origin: &str,
    ) -> Result<Self, PkiError> {
        let cert_error = |source| PkiError::Cert {
            origin: cert_origin.to_owned(),
            source,
        };
        let parsed = parse(&cert_der).map_err(cert_error)?;
        let name = parsed.subject_cn().map_err(cert_error)?;
        let spki = parsed.spki_der().map_err(cert_error)?;
        let not_before = parsed.not_before();
        let not_after = parsed.not_after();
        let serial = parsed.serial().to_vec();
        drop(parsed);

        let key = load_matching_key(provider, key_pkcs8_der, &spki, key_origin, cert_origin)?;
        Ok(Self {
            cert_der,
            chain: Vec::new(),
            key,
            name,
            not_before,
            not_after,
            serial,
        })
    }

    /// Our certificate, DER.
    #[must_use]
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The certificates sent after ours, nearest issuer first.
    #[must_use]
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// Our private key.
    #[must_use]
    pub fn key(&self) -> &Arc<dyn RsaPrivateKey> {
        &self.key
    }

    /// The certificate's subject common name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// End of the certificate's validity period.
    #[must_use]
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When the certificate should be renewed: once two thirds of its
    /// lifetime have passed (proto-spec.md §14.4).
    #[must_use]
    pub fn renew_after(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + lifetime * 2 / 3
    }

    /// The certificate's serial number as lowercase hex.
    #[must_use]
    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Loads a private key and checks that it belongs to the certificate whose
/// SubjectPublicKeyInfo is `cert_spki`; errors name both origins.
pub(super) fn load_matching_key(
    provider: &'static CryptoProvider,
    key_pkcs8_der: &[u8],
    cert_spki: &[u8],
    key_origin: &str,
    cert_origin: &str,
) -> Result<Arc<dyn RsaPrivateKey>, PkiError> {
    let key = provider
        .rsa
        .load_private_key(key_pkcs8_der)
        .map_err(|source| PkiError::Key {
            origin: key_origin.to_owned(),
            source,
        })?;
    if key.public_key_spki_der() != cert_spki {
        return Err(PkiError::KeyMismatch {
            key: key_origin.to_owned(),
            cert: cert_origin.to_owned(),
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::store::{write_cert_pem, write_key_pem};
    use crate::pki::testutil::{fixture, provider};

    #[test]
    fn matching_pair_loads() {
        let f = fixture();
        let id = Identity::from_der(
            f.device.cert_der.clone(),
            &f.device.key_pkcs8_der,
            provider(),
        )
        .unwrap();
        assert_eq!(id.name(), "device-1");
        assert_eq!(id.cert_der(), f.device.cert_der.as_slice());
        assert!(id.not_after() > SystemTime::now());
        assert_eq!(
            id.key().public_key_spki_der(),
            crate::pki::testutil::spki_of(&f.device).as_slice()
        );
        let debug = format!("{id:?}");
        assert!(
            debug.starts_with("Identity { name: \"device-1\""),
            "{debug}"
        );
    }

    #[test]
    fn mismatched_key_is_refused() {
        let f = fixture();
        let err = Identity::from_der(
            f.server.cert_der.clone(),
            &f.device.key_pkcs8_der,
            provider(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the private key does not match the certificate (the private key belongs to a different certificate)"
        );
    }

    #[test]
    fn mismatched_files_are_named() {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("device-1.pem");
        let key = dir.path().join("device-1.key");
        write_cert_pem(&cert, &f.device.cert_der, false).unwrap();
        write_key_pem(&key, &f.server.key_pkcs8_der, false).unwrap();
        let err = Identity::load(&cert, &key, provider()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} does not match {} (the private key belongs to a different certificate)",
                key.display(),
                cert.display()
            )
        );
        // Fixing the key makes it load.
        write_key_pem(&key, &f.device.key_pkcs8_der, true).unwrap();
        assert_eq!(
            Identity::load(&cert, &key, provider()).unwrap().name(),
            "device-1"
        );
    }

    #[test]
    fn swapped_files_are_reported_as_not_pem() {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("a.pem");
        write_cert_pem(&cert, &f.device.cert_der, false).unwrap();
        let err = Identity::load(&cert, &cert, provider()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is not a PEM PKCS#8 private key (expected a \"-----BEGIN {}-----\" block)",
                cert.display(),
                // Spelled apart so that secret scanners do not take this test for a key.
                concat!("PRIVATE", " KEY")
            )
        );
        let err = Identity::from_der(f.device.cert_der.clone(), b"junk", provider()).unwrap_err();
        assert!(matches!(err, PkiError::Key { .. }), "{err}");
        let err =
            Identity::from_der(b"junk".to_vec(), &f.device.key_pkcs8_der, provider()).unwrap_err();
        assert!(matches!(err, PkiError::Cert { .. }), "{err}");
    }
}
