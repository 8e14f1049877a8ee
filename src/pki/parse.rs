//! Strict certificate parsing shared by the anchor, identity and peer checks.
//!
//! [`parse`] bounds the input, decodes it as strict DER (trailing bytes
//! refused), keeps the TBS bytes exactly as they appear in the input for
//! signature verification, requires X.509 v3 and our RSASSA-PSS-SHA256
//! AlgorithmIdentifier in both places, and decodes the extensions we
//! understand, refusing duplicates and unknown critical ones.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use const_oid::AssociatedOid;
use const_oid::db::rfc4519::COMMON_NAME;
use const_oid::db::rfc5912::RSA_ENCRYPTION;
use der::{Decode, Encode, ErrorKind, Reader, SliceReader};
use x509_cert::Certificate;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::{DirectoryString, GeneralName};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, NameConstraints,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::Name;

use super::CertError;
use crate::crypto::x509::pss_sha256_algorithm_identifier;
use crate::crypto::{CryptoError, CryptoProvider, RsaPublicKey};

/// Largest certificate accepted, in DER bytes; longer input is refused
/// before it is parsed.
pub const MAX_CERT_LEN: usize = 16 * 1024;

/// A certificate that passed the structural checks.
pub(crate) struct ParsedCert<'a> {
    /// The TBSCertificate TLV exactly as it appears in the input.
    pub(crate) tbs_der: &'a [u8],
    /// The decoded certificate.
    pub(crate) cert: Certificate,
    /// The extensions we understand.
    pub(crate) ext: KnownExtensions,
}

/// The decoded extensions this crate knows; others are ignored unless
/// critical.
#[derive(Default)]
pub(crate) struct KnownExtensions {
    pub(crate) basic_constraints: Option<BasicConstraints>,
    pub(crate) key_usage: Option<KeyUsage>,
    pub(crate) ext_key_usage: Option<ExtendedKeyUsage>,
    pub(crate) subject_alt_name: Option<SubjectAltName>,
    pub(crate) subject_key_id: Option<SubjectKeyIdentifier>,
    pub(crate) authority_key_id: Option<AuthorityKeyIdentifier>,
    /// Whether a nameConstraints extension is present: this verifier does
    /// not process name constraints, so a CA certificate carrying them is
    /// refused rather than trusted beyond its constraints.
    pub(crate) name_constraints: bool,
}

impl ParsedCert<'_> {
    pub(crate) fn tbs(&self) -> &TbsCertificate {
        self.cert.tbs_certificate()
    }

    pub(crate) fn not_before(&self) -> SystemTime {
        self.tbs().validity().not_before.to_system_time()
    }

    pub(crate) fn not_after(&self) -> SystemTime {
        self.tbs().validity().not_after.to_system_time()
    }

    /// Whether the CA flag is set in basicConstraints.
    pub(crate) fn is_ca(&self) -> bool {
        self.ext.basic_constraints.as_ref().is_some_and(|bc| bc.ca)
    }

    /// The pathLenConstraint of a CA certificate's basicConstraints.
    pub(crate) fn path_len(&self) -> Option<u8> {
        self.ext
            .basic_constraints
            .as_ref()
            .and_then(|bc| bc.path_len_constraint)
    }

    /// The subject public key as DER SubjectPublicKeyInfo.
    pub(crate) fn spki_der(&self) -> Result<Vec<u8>, CertError> {
        self.tbs()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| malformed(&e))
    }

    /// Loads the subject public key through the provider, requiring RSA of an
    /// accepted size.
    pub(crate) fn public_key(
        &self,
        provider: &CryptoProvider,
    ) -> Result<Arc<dyn RsaPublicKey>, CertError> {
        if self.tbs().subject_public_key_info().algorithm.oid != RSA_ENCRYPTION {
            return Err(CertError::NotRsa);
        }
        provider
            .rsa
            .load_public_key(&self.spki_der()?)
            .map_err(|e| match e {
                CryptoError::KeySize { bits } => CertError::KeySize { bits },
                _ => CertError::BadPublicKey,
            })
    }

    /// Verifies the certificate's signature with `issuer_key` over the TBS
    /// bytes as received.
    pub(crate) fn verify_signature(&self, issuer_key: &dyn RsaPublicKey) -> Result<(), CertError> {
        let signature = self
            .cert
            .signature()
            .as_bytes()
            .ok_or(CertError::BadSignature)?;
        issuer_key
            .pss_verify(self.tbs_der, signature)
            .map_err(|_| CertError::BadSignature)
    }

    /// The single common name of the subject.
    pub(crate) fn subject_cn(&self) -> Result<String, CertError> {
        common_name(self.tbs().subject())
    }

    /// The serial number's content octets.
    pub(crate) fn serial(&self) -> &[u8] {
        self.tbs().serial_number().as_bytes()
    }

    /// subjectAltName DNS names and IP addresses, formatted `DNS:x`/`IP:y`.
    pub(crate) fn san_strings(&self) -> Vec<String> {
        let Some(san) = &self.ext.subject_alt_name else {
            return Vec::new();
        };
        san.0
            .iter()
            .filter_map(|gn| match gn {
                GeneralName::DnsName(dns) => Some(format!("DNS:{}", dns.as_str())),
                GeneralName::IpAddress(ip) => {
                    ip_from_octets(ip.as_bytes()).map(|ip| format!("IP:{ip}"))
                }
                _ => None,
            })
            .collect()
    }
}

/// Interprets a subjectAltName iPAddress entry (4 or 16 octets).
pub(crate) fn ip_from_octets(octets: &[u8]) -> Option<std::net::IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(octets) {
        Some(std::net::IpAddr::from(v4))
    } else if let Ok(v6) = <[u8; 16]>::try_from(octets) {
        Some(std::net::IpAddr::from(v6))
    } else {
        None
    }
}

/// The single common name in `name`.
pub(crate) fn common_name(name: &Name) -> Result<String, CertError> {
    let mut cns = name.iter().filter(|atv| atv.oid == COMMON_NAME);
    let first = cns.next().ok_or(CertError::MissingCommonName)?;
    if cns.next().is_some() {
        return Err(CertError::MultipleCommonNames);
    }
    let value = DirectoryString::try_from(&first.value).map_err(|e| malformed(&e))?;
    Ok(String::from(value))
}

fn malformed(e: &der::Error) -> CertError {
    if matches!(e.kind(), ErrorKind::TrailingData { .. }) {
        CertError::TrailingData
    } else {
        CertError::Malformed {
            reason: e.to_string(),
        }
    }
}

/// The signed part (TBSCertificate, TBSCertList of a CRL, or
/// CertificationRequestInfo of a request: the first element of the outer
/// SEQUENCE) as it appears in `der`.
pub(crate) fn tbs_slice(der: &[u8]) -> der::Result<&[u8]> {
    let mut reader = SliceReader::new(der)?;
    let tbs = reader.sequence(|outer| {
        let tbs = outer.tlv_bytes()?;
        let rest = outer.remaining_len();
        outer.read_slice(rest)?;
        Ok::<_, der::Error>(tbs)
    })?;
    reader.finish()?;
    Ok(tbs)
}

/// Parses and structurally checks a certificate (see the module docs).
pub(crate) fn parse(der: &[u8]) -> Result<ParsedCert<'_>, CertError> {
    if der.len() > MAX_CERT_LEN {
        return Err(CertError::TooLarge {
            len: der.len(),
            max: MAX_CERT_LEN,
        });
    }
    let cert = Certificate::from_der(der).map_err(|e| malformed(&e))?;
    let tbs_der = tbs_slice(der).map_err(|e| malformed(&e))?;
    let tbs = cert.tbs_certificate();

    match tbs.version() {
        Version::V3 => {}
        Version::V1 => return Err(CertError::NotV3 { version: "v1" }),
        Version::V2 => return Err(CertError::NotV3 { version: "v2" }),
    }

    let expected = pss_sha256_algorithm_identifier().map_err(|e| CertError::Malformed {
        reason: e.to_string(),
    })?;
    if cert.signature_algorithm() != &expected {
        return Err(CertError::UnsupportedAlgorithm {
            field: "signatureAlgorithm",
            oid: cert.signature_algorithm().oid.to_string(),
        });
    }
    if tbs.signature() != &expected {
        return Err(CertError::UnsupportedAlgorithm {
            field: "tbsCertificate.signature",
            oid: tbs.signature().oid.to_string(),
        });
    }

    let ext = known_extensions(tbs.extensions().map(Vec::as_slice).unwrap_or(&[]))?;
    Ok(ParsedCert { tbs_der, cert, ext })
}

fn decode_ext<'a, T: Decode<'a>>(ext: &'a Extension, name: &'static str) -> Result<T, CertError> {
    T::from_der(ext.extn_value.as_bytes()).map_err(|_| CertError::BadExtension { name })
}

fn known_extensions(extensions: &[Extension]) -> Result<KnownExtensions, CertError> {
    let mut known = KnownExtensions::default();
    let mut seen = BTreeSet::new();
    for ext in extensions {
        if !seen.insert(ext.extn_id) {
            return Err(CertError::DuplicateExtension {
                oid: ext.extn_id.to_string(),
            });
        }
        match ext.extn_id {
            BasicConstraints::OID => {
                known.basic_constraints = Some(decode_ext(ext, "basicConstraints")?);
            }
            KeyUsage::OID => known.key_usage = Some(decode_ext(ext, "keyUsage")?),
            ExtendedKeyUsage::OID => {
                known.ext_key_usage = Some(decode_ext(ext, "extendedKeyUsage")?);
            }
            SubjectAltName::OID => {
                known.subject_alt_name = Some(decode_ext(ext, "subjectAltName")?);
            }
            SubjectKeyIdentifier::OID => {
                known.subject_key_id = Some(decode_ext(ext, "subjectKeyIdentifier")?);
            }
            AuthorityKeyIdentifier::OID => {
                known.authority_key_id = Some(decode_ext(ext, "authorityKeyIdentifier")?);
            }
            NameConstraints::OID => known.name_constraints = true,
            oid if ext.critical => {
                return Err(CertError::UnsupportedCriticalExtension {
                    oid: oid.to_string(),
                });
            }
            _ => {}
        }
    }
    Ok(known)
}
