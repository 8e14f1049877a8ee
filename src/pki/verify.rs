//! Peer certificate verification: the only way to obtain a
//! [`CertifiedPeer`], and through it a [`VerifiedPeer`].
//!
//! A certificate is public: passing [`verify_peer`] says who the certificate
//! names, not that the other side holds its key. A [`CertifiedPeer`] is
//! therefore only a *claim*; it becomes a [`VerifiedPeer`] when the
//! handshake has seen proof of possession of the key (the device's signature
//! in `PREM`, the server's `FINI`) and hands over a [`KeyPossession`] token.
//!
//! [`verify_peer`] checks, in order: size and strict DER, X.509 v3, the
//! RSASSA-PSS-SHA256 AlgorithmIdentifier (outer and TBS), that the issuer is
//! the trusted CA, the signature over the TBS bytes as received, the CA's and
//! then the certificate's validity period, that the certificate is not a CA,
//! no unknown critical extension, keyUsage and extendedKeyUsage for the
//! role, the RSA key size, and finally the name: subjectAltName for a server
//! (the common name is never used for matching) and a valid device name for
//! a device. Between the leaf and the anchor there may be up to
//! [`MAX_INTERMEDIATES`] intermediate CA certificates, each checked as a CA
//! (basicConstraints, keyCertSign, pathLenConstraint, validity, no name
//! constraints) before its key is used.

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
/// build one. It does not prove that the peer holds the certificate's key:
/// treat its name as claimed until it becomes a [`VerifiedPeer`].
#[derive(Clone)]
pub struct CertifiedPeer {
    name: String,
    public_key: Arc<dyn RsaPublicKey>,
    cert_der: Vec<u8>,
    role: Role,
    serial: Vec<u8>,
    not_after: SystemTime,
    intermediates: Vec<Vec<u8>>,
}

impl CertifiedPeer {
    /// Turns the certified claim into a verified peer, given proof that the
    /// peer holds the certificate's key.
    #[must_use]
    pub fn into_verified(self, _proof: KeyPossession) -> VerifiedPeer {
        VerifiedPeer { certified: self }
    }

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

    /// The serial number's content octets, as a CRL lists them.
    #[must_use]
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// End of the certificate's validity period.
    #[must_use]
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The intermediate CA certificates of a server certificate's verified
    /// path, nearest issuer first (empty when the root issued the
    /// certificate, and for a device's certificate, whose path is not
    /// kept).
    #[must_use]
    pub fn intermediates(&self) -> &[Vec<u8>] {
        &self.intermediates
    }
}

impl fmt::Debug for CertifiedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedPeer")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("serial", &self.serial_hex())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Evidence, produced by the handshake only, that the peer proved
/// possession of its certificate's key. Built with
/// [`KeyPossession::assertion`], called at exactly the two places that check
/// such a proof (easy to grep for, in the manner of rustls' verification
/// tokens).
#[derive(Debug)]
pub struct KeyPossession(());

impl KeyPossession {
    /// Asserts that the key-possession proof has just verified.
    pub(crate) fn assertion() -> Self {
        Self(())
    }
}

/// A peer whose certificate verified *and* who proved it holds the
/// certificate's key. Only [`CertifiedPeer::into_verified`] builds one.
#[derive(Clone)]
pub struct VerifiedPeer {
    certified: CertifiedPeer,
}

impl std::ops::Deref for VerifiedPeer {
    type Target = CertifiedPeer;

    fn deref(&self) -> &CertifiedPeer {
        &self.certified
    }
}

impl fmt::Debug for VerifiedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VerifiedPeer")
            .field(&self.certified)
            .finish()
    }
}

/// Most intermediate CA certificates between a leaf and the trusted root
/// (proto-spec.md §2.1): enough for a root and one issuing CA, with room
/// for one more level.
pub const MAX_INTERMEDIATES: usize = 2;

/// Most certificates a peer may offer as its chain; one more than
/// [`MAX_INTERMEDIATES`] so that a chain may end with the root itself.
pub const MAX_CHAIN_CERTS: usize = MAX_INTERMEDIATES + 1;

/// Verifies a peer's certificate issued directly by the trust anchor: the
/// same checks as [`verify_chain`] with no intermediate certificates.
///
/// # Errors
/// As [`verify_chain`].
pub fn verify_peer(
    anchor: &TrustAnchor,
    cert_der: &[u8],
    role: Role,
    server_name: Option<&ServerName>,
    now: SystemTime,
) -> Result<CertifiedPeer, CertError> {
    verify_chain(anchor, cert_der, &[], role, server_name, now)
}

/// Verifies a peer's certificate against the trust anchor for `role`
/// ([`Role::Server`] or [`Role::Device`]) at time `now`, building the path
/// through `intermediates` (the certificates the peer sent with its own,
/// in any order; a copy of the root among them is ignored). For a server,
/// `server_name` (when given) must match a subjectAltName entry exactly:
/// DNS names case-insensitively without wildcards, IP addresses only
/// against IP entries.
///
/// This is the one certificate profile of `secured`: the handshake, the
/// download check and `secured pki verify` all call it.
///
/// # Errors
/// One [`CertError`] variant per failed check (see the module docs), and
/// [`CertError::CaRole`] when `role` is [`Role::Ca`].
pub fn verify_chain(
    anchor: &TrustAnchor,
    cert_der: &[u8],
    intermediates: &[Vec<u8>],
    role: Role,
    server_name: Option<&ServerName>,
    now: SystemTime,
) -> Result<CertifiedPeer, CertError> {
    if role == Role::Ca {
        return Err(CertError::CaRole);
    }
    if intermediates.len() > MAX_CHAIN_CERTS {
        return Err(CertError::ChainTooLong {
            max: MAX_INTERMEDIATES,
        });
    }
    let parsed = parse(cert_der)?;
    let path = verify_path(anchor, &parsed, intermediates, now)?;

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
            if parsed.san_strings().is_empty() {
                return Err(CertError::MissingSubjectAltName);
            }
            if let Some(wanted) = server_name {
                check_server_name(&parsed, wanted)?;
            }
        }
        Role::Ca => return Err(CertError::CaRole),
    }

    Ok(CertifiedPeer {
        name,
        public_key,
        cert_der: cert_der.to_vec(),
        role,
        serial: parsed.serial().to_vec(),
        not_after,
        // Kept for a server only: a device verifies the files the server
        // relays with it, while a server would hold one per session.
        intermediates: if role == Role::Server {
            path.into_iter().map(|i| intermediates[i].clone()).collect()
        } else {
            Vec::new()
        },
    })
}

/// Checks a CA certificate that signs for us (an issuing CA): it must be a
/// CA fit to sign certificates, valid at `now`, and chain to `anchor`
/// through `intermediates`.
///
/// # Errors
/// The [`CertError`] of the first failed check.
pub fn verify_ca(
    anchor: &TrustAnchor,
    ca_der: &[u8],
    intermediates: &[Vec<u8>],
    now: SystemTime,
) -> Result<(), CertError> {
    let parsed = parse(ca_der)?;
    check_intermediate(&parsed, 0, anchor, now)?;
    verify_path(anchor, &parsed, intermediates, now).map(drop)
}

/// Walks from `leaf` up to the anchor: each certificate's issuer is either
/// the anchor, whose key must verify its signature, or one of
/// `intermediates`, which must be a CA fit to sign it (checked by
/// [`check_intermediate`]) and whose key must verify its signature. At most
/// [`MAX_INTERMEDIATES`] are used, each at most once, and every
/// pathLenConstraint on the way (the anchor's included) must allow the
/// intermediates below it.
fn verify_path(
    anchor: &TrustAnchor,
    leaf: &ParsedCert<'_>,
    intermediates: &[Vec<u8>],
    now: SystemTime,
) -> Result<Vec<usize>, CertError> {
    let mut used = [false; MAX_CHAIN_CERTS];
    // Which of `intermediates` the path takes, nearest issuer first.
    let mut taken = Vec::with_capacity(MAX_INTERMEDIATES);
    // Parsed lazily: an intermediate that does not parse is only an error
    // if the path needs it.
    let mut path: Vec<ParsedCert<'_>> = Vec::with_capacity(MAX_INTERMEDIATES);
    loop {
        let child = path.last().unwrap_or(leaf);
        let issuer = child.tbs().issuer();
        if issuer == anchor.subject() {
            anchor.check_validity(now)?;
            child.verify_signature(anchor.public_key().as_ref())?;
            if let Some(path_len) = anchor.path_len()
                && path.len() > usize::from(path_len)
            {
                return Err(CertError::PathLength {
                    subject: anchor.subject().to_string(),
                    path_len,
                    below: path.len(),
                });
            }
            return Ok(taken);
        }
        let found = intermediates.iter().enumerate().find_map(|(i, der)| {
            if used[i] {
                return None;
            }
            let candidate = parse(der).ok()?;
            (candidate.tbs().subject() == issuer).then_some((i, candidate))
        });
        let Some((index, ca)) = found else {
            let tbs = child.tbs();
            return Err(if path.is_empty() && tbs.issuer() == tbs.subject() {
                CertError::SelfSigned {
                    subject: tbs.subject().to_string(),
                    expected: anchor.subject().to_string(),
                }
            } else {
                CertError::UnknownIssuer {
                    issuer: issuer.to_string(),
                    expected: anchor.subject().to_string(),
                }
            });
        };
        if path.len() == MAX_INTERMEDIATES {
            return Err(CertError::ChainTooLong {
                max: MAX_INTERMEDIATES,
            });
        }
        let key = check_intermediate(&ca, path.len(), anchor, now).map_err(|source| {
            CertError::Intermediate {
                subject: ca.tbs().subject().to_string(),
                source: Box::new(source),
            }
        })?;
        child.verify_signature(key.as_ref())?;
        used[index] = true;
        taken.push(index);
        path.push(ca);
    }
}

/// The checks on an intermediate CA certificate with `below` intermediate
/// CA certificates under it in the path; returns its public key.
fn check_intermediate(
    ca: &ParsedCert<'_>,
    below: usize,
    anchor: &TrustAnchor,
    now: SystemTime,
) -> Result<Arc<dyn RsaPublicKey>, CertError> {
    if !ca.is_ca() {
        return Err(CertError::NotCa);
    }
    if !ca
        .ext
        .key_usage
        .is_some_and(|ku| ku.0.contains(KeyUsages::KeyCertSign))
    {
        return Err(CertError::MissingKeyUsage {
            usage: "keyCertSign",
        });
    }
    if ca.ext.name_constraints {
        return Err(CertError::NameConstraints);
    }
    if let Some(path_len) = ca.path_len()
        && below > usize::from(path_len)
    {
        return Err(CertError::PathLength {
            subject: ca.tbs().subject().to_string(),
            path_len,
            below,
        });
    }
    let (not_before, not_after) = (ca.not_before(), ca.not_after());
    if now < not_before {
        return Err(CertError::NotYetValid { not_before, now });
    }
    if now > not_after {
        return Err(CertError::Expired { not_after, now });
    }
    ca.public_key(anchor.provider())
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use const_oid::ObjectIdentifier;
    use der::Encode;
    use der::asn1::OctetString;
    use x509_cert::ext::Extension;

    use super::*;
    use crate::pki::issue::make_name;
    use crate::pki::testutil::{
        fixture, future, past, self_signed_leaf, server_names, sign_with, spki_of,
    };
    use crate::pki::{CertificateAuthority, MAX_CERT_LEN, Validity};

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn dns(name: &str) -> ServerName {
        ServerName::Dns(name.to_owned())
    }

    fn ip(addr: &str) -> ServerName {
        ServerName::Ip(addr.parse().unwrap())
    }

    fn verify(
        der: &[u8],
        role: Role,
        name: Option<&ServerName>,
    ) -> Result<CertifiedPeer, CertError> {
        verify_peer(&fixture().anchor, der, role, name, now())
    }

    #[test]
    fn server_happy_path() {
        let f = fixture();
        for name in [
            None,
            Some(dns("localhost")),
            Some("LocalHost".parse().unwrap()),
            Some(ServerName::Dns("LOCALHOST".into())),
            Some(ip("127.0.0.1")),
        ] {
            let peer = verify(&f.server.cert_der, Role::Server, name.as_ref()).unwrap();
            assert_eq!(peer.name(), "localhost");
            assert_eq!(peer.role(), Role::Server);
            assert_eq!(peer.cert_der(), f.server.cert_der.as_slice());
            assert!(!peer.serial_hex().is_empty() && peer.serial_hex().len() <= 32);
            assert!(peer.not_after() > now());
            assert_eq!(peer.public_key().bits(), 2048);
        }
    }

    #[test]
    fn device_happy_path() {
        let f = fixture();
        let peer = verify(&f.device.cert_der, Role::Device, None).unwrap();
        assert_eq!(peer.name(), "device-1");
        assert_eq!(peer.role(), Role::Device);
        // The certified key is the device's key: a PSS signature verifies.
        let key = crate::pki::testutil::load_key(&f.device.key_pkcs8_der);
        let sig = key.pss_sign(b"hello").unwrap();
        peer.public_key().pss_verify(b"hello", &sig).unwrap();
        let debug = format!("{peer:?}");
        assert!(debug.contains("device-1"), "{debug}");
    }

    #[test]
    fn serials_differ_and_are_positive() {
        let f = fixture();
        let a = verify(&f.server.cert_der, Role::Server, None).unwrap();
        let b = verify(&f.device.cert_der, Role::Device, None).unwrap();
        assert_ne!(a.serial_hex(), b.serial_hex());
        for s in [a.serial_hex(), b.serial_hex()] {
            let first = u8::from_str_radix(&s[..2], 16).unwrap();
            assert!(first < 0x80, "serial {s} is negative");
        }
    }

    #[test]
    fn wrong_ca_with_same_name_fails_signature() {
        let f = fixture();
        let leaf = f
            .impostor_ca
            .issue_for_key(
                Role::Device,
                "device-1",
                &[],
                &spki_of(&f.device),
                Validity::days_from_now(1),
            )
            .unwrap();
        assert_eq!(
            verify(&leaf, Role::Device, None).unwrap_err(),
            CertError::BadSignature
        );
    }

    #[test]
    fn wrong_ca_with_other_name_is_unknown_issuer() {
        let f = fixture();
        // A differently named CA on the impostor's key.
        let mut spec = f.impostor_ca.leaf_spec_for_test(
            Role::Device,
            "x",
            &[],
            f.impostor_ca.trust_anchor().spki_der(),
            Validity::days_from_now(5),
        );
        let name = make_name(Some("evil"), "other CA").unwrap();
        spec.subject = name.clone();
        spec.issuer = name;
        spec.extensions = vec![
            crate::pki::issue::extension(
                true,
                &x509_cert::ext::pkix::BasicConstraints {
                    ca: true,
                    path_len_constraint: Some(0),
                },
                &spec.subject,
            )
            .unwrap(),
            crate::pki::issue::extension(
                true,
                &x509_cert::ext::pkix::KeyUsage(
                    x509_cert::ext::pkix::KeyUsages::KeyCertSign.into(),
                ),
                &spec.subject,
            )
            .unwrap(),
        ];
        let other_ca_der = sign_with(spec, f.impostor_ca.key_for_test());
        let other_ca = CertificateAuthority::from_der(
            other_ca_der,
            f.impostor_ca.key_pkcs8_der(),
            crate::pki::testutil::provider(),
        )
        .unwrap();
        let leaf = other_ca
            .issue_for_key(
                Role::Device,
                "device-1",
                &[],
                &spki_of(&f.device),
                Validity::days_from_now(1),
            )
            .unwrap();
        let err = verify(&leaf, Role::Device, None).unwrap_err();
        assert_eq!(
            err,
            CertError::UnknownIssuer {
                issuer: "CN=other CA,O=evil".into(),
                expected: "CN=secured CA,O=secured".into(),
            }
        );
        assert_eq!(
            err.to_string(),
            "certificate is signed by an unknown CA (issuer CN=other CA,O=evil, expected CN=secured CA,O=secured)"
        );
    }

    #[test]
    fn expired_and_not_yet_valid() {
        let f = fixture();
        let spki = spki_of(&f.device);
        let old =
            f.ca.issue_for_key(Role::Device, "device-1", &[], &spki, past())
                .unwrap();
        let err = verify(&old, Role::Device, None).unwrap_err();
        assert!(matches!(err, CertError::Expired { .. }), "{err}");
        assert!(
            err.to_string().starts_with("certificate expired at 20"),
            "{err}"
        );

        let young =
            f.ca.issue_for_key(Role::Device, "device-1", &[], &spki, future())
                .unwrap();
        let err = verify(&young, Role::Device, None).unwrap_err();
        assert!(matches!(err, CertError::NotYetValid { .. }), "{err}");

        // The young certificate verifies once its window has started (and
        // the CA's has not ended).
        let later = now() + Duration::from_secs(15 * 86_400);
        verify_peer(&f.anchor, &young, Role::Device, None, later).unwrap();
    }

    #[test]
    fn roles_are_not_interchangeable() {
        let f = fixture();
        assert_eq!(
            verify(&f.device.cert_der, Role::Server, None).unwrap_err(),
            CertError::WrongRole {
                expected: Role::Server
            }
        );
        let err = verify(&f.server.cert_der, Role::Device, None).unwrap_err();
        assert_eq!(
            err,
            CertError::WrongRole {
                expected: Role::Device
            }
        );
        assert_eq!(
            err.to_string(),
            "certificate is not a device certificate (its extended key usage lacks clientAuth)"
        );
        assert_eq!(
            verify(&f.server.cert_der, Role::Ca, None).unwrap_err(),
            CertError::CaRole
        );
    }

    #[test]
    fn wrong_server_name() {
        let f = fixture();
        let presented = vec!["DNS:localhost".to_owned(), "IP:127.0.0.1".to_owned()];
        for (wanted, expected) in [
            (dns("example.com"), "example.com"),
            (dns("localhost.example"), "localhost.example"),
            (ip("127.0.0.2"), "127.0.0.2"),
            (ip("::1"), "::1"),
            // An IP written as a DNS name never matches an IP SAN.
            (dns("127.0.0.1"), "127.0.0.1"),
        ] {
            let err = verify(&f.server.cert_der, Role::Server, Some(&wanted)).unwrap_err();
            assert_eq!(
                err,
                CertError::NameMismatch {
                    expected: expected.into(),
                    presented: presented.clone()
                }
            );
        }
    }

    #[test]
    fn common_name_is_not_used_for_matching() {
        let f = fixture();
        // CN=api.example, SAN only 10.0.0.1.
        let spec = f.ca.leaf_spec_for_test(
            Role::Server,
            "api.example",
            &[ip("10.0.0.1")],
            &spki_of(&f.server),
            Validity::days_from_now(1),
        );
        let der = f.ca.sign_for_test(spec);
        let err = verify(&der, Role::Server, Some(&dns("api.example"))).unwrap_err();
        assert!(matches!(err, CertError::NameMismatch { .. }), "{err}");
        verify(&der, Role::Server, Some(&ip("10.0.0.1"))).unwrap();
    }

    #[test]
    fn ca_certificate_as_leaf() {
        let f = fixture();
        for role in [Role::Server, Role::Device] {
            assert_eq!(
                verify(f.ca.cert_der(), role, None).unwrap_err(),
                CertError::IsCa
            );
        }
    }

    #[test]
    fn self_signed_leaf_is_refused() {
        let f = fixture();
        let der = self_signed_leaf(&f.device.key_pkcs8_der, "device-1", None);
        let err = verify(&der, Role::Device, None).unwrap_err();
        assert!(matches!(err, CertError::SelfSigned { .. }), "{err}");
        // Claiming the CA's name does not help: the signature is wrong.
        let der = self_signed_leaf(&f.device.key_pkcs8_der, "secured CA", Some("secured"));
        assert_eq!(
            verify(&der, Role::Device, None).unwrap_err(),
            CertError::BadSignature
        );
    }

    #[test]
    fn tampering_is_detected() {
        let f = fixture();
        let mut der = f.device.cert_der.clone();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert_eq!(
            verify(&der, Role::Device, None).unwrap_err(),
            CertError::BadSignature
        );

        // Change one letter of the subject name inside the TBS.
        let mut der = f.device.cert_der.clone();
        let pos = der.windows(8).position(|w| w == b"device-1").unwrap();
        der[pos] = b'D';
        assert_eq!(
            verify(&der, Role::Device, None).unwrap_err(),
            CertError::BadSignature
        );
    }

    #[test]
    fn trailing_garbage_and_size_limit() {
        let f = fixture();
        let mut der = f.device.cert_der.clone();
        der.push(0);
        assert_eq!(
            verify(&der, Role::Device, None).unwrap_err(),
            CertError::TrailingData
        );
        let big = vec![0x30; MAX_CERT_LEN + 1];
        assert_eq!(
            verify(&big, Role::Device, None).unwrap_err(),
            CertError::TooLarge {
                len: MAX_CERT_LEN + 1,
                max: MAX_CERT_LEN
            }
        );
        for junk in [&b""[..], b"\x30", b"hello", &f.device.cert_der[..100]] {
            let err = verify(junk, Role::Device, None).unwrap_err();
            assert!(matches!(err, CertError::Malformed { .. }), "{err}");
        }
    }

    #[test]
    fn algorithm_identifiers_must_be_pss_sha256() {
        let f = fixture();
        let alg = crate::crypto::x509::pss_sha256_algorithm_identifier()
            .unwrap()
            .to_der()
            .unwrap();
        let positions: Vec<usize> = f
            .device
            .cert_der
            .windows(alg.len())
            .enumerate()
            .filter(|(_, w)| *w == alg.as_slice())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(positions.len(), 2);
        // The last byte of the identifier is the salt length (32).
        for (pos, field) in [
            (positions[1], "signatureAlgorithm"),
            (positions[0], "tbsCertificate.signature"),
        ] {
            let mut der = f.device.cert_der.clone();
            der[pos + alg.len() - 1] = 20;
            assert_eq!(
                verify(&der, Role::Device, None).unwrap_err(),
                CertError::UnsupportedAlgorithm {
                    field,
                    oid: "1.2.840.113549.1.1.10".into()
                }
            );
        }
    }

    fn device_with(edit: impl FnOnce(&mut crate::pki::issue::CertSpec)) -> Vec<u8> {
        let f = fixture();
        let mut spec = f.ca.leaf_spec_for_test(
            Role::Device,
            "device-1",
            &[],
            &spki_of(&f.device),
            Validity::days_from_now(1),
        );
        edit(&mut spec);
        f.ca.sign_for_test(spec)
    }

    #[test]
    fn unknown_critical_extension() {
        let oid = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.1");
        let unknown = Extension {
            extn_id: oid,
            critical: true,
            extn_value: OctetString::new(vec![0x05, 0x00]).unwrap(),
        };
        let der = device_with(|spec| spec.extensions.push(unknown.clone()));
        assert_eq!(
            verify(&der, Role::Device, None).unwrap_err(),
            CertError::UnsupportedCriticalExtension {
                oid: "1.3.6.1.4.1.32473.1".into()
            }
        );
        // The same extension, not critical, is ignored.
        let der = device_with(|spec| {
            spec.extensions.push(Extension {
                critical: false,
                ..unknown.clone()
            })
        });
        verify(&der, Role::Device, None).unwrap();
    }

    #[test]
    fn duplicate_extension() {
        let der = device_with(|spec| {
            let first = spec.extensions[0].clone();
            spec.extensions.push(first);
        });
        let err = verify(&der, Role::Device, None).unwrap_err();
        assert!(matches!(err, CertError::DuplicateExtension { .. }), "{err}");
    }

    #[test]
    fn key_usage_is_required() {
        // extensions[1] is keyUsage.
        let der = device_with(|spec| {
            spec.extensions.remove(1);
        });
        assert_eq!(
            verify(&der, Role::Device, None).unwrap_err(),
            CertError::MissingKeyUsage {
                usage: "digitalSignature"
            }
        );
        // extensions[2] is extendedKeyUsage.
        let der = device_with(|spec| {
            spec.extensions.remove(2);
        });
        assert_eq!(
            verify(&der, Role::Device, None).unwrap_err(),
            CertError::WrongRole {
                expected: Role::Device
            }
        );
    }

    #[test]
    fn device_common_name_must_be_a_device_name() {
        for bad in ["../etc", ".hidden", "a b"] {
            let der = device_with(|spec| spec.subject = make_name(None, bad).unwrap());
            let err = verify(&der, Role::Device, None).unwrap_err();
            assert!(
                matches!(err, CertError::InvalidDeviceName { ref name, .. } if name == bad),
                "{err}"
            );
        }
        let der = device_with(|spec| spec.subject = make_name(Some("secured"), "x").unwrap());
        verify(&der, Role::Device, None).unwrap();
    }

    #[test]
    fn expired_anchor() {
        let f = fixture();
        // A CA certificate on the impostor key whose validity ended.
        let mut spec = f.impostor_ca.leaf_spec_for_test(
            Role::Device,
            "x",
            &[],
            f.impostor_ca.trust_anchor().spki_der(),
            past(),
        );
        let name = make_name(Some("secured"), "old CA").unwrap();
        spec.subject = name.clone();
        spec.issuer = name;
        spec.extensions = vec![
            crate::pki::issue::extension(
                true,
                &x509_cert::ext::pkix::BasicConstraints {
                    ca: true,
                    path_len_constraint: Some(0),
                },
                &spec.subject,
            )
            .unwrap(),
            crate::pki::issue::extension(
                true,
                &x509_cert::ext::pkix::KeyUsage(
                    x509_cert::ext::pkix::KeyUsages::KeyCertSign.into(),
                ),
                &spec.subject,
            )
            .unwrap(),
        ];
        let old_ca = CertificateAuthority::from_der(
            sign_with(spec, f.impostor_ca.key_for_test()),
            f.impostor_ca.key_pkcs8_der(),
            crate::pki::testutil::provider(),
        )
        .unwrap();
        // Loading an expired anchor works; verifying against it does not.
        let anchor =
            TrustAnchor::from_der(old_ca.cert_der(), crate::pki::testutil::provider()).unwrap();
        let leaf = old_ca
            .issue_for_key(
                Role::Device,
                "device-1",
                &[],
                &spki_of(&f.device),
                Validity::days_from_now(1),
            )
            .unwrap();
        let err = verify_peer(&anchor, &leaf, Role::Device, None, now()).unwrap_err();
        assert!(matches!(err, CertError::AnchorExpired { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("the trusted CA certificate expired at")
        );
    }

    #[test]
    fn server_names_fixture_matches() {
        assert_eq!(server_names().len(), 2);
    }
}
