//! Certificate issuance: the in-memory [`CertificateAuthority`].
//!
//! The profile (RFC 5280, X.509 v3, signed with RSASSA-PSS-SHA256):
//!
//! | | CA | server | device |
//! |---|---|---|---|
//! | subject | `O=secured, CN=<name>` | `CN=<name>` | `CN=<device name>` |
//! | basicConstraints (critical) | CA:TRUE, pathlen 0 | CA:FALSE | CA:FALSE |
//! | keyUsage (critical) | keyCertSign, cRLSign | digitalSignature, keyEncipherment | same |
//! | extendedKeyUsage | none | serverAuth | clientAuth |
//! | subjectAltName | none | every DNS name and IP | none |
//! | subjectKeyIdentifier | SHA-1 of the key bits (RFC 5280 §4.2.1.2 method 1) | same | same |
//! | authorityKeyIdentifier | none | the CA's key identifier | same |
//!
//! Serial numbers are 16 random bytes from the provider with the top bit
//! cleared (positive) and never zero. Every request is validated before any
//! key is generated.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use const_oid::db::rfc4519::{COMMON_NAME, ORGANIZATION_NAME};
use const_oid::db::rfc5280::{ID_KP_CLIENT_AUTH, ID_KP_SERVER_AUTH};
use const_oid::db::rfc5912::RSA_ENCRYPTION;
use der::asn1::{Any, Ia5String, OctetString, Utf8StringRef};
use der::referenced::OwnedToRef;
use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;
use zeroize::Zeroizing;

use super::keyfile::PassphraseSource;
use super::names::device_name_problem;
use super::{PkiError, Role, ServerName, TrustAnchor, store};
use crate::crypto::x509::{PssSha256Signer, PssSignature};
use crate::crypto::{CryptoProvider, RsaPrivateKey};

/// The organisation in the CA's subject.
pub(crate) const CA_ORGANIZATION: &str = "secured";
/// Longest common name, in characters (X.509 ub-common-name).
const MAX_COMMON_NAME_LEN: usize = 64;
/// Serial number length in bytes.
const SERIAL_LEN: usize = 16;
/// How far `not_before` is set in the past to tolerate clock skew.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// A certificate's validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Start of the period.
    pub not_before: SystemTime,
    /// End of the period.
    pub not_after: SystemTime,
}

impl Validity {
    /// From five minutes ago (clock skew) until `days` days from now.
    #[must_use]
    pub fn days_from_now(days: u32) -> Self {
        Self::days_from(SystemTime::now(), days)
    }

    /// From five minutes before `start` until `days` days after it.
    #[must_use]
    pub fn days_from(start: SystemTime, days: u32) -> Self {
        let not_before = start.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(start);
        let not_after = start
            .checked_add(Duration::from_secs(u64::from(days) * 86_400))
            .unwrap_or(start);
        Self {
            not_before,
            not_after,
        }
    }

    pub(crate) fn to_x509(self) -> Result<x509_cert::time::Validity, PkiError> {
        if self.not_after <= self.not_before {
            return Err(PkiError::InvalidValidity {
                reason: "not_after must be later than not_before",
            });
        }
        let convert = |t: SystemTime| {
            Time::try_from(t).map_err(|_| PkiError::InvalidValidity {
                reason: "certificate dates must fall between 1970 and 9999",
            })
        };
        Ok(x509_cert::time::Validity::new(
            convert(self.not_before)?,
            convert(self.not_after)?,
        ))
    }
}

/// A freshly issued leaf certificate and its private key.
pub struct IssuedLeaf {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_pkcs8_der: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for IssuedLeaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedLeaf")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

/// A CA certificate and its private key, in memory.
pub struct CertificateAuthority {
    /// The CA's own certificate (a root or an intermediate).
    anchor: TrustAnchor,
    /// The certificates a leaf this CA issues sends after its own: empty
    /// for a root, this CA's certificate and any intermediate above it for
    /// an intermediate (never the root, which peers already hold).
    chain: Vec<Vec<u8>>,
    key: Arc<dyn RsaPrivateKey>,
    key_pkcs8: Zeroizing<Vec<u8>>,
    provider: &'static CryptoProvider,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("name", &self.anchor.name())
            .field("provider", &self.provider.name)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Generates a CA key of `bits` bits and a self-signed CA certificate
    /// with subject `O=secured, CN=<common_name>` and pathLen 0: a
    /// single-tier CA that signs leaves itself.
    ///
    /// # Errors
    /// [`PkiError::InvalidCommonName`], [`PkiError::InvalidValidity`],
    /// [`PkiError::KeyGeneration`], [`PkiError::Random`] or
    /// [`PkiError::Build`].
    pub fn generate(
        common_name: &str,
        bits: usize,
        validity: Validity,
        provider: &'static CryptoProvider,
    ) -> Result<Self, PkiError> {
        Self::generate_with_path_len(common_name, bits, validity, 0, provider)
    }

    /// Generates a root CA (self-signed, pathLen 1) meant to stay offline
    /// and sign one issuing CA ([`Self::issue_intermediate`]) that signs
    /// the leaves.
    ///
    /// # Errors
    /// As [`Self::generate`].
    pub fn generate_root(
        common_name: &str,
        bits: usize,
        validity: Validity,
        provider: &'static CryptoProvider,
    ) -> Result<Self, PkiError> {
        Self::generate_with_path_len(common_name, bits, validity, 1, provider)
    }

    fn generate_with_path_len(
        common_name: &str,
        bits: usize,
        validity: Validity,
        path_len: u8,
        provider: &'static CryptoProvider,
    ) -> Result<Self, PkiError> {
        check_common_name(common_name)?;
        let validity = validity.to_x509()?;
        let key_pkcs8 = generate_key(bits, provider)?;
        let key = load_generated_key(&key_pkcs8, provider)?;
        let spki = spki_of(key.as_ref())?;
        let subject = make_name(Some(CA_ORGANIZATION), common_name).map_err(build_error("CA"))?;
        let extensions = ca_extensions(
            &subject,
            &spki,
            KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
            path_len,
        )?;
        let cert_der = build_cert(
            CertSpec {
                issuer: subject.clone(),
                subject,
                spki,
                validity,
                extensions,
            },
            &key,
            provider,
            "CA",
        )?;
        Self::from_parts(
            cert_der,
            Vec::new(),
            key_pkcs8,
            provider,
            "the generated CA certificate",
            "the generated CA key",
        )
    }

    /// Generates an intermediate (issuing) CA signed by this one: subject
    /// `O=secured, CN=<common_name>`, pathLen 0, keyCertSign and cRLSign.
    ///
    /// # Errors
    /// As [`Self::generate`].
    pub fn issue_intermediate(
        &self,
        common_name: &str,
        bits: usize,
        validity: Validity,
    ) -> Result<Self, PkiError> {
        check_common_name(common_name)?;
        let validity = validity.to_x509()?;
        let key_pkcs8 = generate_key(bits, self.provider)?;
        let key = load_generated_key(&key_pkcs8, self.provider)?;
        let spki = spki_of(key.as_ref())?;
        let subject = make_name(Some(CA_ORGANIZATION), common_name).map_err(build_error("CA"))?;
        let mut extensions = ca_extensions(
            &subject,
            &spki,
            KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
            0,
        )?;
        extensions.push(self.authority_key_id(&subject)?);
        let cert_der = build_cert(
            CertSpec {
                issuer: self.anchor.subject().clone(),
                subject,
                spki,
                validity,
                extensions,
            },
            &self.key,
            self.provider,
            "issuing CA",
        )?;
        let mut chain = vec![cert_der.clone()];
        chain.extend(self.chain.iter().cloned());
        Self::from_parts(
            cert_der,
            chain,
            key_pkcs8,
            self.provider,
            "the generated issuing CA certificate",
            "the generated issuing CA key",
        )
    }

    /// Loads a CA from its certificate (DER) and PKCS#8 DER key.
    ///
    /// # Errors
    /// [`PkiError::Cert`] when the certificate is not a usable CA,
    /// [`PkiError::Key`] or [`PkiError::KeyMismatch`].
    pub fn from_der(
        cert_der: Vec<u8>,
        key_pkcs8_der: &[u8],
        provider: &'static CryptoProvider,
    ) -> Result<Self, PkiError> {
        let chain = intermediate_chain(&cert_der, &[]);
        Self::from_parts(
            cert_der,
            chain,
            Zeroizing::new(key_pkcs8_der.to_vec()),
            provider,
            "the CA certificate",
            "the CA private key",
        )
    }

    /// Loads a CA from a certificate PEM file and a PKCS#8 key PEM file.
    /// For an intermediate CA, the file may continue with the certificates
    /// above it (a root among them is left out of the chain it hands to
    /// leaves). An encrypted key is refused (see
    /// [`load_with`](Self::load_with)).
    ///
    /// # Errors
    /// File errors naming the file, [`PkiError::Cert`], [`PkiError::Key`],
    /// [`PkiError::KeyEncrypted`] or [`PkiError::KeyMismatch`] (naming both
    /// files).
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
        let above: Vec<Vec<u8>> = certs.collect();
        let chain = intermediate_chain(&cert_der, &above);
        let key_pkcs8 = store::read_key_pem_with(key_path, passphrase)?;
        Self::from_parts(
            cert_der,
            chain,
            key_pkcs8,
            provider,
            &cert_path.display().to_string(),
            &key_path.display().to_string(),
        )
    }

    fn from_parts(
        cert_der: Vec<u8>,
        chain: Vec<Vec<u8>>,
        key_pkcs8: Zeroizing<Vec<u8>>,
        provider: &'static CryptoProvider,
        cert_origin: &str,
        key_origin: &str,
    ) -> Result<Self, PkiError> {
        let anchor =
            TrustAnchor::check_ca(&cert_der, provider).map_err(|source| PkiError::Cert {
                origin: cert_origin.to_owned(),
                source,
            })?;
        let key = super::identity::load_matching_key(
            provider,
            &key_pkcs8,
            anchor.spki_der(),
            key_origin,
            cert_origin,
        )?;
        Ok(Self {
            anchor,
            chain,
            key,
            key_pkcs8,
            provider,
        })
    }

    /// The CA certificate, DER.
    #[must_use]
    pub fn cert_der(&self) -> &[u8] {
        self.anchor.cert_der()
    }

    /// The CA private key, PKCS#8 DER.
    #[must_use]
    pub fn key_pkcs8_der(&self) -> &[u8] {
        &self.key_pkcs8
    }

    /// A self-signed certificate with this CA's name and key and no
    /// authorityKeyIdentifier, for x509-cert's `CrlBuilder`: it takes a
    /// CRL's authorityKeyIdentifier from the issuer certificate's own
    /// authorityKeyIdentifier when there is one, which for an intermediate
    /// names the root's key, and from the SHA-1 of the issuer's key (our
    /// subjectKeyIdentifier) otherwise. The stand-in gives the right one;
    /// it is never written or sent.
    pub(crate) fn crl_builder_issuer(&self) -> Result<Vec<u8>, PkiError> {
        if self.is_root() {
            return Ok(self.cert_der().to_vec());
        }
        let spki = spki_of(self.key.as_ref())?;
        let subject = self.anchor.subject().clone();
        let extensions = ca_extensions(
            &subject,
            &spki,
            KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
            0,
        )?;
        let validity = Validity {
            not_before: SystemTime::now() - CLOCK_SKEW_ALLOWANCE,
            not_after: self.anchor.not_after(),
        }
        .to_x509()?;
        build_cert(
            CertSpec {
                issuer: subject.clone(),
                subject,
                spki,
                validity,
                extensions,
            },
            &self.key,
            self.provider,
            "CRL issuer stand-in",
        )
    }

    /// The loaded CA private key, for the CRL signer.
    pub(crate) fn signing_key(&self) -> &Arc<dyn RsaPrivateKey> {
        &self.key
    }

    /// The CA certificate, checked as a CA; for a root, the trust anchor
    /// peers verify against.
    #[must_use]
    pub fn trust_anchor(&self) -> &TrustAnchor {
        &self.anchor
    }

    /// The certificates that follow a leaf this CA issues, nearest first:
    /// empty for a root, this CA's certificate (and any intermediate above
    /// it) for an issuing CA.
    #[must_use]
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// Whether this CA is a self-signed root.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.anchor.is_root()
    }

    /// The authorityKeyIdentifier extension naming this CA's key.
    fn authority_key_id(&self, subject: &Name) -> Result<Extension, PkiError> {
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(
                OctetString::new(self.anchor.key_id()).map_err(build_error("CA"))?,
            ),
            ..Default::default()
        };
        extension(false, &aki, subject)
    }

    /// The CA's common name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.anchor.name()
    }

    /// Issues a leaf certificate for a freshly generated key of `bits` bits.
    /// For [`Role::Server`], `name` is the common name and `server_names`
    /// (at least one) become the subjectAltName entries; for
    /// [`Role::Device`], `name` is the common name and must be a valid device
    /// name, and `server_names` must be empty. The request is validated
    /// before the key is generated.
    ///
    /// # Errors
    /// [`PkiError::CaRole`], [`PkiError::NoServerNames`],
    /// [`PkiError::UnexpectedServerNames`], [`PkiError::InvalidDeviceName`],
    /// [`PkiError::InvalidCommonName`], [`PkiError::InvalidValidity`],
    /// [`PkiError::KeyGeneration`], [`PkiError::Random`] or
    /// [`PkiError::Build`].
    pub fn issue(
        &self,
        role: Role,
        name: &str,
        server_names: &[ServerName],
        bits: usize,
        validity: Validity,
    ) -> Result<IssuedLeaf, PkiError> {
        check_leaf_request(role, name, server_names)?;
        let validity = validity.to_x509()?;
        let key_pkcs8_der = generate_key(bits, self.provider)?;
        let key = load_generated_key(&key_pkcs8_der, self.provider)?;
        let spki = spki_of(key.as_ref())?;
        let cert_der = self.issue_checked(role, name, server_names, spki, validity)?;
        Ok(IssuedLeaf {
            cert_der,
            key_pkcs8_der,
        })
    }

    /// Issues a leaf certificate for an existing RSA public key (DER
    /// SubjectPublicKeyInfo); the rules are those of [`Self::issue`].
    ///
    /// # Errors
    /// As [`Self::issue`], and [`PkiError::PublicKey`] when `spki_der` is
    /// not an acceptable RSA public key.
    pub fn issue_for_key(
        &self,
        role: Role,
        name: &str,
        server_names: &[ServerName],
        spki_der: &[u8],
        validity: Validity,
    ) -> Result<Vec<u8>, PkiError> {
        check_leaf_request(role, name, server_names)?;
        let validity = validity.to_x509()?;
        let spki =
            SubjectPublicKeyInfoOwned::from_der(spki_der).map_err(|e| PkiError::PublicKey {
                reason: format!("not a DER SubjectPublicKeyInfo ({e})"),
            })?;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(PkiError::PublicKey {
                reason: "not an RSA key".to_owned(),
            });
        }
        self.provider
            .rsa
            .load_public_key(spki_der)
            .map_err(|e| PkiError::PublicKey {
                reason: e.to_string(),
            })?;
        self.issue_checked(role, name, server_names, spki, validity)
    }

    /// Builds and signs a leaf for a request that passed
    /// [`check_leaf_request`].
    fn issue_checked(
        &self,
        role: Role,
        name: &str,
        server_names: &[ServerName],
        spki: SubjectPublicKeyInfoOwned,
        validity: x509_cert::time::Validity,
    ) -> Result<Vec<u8>, PkiError> {
        let spec = self.leaf_spec(role, name, server_names, spki, validity)?;
        build_cert(spec, &self.key, self.provider, &format!("{role} {name:?}"))
    }

    /// The names and extensions of a leaf (see the profile in the module
    /// docs).
    fn leaf_spec(
        &self,
        role: Role,
        name: &str,
        server_names: &[ServerName],
        spki: SubjectPublicKeyInfoOwned,
        validity: x509_cert::time::Validity,
    ) -> Result<CertSpec, PkiError> {
        let err = |e: der::Error| PkiError::Build {
            what: format!("{role} {name:?}"),
            reason: e.to_string(),
        };
        let subject = make_name(None, name).map_err(err)?;
        let purpose = if role == Role::Server {
            ID_KP_SERVER_AUTH
        } else {
            ID_KP_CLIENT_AUTH
        };
        let mut extensions = vec![
            extension(
                true,
                &BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
                &subject,
            )?,
            extension(
                true,
                &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment),
                &subject,
            )?,
            extension(false, &ExtendedKeyUsage(vec![purpose]), &subject)?,
        ];
        if role == Role::Server {
            let names = server_names
                .iter()
                .map(|n| match n {
                    ServerName::Dns(dns) => Ia5String::new(dns).map(GeneralName::DnsName),
                    ServerName::Ip(ip) => Ok(GeneralName::from(*ip)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            extensions.push(extension(false, &SubjectAltName(names), &subject)?);
        }
        let ski = SubjectKeyIdentifier::try_from(spki.owned_to_ref()).map_err(err)?;
        extensions.push(extension(false, &ski, &subject)?);
        extensions.push(self.authority_key_id(&subject)?);

        Ok(CertSpec {
            subject,
            issuer: self.anchor.subject().clone(),
            spki,
            validity,
            extensions,
        })
    }
}

/// Test hooks: craft certificates the public API refuses to make.
#[cfg(test)]
impl CertificateAuthority {
    /// The leaf profile for `spki_der`, for tests to alter before signing.
    pub(crate) fn leaf_spec_for_test(
        &self,
        role: Role,
        name: &str,
        server_names: &[ServerName],
        spki_der: &[u8],
        validity: Validity,
    ) -> CertSpec {
        let spki = SubjectPublicKeyInfoOwned::from_der(spki_der).unwrap();
        self.leaf_spec(role, name, server_names, spki, validity.to_x509().unwrap())
            .unwrap()
    }

    /// Signs `spec` with the CA key.
    pub(crate) fn sign_for_test(&self, spec: CertSpec) -> Vec<u8> {
        build_cert(spec, &self.key, self.provider, "test").unwrap()
    }

    /// The CA's private key.
    pub(crate) fn key_for_test(&self) -> &Arc<dyn RsaPrivateKey> {
        &self.key
    }
}

/// The chain an issuing CA hands to its leaves: itself and the
/// certificates above it, without a self-signed root; empty for a root.
fn intermediate_chain(cert_der: &[u8], above: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let self_issued = |der: &[u8]| {
        super::parse::parse(der)
            .map(|p| p.tbs().issuer() == p.tbs().subject())
            .unwrap_or(false)
    };
    if self_issued(cert_der) {
        return Vec::new();
    }
    std::iter::once(cert_der)
        .chain(above.iter().map(Vec::as_slice))
        .filter(|der| !self_issued(der))
        .map(<[u8]>::to_vec)
        .collect()
}

/// Validates a leaf request before anything expensive happens.
pub(crate) fn check_leaf_request(
    role: Role,
    name: &str,
    server_names: &[ServerName],
) -> Result<(), PkiError> {
    match role {
        Role::Ca => Err(PkiError::CaRole),
        Role::Server => {
            check_common_name(name)?;
            if server_names.is_empty() {
                Err(PkiError::NoServerNames)
            } else {
                Ok(())
            }
        }
        Role::Device => {
            if let Some(reason) = device_name_problem(name) {
                return Err(PkiError::InvalidDeviceName {
                    name: name.to_owned(),
                    reason,
                });
            }
            if server_names.is_empty() {
                Ok(())
            } else {
                Err(PkiError::UnexpectedServerNames {
                    name: name.to_owned(),
                })
            }
        }
    }
}

/// A common name: 1 to 64 characters, no control characters.
fn check_common_name(name: &str) -> Result<(), PkiError> {
    let reason = if name.is_empty() {
        Some("a common name cannot be empty")
    } else if name.chars().count() > MAX_COMMON_NAME_LEN {
        Some("a common name is at most 64 characters long")
    } else if name.chars().any(char::is_control) {
        Some("a common name cannot contain control characters")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(PkiError::InvalidCommonName {
            name: name.to_owned(),
            reason,
        }),
    }
}

fn build_error(what: &'static str) -> impl Fn(der::Error) -> PkiError {
    move |e| PkiError::Build {
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

/// A freshly generated key: its PKCS#8 DER and the key loaded.
pub type KeyPair = (Zeroizing<Vec<u8>>, Arc<dyn RsaPrivateKey>);

/// Generates an RSA key of `bits` bits: its PKCS#8 DER and the loaded key.
///
/// # Errors
/// [`PkiError::KeyGeneration`] or [`PkiError::Key`].
pub fn generate_key_pair(bits: usize, provider: &CryptoProvider) -> Result<KeyPair, PkiError> {
    let pkcs8 = generate_key(bits, provider)?;
    let key = load_generated_key(&pkcs8, provider)?;
    Ok((pkcs8, key))
}

fn generate_key(bits: usize, provider: &CryptoProvider) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    provider
        .rsa
        .generate_pkcs8(bits)
        .map_err(|source| PkiError::KeyGeneration { bits, source })
}

fn load_generated_key(
    pkcs8: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<dyn RsaPrivateKey>, PkiError> {
    provider
        .rsa
        .load_private_key(pkcs8)
        .map_err(|source| PkiError::Key {
            origin: "the generated key".to_owned(),
            source,
        })
}

fn spki_of(key: &dyn RsaPrivateKey) -> Result<SubjectPublicKeyInfoOwned, PkiError> {
    SubjectPublicKeyInfoOwned::from_der(key.public_key_spki_der()).map_err(|e| {
        PkiError::PublicKey {
            reason: e.to_string(),
        }
    })
}

/// Encodes an extension with explicit criticality.
/// The extensions of a CA certificate (proto-spec.md §2): basicConstraints
/// CA with `path_len` and `usage`, both critical, and the key identifier.
pub(crate) fn ca_extensions(
    subject: &Name,
    spki: &SubjectPublicKeyInfoOwned,
    usage: KeyUsage,
    path_len: u8,
) -> Result<Vec<Extension>, PkiError> {
    let ski = SubjectKeyIdentifier::try_from(spki.owned_to_ref()).map_err(build_error("CA"))?;
    Ok(vec![
        extension(
            true,
            &BasicConstraints {
                ca: true,
                path_len_constraint: Some(path_len),
            },
            subject,
        )?,
        extension(true, &usage, subject)?,
        extension(false, &ski, subject)?,
    ])
}

pub(crate) fn extension<T>(critical: bool, value: &T, subject: &Name) -> Result<Extension, PkiError>
where
    T: const_oid::AssociatedOid + der::Encode,
{
    (critical, value)
        .to_extension(subject, &[])
        .map_err(|e| PkiError::Build {
            what: "extension".to_owned(),
            reason: e.to_string(),
        })
}

/// `[O=<org>,] CN=<cn>` with UTF8String values.
pub(crate) fn make_name(org: Option<&str>, cn: &str) -> der::Result<Name> {
    fn rdn(
        oid: const_oid::ObjectIdentifier,
        value: &str,
    ) -> der::Result<RelativeDistinguishedName> {
        let value = Any::encode_from(&Utf8StringRef::new(value)?)?;
        RelativeDistinguishedName::try_from(vec![AttributeTypeAndValue { oid, value }])
    }
    let mut rdns = RdnSequence::default();
    if let Some(org) = org {
        rdns.push(rdn(ORGANIZATION_NAME, org)?);
    }
    rdns.push(rdn(COMMON_NAME, cn)?);
    Name::from_der(&rdns.to_der()?)
}

/// Draws a positive, non-zero 16-byte serial number.
fn random_serial(provider: &CryptoProvider) -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; SERIAL_LEN];
    provider
        .random
        .fill(&mut bytes)
        .map_err(|source| PkiError::Random { source })?;
    bytes[0] &= 0x7f;
    if bytes.iter().all(|b| *b == 0) {
        bytes[SERIAL_LEN - 1] = 1;
    }
    SerialNumber::new(&bytes).map_err(build_error("serial number"))
}

/// Everything in a certificate except the serial and the signature.
pub(crate) struct CertSpec {
    pub(crate) subject: Name,
    pub(crate) issuer: Name,
    pub(crate) spki: SubjectPublicKeyInfoOwned,
    pub(crate) validity: x509_cert::time::Validity,
    pub(crate) extensions: Vec<Extension>,
}

/// A builder profile that uses exactly the names and extensions given.
struct FixedProfile {
    subject: Name,
    issuer: Name,
    extensions: Vec<Extension>,
}

impl BuilderProfile for FixedProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        _spk: spki::SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: spki::SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(self.extensions.clone())
    }
}

/// Assigns a serial, signs with `signer` (RSASSA-PSS-SHA256) and encodes.
pub(crate) fn build_cert(
    spec: CertSpec,
    signer: &Arc<dyn RsaPrivateKey>,
    provider: &CryptoProvider,
    what: &str,
) -> Result<Vec<u8>, PkiError> {
    let err = |reason: String| PkiError::Build {
        what: what.to_owned(),
        reason,
    };
    let serial = random_serial(provider)?;
    let profile = FixedProfile {
        subject: spec.subject,
        issuer: spec.issuer,
        extensions: spec.extensions,
    };
    let builder = CertificateBuilder::new(profile, serial, spec.validity, spec.spki)
        .map_err(|e| err(e.to_string()))?;
    let signer = PssSha256Signer::new(Arc::clone(signer));
    let cert = builder
        .build::<_, PssSignature>(&signer)
        .map_err(|e| err(e.to_string()))?;
    cert.to_der().map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use x509_cert::ext::pkix::name::GeneralName;

    use super::*;
    use crate::pki::parse::parse;
    use crate::pki::testutil::{NO_KEYGEN, fixture, provider, spki_of};

    #[test]
    fn ca_profile() {
        let f = fixture();
        let ca = parse(f.ca.cert_der()).unwrap();
        assert_eq!(ca.tbs().subject().to_string(), "CN=secured CA,O=secured");
        assert_eq!(ca.tbs().issuer(), ca.tbs().subject());
        let bc = ca.ext.basic_constraints.as_ref().unwrap();
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = ca.ext.key_usage.unwrap();
        assert!(ku.0.contains(KeyUsages::KeyCertSign) && ku.0.contains(KeyUsages::CRLSign));
        assert!(!ku.0.contains(KeyUsages::DigitalSignature));
        assert!(ca.ext.ext_key_usage.is_none());
        let ski = ca.ext.subject_key_id.as_ref().unwrap();
        assert_eq!(ski.0.as_bytes().len(), 20);
        let critical: Vec<bool> = ca
            .tbs()
            .extensions()
            .unwrap()
            .iter()
            .map(|e| e.critical)
            .collect();
        assert_eq!(critical, [true, true, false]);
        assert!(f.ca.name() == "secured CA" && format!("{:?}", f.ca).contains("secured CA"));
    }

    #[test]
    fn leaf_profiles() {
        let f = fixture();
        let ca_ski = parse(f.ca.cert_der())
            .unwrap()
            .ext
            .subject_key_id
            .unwrap()
            .0;
        let server = parse(&f.server.cert_der).unwrap();
        assert_eq!(server.tbs().subject().to_string(), "CN=localhost");
        assert_eq!(server.tbs().issuer().to_string(), "CN=secured CA,O=secured");
        assert!(!server.is_ca());
        assert_eq!(server.san_strings(), ["DNS:localhost", "IP:127.0.0.1"]);
        let sans = &server.ext.subject_alt_name.as_ref().unwrap().0;
        assert!(matches!(&sans[1], GeneralName::IpAddress(ip) if ip.as_bytes() == [127, 0, 0, 1]));
        assert_eq!(
            server.ext.ext_key_usage.as_ref().unwrap().0,
            [ID_KP_SERVER_AUTH]
        );
        assert_eq!(
            server
                .ext
                .authority_key_id
                .as_ref()
                .unwrap()
                .key_identifier
                .as_ref(),
            Some(&ca_ski)
        );

        let device = parse(&f.device.cert_der).unwrap();
        assert_eq!(device.tbs().subject().to_string(), "CN=device-1");
        assert!(device.ext.subject_alt_name.is_none());
        assert_eq!(
            device.ext.ext_key_usage.as_ref().unwrap().0,
            [ID_KP_CLIENT_AUTH]
        );
        let ku = device.ext.key_usage.unwrap();
        assert!(ku.0.contains(KeyUsages::DigitalSignature));
        assert!(ku.0.contains(KeyUsages::KeyEncipherment));
        let critical: Vec<(String, bool)> = device
            .tbs()
            .extensions()
            .unwrap()
            .iter()
            .map(|e| (e.extn_id.to_string(), e.critical))
            .collect();
        assert_eq!(
            critical,
            [
                ("2.5.29.19".to_owned(), true),
                ("2.5.29.15".to_owned(), true),
                ("2.5.29.37".to_owned(), false),
                ("2.5.29.14".to_owned(), false),
                ("2.5.29.35".to_owned(), false),
            ]
        );
        // Validity is stored to the second and includes the skew allowance.
        assert!(device.not_before() < SystemTime::now() - Duration::from_secs(4 * 60));
    }

    #[test]
    fn bad_requests_fail_before_key_generation() {
        let f = fixture();
        // A CA whose provider panics if asked to generate a key.
        let ca = CertificateAuthority::from_der(
            f.ca.cert_der().to_vec(),
            f.ca.key_pkcs8_der(),
            &NO_KEYGEN,
        )
        .unwrap();
        let v = Validity::days_from_now(1);
        let localhost = [ServerName::Dns("localhost".into())];
        let cases: Vec<(Result<IssuedLeaf, PkiError>, &str)> = vec![
            (
                ca.issue(Role::Ca, "x", &[], 2048, v),
                "a CA certificate cannot be issued",
            ),
            (
                ca.issue(Role::Server, "srv", &[], 2048, v),
                "a server certificate needs at least one server name",
            ),
            (
                ca.issue(Role::Device, ".dev", &[], 2048, v),
                "invalid device name \".dev\": it cannot start with '.'",
            ),
            (
                ca.issue(Role::Device, "dev/1", &[], 2048, v),
                "invalid device name \"dev/1\": it may only contain",
            ),
            (
                ca.issue(Role::Device, &"d".repeat(65), &[], 2048, v),
                "invalid device name",
            ),
            (
                ca.issue(Role::Device, "dev", &localhost, 2048, v),
                "device certificates carry no server names",
            ),
            (
                ca.issue(Role::Server, "", &localhost, 2048, v),
                "invalid common name \"\"",
            ),
            (
                ca.issue(
                    Role::Device,
                    "dev",
                    &[],
                    2048,
                    Validity {
                        not_before: v.not_after,
                        not_after: v.not_before,
                    },
                ),
                "invalid validity period",
            ),
        ];
        for (result, expected) in cases {
            let err = result.unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        let err = CertificateAuthority::generate("bad\nname", 2048, v, &NO_KEYGEN).unwrap_err();
        assert!(matches!(err, PkiError::InvalidCommonName { .. }), "{err}");
    }

    #[test]
    fn issue_for_key_checks_the_key() {
        let f = fixture();
        let v = Validity::days_from_now(1);
        let err =
            f.ca.issue_for_key(Role::Device, "dev", &[], b"junk", v)
                .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the public key to certify is not acceptable"),
            "{err}"
        );
        let der =
            f.ca.issue_for_key(Role::Device, "dev", &[], &spki_of(&f.device), v)
                .unwrap();
        assert_eq!(parse(&der).unwrap().subject_cn().unwrap(), "dev");
    }

    #[test]
    fn ca_key_must_match() {
        let f = fixture();
        let err = CertificateAuthority::from_der(
            f.ca.cert_der().to_vec(),
            f.impostor_ca.key_pkcs8_der(),
            provider(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the CA private key does not match the CA certificate (the private key belongs to a different certificate)"
        );
        let err = CertificateAuthority::from_der(
            f.server.cert_der.clone(),
            &f.server.key_pkcs8_der,
            provider(),
        )
        .unwrap_err();
        assert!(matches!(err, PkiError::Cert { .. }), "{err}");
    }

    #[test]
    fn validity_days_from_now() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let v = Validity::days_from(start, 2);
        assert_eq!(v.not_before, start - Duration::from_secs(300));
        assert_eq!(v.not_after, start + Duration::from_secs(2 * 86_400));
        let debug = format!("{:?}", f_leaf());
        assert!(!debug.contains("key_pkcs8_der:"), "{debug}");
    }

    fn f_leaf() -> &'static IssuedLeaf {
        &fixture().device
    }
}
