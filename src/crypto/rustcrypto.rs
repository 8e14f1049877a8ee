//! The RustCrypto backend: `rsa` 0.10 on constant-time `crypto-bigint`.
//!
//! The server decrypts attacker-chosen RSA ciphertexts on every handshake,
//! the setting of the Marvin timing attack (RUSTSEC-2023-0071). The 0.10 line
//! of `rsa` replaced the variable-time big integers that advisory is about
//! with `crypto-bigint`'s constant-time arithmetic, and blinds every private
//! operation; proto-spec.md §5.3 adds implicit rejection on top.

use std::sync::Arc;

use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::sha2::Sha256;
use rsa::traits::PublicKeyParts;
use zeroize::Zeroizing;

use super::{
    CryptoError, CryptoProvider, RsaBackend, RsaPrivateKey, RsaPublicKey, SystemRandom, check_bits,
};

/// The pure-Rust provider: RustCrypto RSA and the system RNG.
pub static RUSTCRYPTO: CryptoProvider = CryptoProvider {
    name: "rustcrypto",
    rsa: &RustCryptoRsa,
    random: &SystemRandom,
};

/// [`RsaBackend`] over the `rsa` crate.
#[derive(Debug)]
struct RustCryptoRsa;

impl RsaBackend for RustCryptoRsa {
    fn generate_pkcs8(&self, bits: usize) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        check_bits(bits)?;
        let mut rng = getrandom::SysRng;
        let key = rsa::PrivateKey::new(&mut rng, bits).map_err(|_| CryptoError::KeyGeneration)?;
        let doc = key.to_pkcs8_der().map_err(|_| CryptoError::KeyGeneration)?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    fn load_private_key(&self, pkcs8_der: &[u8]) -> Result<Arc<dyn RsaPrivateKey>, CryptoError> {
        let key =
            rsa::PrivateKey::from_pkcs8_der(pkcs8_der).map_err(|_| CryptoError::InvalidKey)?;
        check_bits(key.n().bit_width() as usize)?;
        let public = key.to_public_key();
        let spki = public
            .to_public_key_der()
            .map_err(|_| CryptoError::InvalidKey)?
            .into_vec();
        Ok(Arc::new(PrivateKey {
            key,
            public: Arc::new(PublicKey(public)),
            spki,
        }))
    }

    fn load_public_key(&self, spki_der: &[u8]) -> Result<Arc<dyn RsaPublicKey>, CryptoError> {
        let key =
            rsa::PublicKey::from_public_key_der(spki_der).map_err(|_| CryptoError::InvalidKey)?;
        check_bits(key.n().bit_width() as usize)?;
        Ok(Arc::new(PublicKey(key)))
    }
}

struct PrivateKey {
    key: rsa::PrivateKey,
    public: Arc<PublicKey>,
    spki: Vec<u8>,
}

impl RsaPrivateKey for PrivateKey {
    fn public_key_spki_der(&self) -> &[u8] {
        &self.spki
    }

    fn public_key(&self) -> Arc<dyn RsaPublicKey> {
        self.public.clone()
    }

    fn oaep_decrypt(&self, ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        // Blinded with the system RNG (the crate's default).
        self.key
            .oaep_decrypt::<Sha256>(ciphertext)
            .ok()
            .map(Zeroizing::new)
    }

    fn pss_sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.key
            .pss_sign::<Sha256>(message)
            .map_err(|_| CryptoError::Sign)
    }

    fn pss_sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, CryptoError> {
        self.key
            .pss_sign_prehash::<Sha256>(digest)
            .map_err(|_| CryptoError::Sign)
    }
}

struct PublicKey(rsa::PublicKey);

impl RsaPublicKey for PublicKey {
    fn bits(&self) -> usize {
        self.0.n().bit_width() as usize
    }

    fn oaep_encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.0
            .oaep_encrypt::<Sha256>(plaintext)
            .map_err(|_| CryptoError::Encrypt)
    }

    fn pss_verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        self.0
            .pss_verify::<Sha256>(message, signature)
            .map_err(|_| CryptoError::BadSignature)
    }

    fn pss_verify_digest(&self, digest: &[u8; 32], signature: &[u8]) -> Result<(), CryptoError> {
        self.0
            .pss_verify_prehash::<Sha256>(digest, signature)
            .map_err(|_| CryptoError::BadSignature)
    }
}
