//! Peer certificate verification: the only way to obtain a [`VerifiedPeer`].
//!
//! [`verify_peer`] checks, in order: size and strict DER, X.509 v3, the
//! RSASSA-PSS-SHA256 AlgorithmIdentifier (outer and TBS), that the issuer is
//! the trusted CA, the signature over the TBS bytes as received, the CA's and
//! then the certificate's validity period, that the certificate is not a CA,
//! no unknown critical extension, keyUsage and extendedKeyUsage for the
//! role, the RSA key size, and finally the name: subjectAltName for a server
//! (the common name is never used for matching) and a valid device name for
//! a device. A single CA signs every leaf, so there is no chain building.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use x509_cert::ext::pkix::KeyUsages;
use x509_cert::ext::pkix::name::GeneralName;

use super::names::device_name_problem;
use super::parse::{ParsedCert, ip_from_octets, parse};
use super::{CertError, Role, ServerName, TrustAnchor};
use crate::crypto::RsaPublicKey;

/// Proof that a peer certificate passed [`verify_peer`]; nothing else can
/// build one.
#[derive(Clone)]
pub struct VerifiedPeer {
    name: String,
    public_key: Arc<dyn RsaPublicKey>,
    cert_der: Vec<u8>,
    role: Role,
    serial: Vec<u8>,
    not_after: SystemTime,
}

impl VerifiedPeer {
    /// The subject common name (for a device, a valid device name).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The certified public key.
    #[must_use]
    pub fn public_key(&self) -> &Arc<dyn RsaPublicKey> {
        &self.public_key
    }

    /// The certificate, DER, exactly as presented.
    #[must_use]
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The role the certificate was verified for.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The serial number as lowercase hex.
    #[must_use]
    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }

    /// End of the certificate's validity period.
    #[must_use]
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

impl fmt::Debug for VerifiedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedPeer")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("serial", &self.serial_hex())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Verifies a peer's certificate against the trust anchor for `role`
/// ([`Role::Server`] or [`Role::Device`]) at time `now`. For a server,
/// `server_name` (when given) must match a subjectAltName entry exactly:
/// DNS names case-insensitively without wildcards, IP addresses only
/// against IP entries.
///
/// # Errors
/// One [`CertError`] variant per failed check (see the module docs), and
/// [`CertError::CaRole`] when `role` is [`Role::Ca`].
pub fn verify_peer(
    anchor: &TrustAnchor,
    cert_der: &[u8],
    role: Role,
    server_name: Option<&ServerName>,
    now: SystemTime,
) -> Result<VerifiedPeer, CertError> {
    if role == Role::Ca {
        return Err(CertError::CaRole);
    }
    let parsed = parse(cert_der)?;
    let tbs = parsed.tbs();

    if tbs.issuer() != anchor.subject() {
        return Err(if tbs.issuer() == tbs.subject() {
            CertError::SelfSigned {
                subject: tbs.subject().to_string(),
                expected: anchor.subject().to_string(),
            }
        } else {
            CertError::UnknownIssuer {
                issuer: tbs.issuer().to_string(),
                expected: anchor.subject().to_string(),
            }
        });
    }
    parsed.verify_signature(anchor.public_key().as_ref())?;

    anchor.check_validity(now)?;
    let (not_before, not_after) = (parsed.not_before(), parsed.not_after());
    if now < not_before {
        return Err(CertError::NotYetValid { not_before, now });
    }
    if now > not_after {
        return Err(CertError::Expired { not_after, now });
    }

    if parsed.is_ca() {
        return Err(CertError::IsCa);
    }
    check_usage(&parsed, role)?;
    let public_key = parsed.public_key(anchor.provider())?;

    let name = parsed.subject_cn()?;
    match role {
        Role::Device => {
            if let Some(reason) = device_name_problem(&name) {
                return Err(CertError::InvalidDeviceName { name, reason });
            }
        }
        Role::Server => {
            if let Some(wanted) = server_name {
                check_server_name(&parsed, wanted)?;
            }
        }
        Role::Ca => return Err(CertError::CaRole),
    }

    Ok(VerifiedPeer {
        name,
        public_key,
        cert_der: cert_der.to_vec(),
        role,
        serial: parsed.serial().to_vec(),
        not_after,
    })
}

/// keyUsage and extendedKeyUsage for the role: a server decrypts the
/// pre-master (keyEncipherment, serverAuth), a device signs (digitalSignature,
/// clientAuth).
fn check_usage(parsed: &ParsedCert<'_>, role: Role) -> Result<(), CertError> {
    let (usage, usage_name, purpose) = match role {
        Role::Server => (
            KeyUsages::KeyEncipherment,
            "keyEncipherment",
            const_oid::db::rfc5280::ID_KP_SERVER_AUTH,
        ),
        Role::Device => (
            KeyUsages::DigitalSignature,
            "digitalSignature",
            const_oid::db::rfc5280::ID_KP_CLIENT_AUTH,
        ),
        Role::Ca => return Err(CertError::CaRole),
    };
    if !parsed.ext.key_usage.is_some_and(|ku| ku.0.contains(usage)) {
        return Err(CertError::MissingKeyUsage { usage: usage_name });
    }
    let has_purpose = parsed
        .ext
        .ext_key_usage
        .as_ref()
        .is_some_and(|eku| eku.0.contains(&purpose));
    if !has_purpose {
        return Err(CertError::WrongRole { expected: role });
    }
    Ok(())
}

fn check_server_name(parsed: &ParsedCert<'_>, wanted: &ServerName) -> Result<(), CertError> {
    let entries = parsed
        .ext
        .subject_alt_name
        .as_ref()
        .map(|san| san.0.as_slice())
        .unwrap_or(&[]);
    let matched = entries.iter().any(|entry| match (wanted, entry) {
        (ServerName::Dns(want), GeneralName::DnsName(have)) => {
            have.as_str().eq_ignore_ascii_case(want)
        }
        (ServerName::Ip(want), GeneralName::IpAddress(have)) => {
            ip_from_octets(have.as_bytes()) == Some(*want)
        }
        _ => false,
    });
    if matched {
        Ok(())
    } else {
        Err(CertError::NameMismatch {
            expected: wanted.to_string(),
            presented: parsed.san_strings(),
        })
    }
}
