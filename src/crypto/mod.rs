//! The crypto seam: the only module that names primitive crates.
//!
//! Everything above this module (handshake, record layer, PKI) asks a
//! [`CryptoProvider`] for RSA operations and uses the key schedule and record
//! cipher defined here. The model is rustls' `CryptoProvider`: a build picks a
//! backend, and the protocol code does not change.
//!
//! * [`RsaBackend`] loads and generates RSA keys and performs OAEP-SHA256 and
//!   PSS-SHA256 operations. The private-key operations set the handshake rate,
//!   so this is where a faster backend plugs in.
//! * [`kdf`] is the HKDF-SHA256 key schedule (proto-spec.md §6).
//! * [`cipher`] is AES-256-CBC + HMAC-SHA256 encrypt-then-MAC for one
//!   direction of the record layer (proto-spec.md §7).
//! * [`hash`] is SHA-256: the handshake transcript and streamed file content.
//!
//! Secrets live in types that zeroize on drop and whose `Debug` prints nothing.

#[cfg(feature = "aws-lc")]
mod awslc;
pub mod cipher;
pub mod hash;
pub mod kdf;
mod rustcrypto;
pub mod token;

pub mod x509;

use std::fmt;
use std::sync::Arc;

use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

#[cfg(feature = "aws-lc")]
pub use awslc::AWS_LC;
pub use rustcrypto::RUSTCRYPTO;

/// Length of the pre-master secret in bytes (proto-spec.md §5.3).
pub const PREMASTER_LEN: usize = 32;
/// Smallest RSA modulus accepted anywhere, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted from a peer, in bits; bounds the cost of a
/// hostile certificate's public-key operations.
pub const MAX_RSA_BITS: usize = 4096;

/// Refuses RSA moduli outside [`MIN_RSA_BITS`]`..=`[`MAX_RSA_BITS`]; every
/// backend applies it to every key it loads.
fn check_bits(bits: usize) -> Result<(), CryptoError> {
    if (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(CryptoError::KeySize { bits })
    }
}

/// A set of cryptographic backends chosen together.
pub struct CryptoProvider {
    /// A short name for logs and benchmark output.
    pub name: &'static str,
    /// RSA key handling, OAEP and PSS.
    pub rsa: &'static dyn RsaBackend,
    /// The source of randomness for nonces, pre-master secrets and implicit
    /// rejection.
    pub random: &'static dyn SecureRandom,
}

impl fmt::Debug for CryptoProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoProvider")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The provider used when none is chosen explicitly: aws-lc when it is
/// compiled in (the `aws-lc` feature, on by default), RustCrypto otherwise.
#[must_use]
pub fn default_provider() -> &'static CryptoProvider {
    #[cfg(feature = "aws-lc")]
    {
        &AWS_LC
    }
    #[cfg(not(feature = "aws-lc"))]
    {
        &RUSTCRYPTO
    }
}

/// Every provider compiled into this build.
#[must_use]
pub fn providers() -> &'static [&'static CryptoProvider] {
    static PROVIDERS: &[&CryptoProvider] = &[
        &RUSTCRYPTO,
        #[cfg(feature = "aws-lc")]
        &AWS_LC,
    ];
    PROVIDERS
}

/// The provider called `name` (`rustcrypto` or `aws-lc`), if compiled in.
#[must_use]
pub fn provider_by_name(name: &str) -> Option<&'static CryptoProvider> {
    providers().iter().copied().find(|p| p.name == name)
}

/// Errors from cryptographic operations. They name the operation and nothing
/// more, so that they can be shown to a peer without helping an attacker.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// The bytes do not encode an RSA key of the expected kind.
    #[error("not a valid RSA key")]
    InvalidKey,
    /// The RSA key is outside the accepted sizes.
    #[error(
        "RSA key of {bits} bits is outside the accepted range ({MIN_RSA_BITS}..={MAX_RSA_BITS} bits)"
    )]
    KeySize {
        /// Modulus size of the rejected key.
        bits: usize,
    },
    /// A signature did not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// RSA-OAEP encryption failed.
    #[error("RSA-OAEP encryption failed")]
    Encrypt,
    /// RSA-PSS signing failed.
    #[error("RSA-PSS signing failed")]
    Sign,
    /// Key generation failed.
    #[error("RSA key generation failed")]
    KeyGeneration,
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// A source of cryptographically secure random bytes.
pub trait SecureRandom: Send + Sync {
    /// Fills `dest` with random bytes.
    ///
    /// # Errors
    /// [`CryptoError::Random`] when the source fails.
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError>;
}

/// The operating system's random number generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRandom;

impl SecureRandom for SystemRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        getrandom::fill(dest).map_err(|_| CryptoError::Random)
    }
}

/// RSA key loading, generation and the two schemes the protocol uses:
/// RSAES-OAEP with SHA-256 (MGF1-SHA256, empty label) and RSASSA-PSS with
/// SHA-256 (MGF1-SHA256, 32-byte salt).
pub trait RsaBackend: Send + Sync {
    /// Generates a private key of `bits` bits with e = 65537 and returns it
    /// as PKCS#8 DER.
    ///
    /// # Errors
    /// [`CryptoError::KeySize`] below [`MIN_RSA_BITS`], or
    /// [`CryptoError::KeyGeneration`].
    fn generate_pkcs8(&self, bits: usize) -> Result<Zeroizing<Vec<u8>>, CryptoError>;

    /// Loads a PKCS#8 DER private key.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] or [`CryptoError::KeySize`].
    fn load_private_key(&self, pkcs8_der: &[u8]) -> Result<Arc<dyn RsaPrivateKey>, CryptoError>;

    /// Loads a public key from a DER SubjectPublicKeyInfo.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] or [`CryptoError::KeySize`].
    fn load_public_key(&self, spki_der: &[u8]) -> Result<Arc<dyn RsaPublicKey>, CryptoError>;
}

/// An RSA private key held by a backend.
pub trait RsaPrivateKey: Send + Sync {
    /// The matching public key as DER SubjectPublicKeyInfo, for comparison
    /// with a certificate.
    fn public_key_spki_der(&self) -> &[u8];

    /// The matching public key.
    fn public_key(&self) -> Arc<dyn RsaPublicKey>;

    /// Decrypts an RSAES-OAEP-SHA256 ciphertext. Every failure (bad length,
    /// bad padding, out-of-range value) is the same `None`; callers must not
    /// branch on it where a peer can observe them: see [`unwrap_premaster`].
    fn oaep_decrypt(&self, ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>>;

    /// Signs `message` with RSASSA-PSS-SHA256 (32-byte random salt).
    ///
    /// # Errors
    /// [`CryptoError::Sign`].
    fn pss_sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError>;

    /// Signs a SHA-256 digest computed by the caller with RSASSA-PSS: the
    /// digest is used as `mHash` of EMSA-PSS (RFC 8017 §9.1.1 step 2), for
    /// data that was hashed as it streamed.
    ///
    /// # Errors
    /// [`CryptoError::Sign`].
    fn pss_sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, CryptoError>;
}

/// An RSA public key held by a backend.
pub trait RsaPublicKey: Send + Sync {
    /// Modulus size in bits.
    fn bits(&self) -> usize;

    /// Encrypts `plaintext` with RSAES-OAEP-SHA256.
    ///
    /// # Errors
    /// [`CryptoError::Encrypt`].
    fn oaep_encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError>;

    /// Verifies an RSASSA-PSS-SHA256 signature over `message` (32-byte salt).
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`].
    fn pss_verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError>;

    /// Verifies an RSASSA-PSS-SHA256 signature over a SHA-256 digest (the
    /// counterpart of [`RsaPrivateKey::pss_sign_digest`]).
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`].
    fn pss_verify_digest(&self, digest: &[u8; 32], signature: &[u8]) -> Result<(), CryptoError>;
}

/// The 32-byte pre-master secret (proto-spec.md §5.3).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PreMaster([u8; PREMASTER_LEN]);

impl PreMaster {
    /// Wraps fixed bytes (test vectors).
    #[must_use]
    pub fn from_bytes(bytes: [u8; PREMASTER_LEN]) -> Self {
        Self(bytes)
    }

    /// Draws a fresh pre-master secret.
    ///
    /// # Errors
    /// [`CryptoError::Random`].
    pub fn random(random: &dyn SecureRandom) -> Result<Self, CryptoError> {
        let mut bytes = [0u8; PREMASTER_LEN];
        random.fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The secret bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; PREMASTER_LEN] {
        &self.0
    }
}

impl fmt::Debug for PreMaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PreMaster(<redacted>)")
    }
}

/// Decrypts the wrapped pre-master with implicit rejection
/// (proto-spec.md §5.3): the result is the decrypted secret when it is valid
/// and exactly [`PREMASTER_LEN`] bytes long, and otherwise `fallback`, a
/// secret the caller drew at random before decrypting. The choice is made
/// with constant-time selection, so a bad ciphertext changes nothing a peer
/// can see until the Finished check fails, exactly as a wrong guess would.
#[must_use]
pub fn unwrap_premaster(
    key: &dyn RsaPrivateKey,
    ciphertext: &[u8],
    fallback: PreMaster,
) -> PreMaster {
    let decrypted = key.oaep_decrypt(ciphertext);
    let mut candidate = [0u8; PREMASTER_LEN];
    let mut valid = subtle::Choice::from(0);
    if let Some(plain) = decrypted.as_deref() {
        let n = plain.len().min(PREMASTER_LEN);
        candidate[..n].copy_from_slice(&plain[..n]);
        valid = (plain.len() as u64).ct_eq(&(PREMASTER_LEN as u64));
    }
    let mut out = fallback;
    for (o, c) in out.0.iter_mut().zip(candidate.iter()) {
        *o = u8::conditional_select(o, c, valid);
    }
    candidate.zeroize();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed-output random source for deterministic tests.
    struct Fixed(u8);
    impl SecureRandom for Fixed {
        fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
            dest.fill(self.0);
            Ok(())
        }
    }

    /// Every pair of backends interoperates: OAEP both ways, PSS both ways,
    /// over messages and digests, with implicit rejection on bad input.
    #[test]
    fn backends_interoperate() {
        let pki = crate::testkit::pki();
        for a in providers() {
            for b in providers() {
                let key_a = a.rsa.load_private_key(&pki.device.key_der).unwrap();
                let pub_b = b.rsa.load_public_key(key_a.public_key_spki_der()).unwrap();
                assert_eq!(pub_b.bits(), 2048);

                let ct = pub_b.oaep_encrypt(&[9u8; 32]).unwrap();
                assert_eq!(key_a.oaep_decrypt(&ct).unwrap().as_slice(), &[9u8; 32]);
                let fallback = PreMaster::from_bytes([1; 32]);
                let pm = unwrap_premaster(key_a.as_ref(), &ct, fallback.clone());
                assert_eq!(pm.as_bytes(), &[9u8; 32], "{} -> {}", b.name, a.name);
                let mut bad = ct.clone();
                bad[10] ^= 1;
                assert!(key_a.oaep_decrypt(&bad).is_none());
                let pm = unwrap_premaster(key_a.as_ref(), &bad, fallback.clone());
                assert_eq!(pm.as_bytes(), fallback.as_bytes());
                let short = pub_b.oaep_encrypt(&[9u8; 31]).unwrap();
                let pm = unwrap_premaster(key_a.as_ref(), &short, fallback.clone());
                assert_eq!(
                    pm.as_bytes(),
                    fallback.as_bytes(),
                    "wrong length is rejected"
                );

                let sig = key_a.pss_sign(b"message").unwrap();
                pub_b.pss_verify(b"message", &sig).unwrap();
                assert!(pub_b.pss_verify(b"massage", &sig).is_err());
                let digest = [7u8; 32];
                let sig = key_a.pss_sign_digest(&digest).unwrap();
                pub_b.pss_verify_digest(&digest, &sig).unwrap();
                assert!(pub_b.pss_verify_digest(&[8u8; 32], &sig).is_err());
                // A digest signature is the signature of the message with that SHA-256.
                let msg_digest = hash::sha256(&[b"message"]);
                let sig = key_a.pss_sign_digest(&msg_digest).unwrap();
                pub_b.pss_verify(b"message", &sig).unwrap();
            }
        }
    }

    #[test]
    fn keys_from_one_backend_load_in_the_other() {
        for gen_with in providers() {
            let der = gen_with.rsa.generate_pkcs8(2048).unwrap();
            for load_with in providers() {
                let key = load_with.rsa.load_private_key(&der).unwrap();
                assert!(!key.public_key_spki_der().is_empty());
            }
        }
        assert!(RUSTCRYPTO.rsa.generate_pkcs8(1024).is_err());
    }

    #[test]
    fn providers_are_found_by_name() {
        assert_eq!(
            provider_by_name("rustcrypto").map(|p| p.name),
            Some("rustcrypto")
        );
        assert!(provider_by_name("nope").is_none());
        assert!(
            providers()
                .iter()
                .any(|p| p.name == default_provider().name)
        );
    }

    #[test]
    fn premaster_debug_is_redacted() {
        let pm = PreMaster::random(&Fixed(7)).unwrap();
        assert_eq!(format!("{pm:?}"), "PreMaster(<redacted>)");
    }
}
