//! A test PKI built once per test binary: RSA key generation is slow.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use super::issue::{CertSpec, build_cert, make_name};
use super::{CertificateAuthority, IssuedLeaf, Role, ServerName, TrustAnchor, Validity};
use crate::crypto::{
    CryptoError, CryptoProvider, RsaBackend, RsaPrivateKey, RsaPublicKey, SystemRandom,
    default_provider,
};

/// Key size used in tests.
pub(crate) const TEST_BITS: usize = 2048;

pub(crate) struct Fixture {
    pub(crate) ca: CertificateAuthority,
    pub(crate) anchor: TrustAnchor,
    /// CN=localhost, SANs localhost and 127.0.0.1.
    pub(crate) server: IssuedLeaf,
    /// CN=device-1.
    pub(crate) device: IssuedLeaf,
    /// Another CA with the same subject name as `ca` but a different key.
    pub(crate) impostor_ca: CertificateAuthority,
}

pub(crate) fn provider() -> &'static CryptoProvider {
    default_provider()
}

pub(crate) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let p = provider();
        let ca =
            CertificateAuthority::generate("secured CA", TEST_BITS, Validity::days_from_now(30), p)
                .unwrap();
        let server = ca
            .issue(
                Role::Server,
                "localhost",
                &server_names(),
                TEST_BITS,
                Validity::days_from_now(10),
            )
            .unwrap();
        let device = ca
            .issue(
                Role::Device,
                "device-1",
                &[],
                TEST_BITS,
                Validity::days_from_now(10),
            )
            .unwrap();
        let impostor_ca =
            CertificateAuthority::generate("secured CA", TEST_BITS, Validity::days_from_now(30), p)
                .unwrap();
        Fixture {
            anchor: ca.trust_anchor().clone(),
            ca,
            server,
            device,
            impostor_ca,
        }
    })
}

pub(crate) fn server_names() -> Vec<ServerName> {
    vec!["localhost".parse().unwrap(), "127.0.0.1".parse().unwrap()]
}

pub(crate) fn load_key(pkcs8: &[u8]) -> Arc<dyn RsaPrivateKey> {
    provider().rsa.load_private_key(pkcs8).unwrap()
}

pub(crate) fn spki_of(leaf: &IssuedLeaf) -> Vec<u8> {
    load_key(&leaf.key_pkcs8_der).public_key_spki_der().to_vec()
}

/// A validity window entirely in the past.
pub(crate) fn past() -> Validity {
    let now = SystemTime::now();
    Validity {
        not_before: now - Duration::from_secs(20 * 86_400),
        not_after: now - Duration::from_secs(10 * 86_400),
    }
}

/// A validity window entirely in the future.
pub(crate) fn future() -> Validity {
    let now = SystemTime::now();
    Validity {
        not_before: now + Duration::from_secs(10 * 86_400),
        not_after: now + Duration::from_secs(20 * 86_400),
    }
}

/// A certificate signed by `key` with `issuer == subject`, using the leaf
/// profile otherwise (a self-signed "device" certificate).
pub(crate) fn self_signed_leaf(key_pkcs8: &[u8], subject_cn: &str, org: Option<&str>) -> Vec<u8> {
    let f = fixture();
    let key = load_key(key_pkcs8);
    let mut spec = f.ca.leaf_spec_for_test(
        Role::Device,
        "device-1",
        &[],
        key.public_key_spki_der(),
        Validity::days_from_now(5),
    );
    let name = make_name(org, subject_cn).unwrap();
    spec.subject = name.clone();
    spec.issuer = name;
    build_cert(spec, &key, provider(), "self-signed").unwrap()
}

/// Re-signs a spec with `key` (any key) as a CA certificate would be.
pub(crate) fn sign_with(spec: CertSpec, key: &Arc<dyn RsaPrivateKey>) -> Vec<u8> {
    build_cert(spec, key, provider(), "test").unwrap()
}

/// An RSA backend that refuses to generate keys, to prove that requests
/// are validated (and existing files detected) before any key is made.
pub(crate) struct NoKeygen;

impl RsaBackend for NoKeygen {
    fn generate_pkcs8(&self, _bits: usize) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        panic!("key generation must not be reached");
    }

    fn load_private_key(&self, pkcs8_der: &[u8]) -> Result<Arc<dyn RsaPrivateKey>, CryptoError> {
        provider().rsa.load_private_key(pkcs8_der)
    }

    fn load_public_key(&self, spki_der: &[u8]) -> Result<Arc<dyn RsaPublicKey>, CryptoError> {
        provider().rsa.load_public_key(spki_der)
    }
}

pub(crate) static NO_KEYGEN: CryptoProvider = CryptoProvider {
    name: "no-keygen",
    rsa: &NoKeygen,
    random: &SystemRandom,
};
