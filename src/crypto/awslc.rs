//! The aws-lc-rs backend: RSA from AWS-LC, the constant-time library behind
//! rustls' default provider. Its private-key operations are about four
//! times faster than the pure-Rust backend's (`cargo bench --bench
//! handshake`), and they set the handshake rate. Symmetric record protection stays on
//! the RustCrypto primitives in [`super::cipher`], which run at hardware
//! speed with AES-NI and SHA-NI either way.

use std::sync::Arc;

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom as AwsRandom;
use aws_lc_rs::rsa::{
    KeyPair, KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::signature::{
    KeyPair as _, RSA_PSS_2048_8192_SHA256, RSA_PSS_SHA256, UnparsedPublicKey,
};
use zeroize::Zeroizing;

use super::{
    CryptoError, CryptoProvider, RsaBackend, RsaPrivateKey, RsaPublicKey, SystemRandom, check_bits,
};

/// The aws-lc-rs provider: AWS-LC RSA and the system RNG.
pub static AWS_LC: CryptoProvider = CryptoProvider {
    name: "aws-lc",
    rsa: &AwsLcRsa,
    random: &SystemRandom,
};

struct AwsLcRsa;

impl RsaBackend for AwsLcRsa {
    fn generate_pkcs8(&self, bits: usize) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            _ => return Err(CryptoError::KeySize { bits }),
        };
        let pair = KeyPair::generate(size).map_err(|_| CryptoError::KeyGeneration)?;
        let der: Pkcs8V1Der<'_> = pair.as_der().map_err(|_| CryptoError::KeyGeneration)?;
        Ok(Zeroizing::new(der.as_ref().to_vec()))
    }

    fn load_private_key(&self, pkcs8_der: &[u8]) -> Result<Arc<dyn RsaPrivateKey>, CryptoError> {
        let signing = KeyPair::from_pkcs8(pkcs8_der).map_err(|_| CryptoError::InvalidKey)?;
        let decrypting =
            PrivateDecryptingKey::from_pkcs8(pkcs8_der).map_err(|_| CryptoError::InvalidKey)?;
        check_bits(decrypting.key_size_bits())?;
        let spki: PublicKeyX509Der<'_> = signing
            .public_key()
            .as_der()
            .map_err(|_| CryptoError::InvalidKey)?;
        let spki = spki.as_ref().to_vec();
        let public = Arc::new(load_public(&spki)?);
        let decrypting =
            OaepPrivateDecryptingKey::new(decrypting).map_err(|_| CryptoError::InvalidKey)?;
        Ok(Arc::new(PrivateKey {
            signing,
            decrypting,
            spki,
            public,
        }))
    }

    fn load_public_key(&self, spki_der: &[u8]) -> Result<Arc<dyn RsaPublicKey>, CryptoError> {
        Ok(Arc::new(load_public(spki_der)?))
    }
}

fn load_public(spki_der: &[u8]) -> Result<PublicKey, CryptoError> {
    let key = PublicEncryptingKey::from_der(spki_der).map_err(|_| CryptoError::InvalidKey)?;
    let bits = key.key_size_bits();
    check_bits(bits)?;
    let encrypting = OaepPublicEncryptingKey::new(key).map_err(|_| CryptoError::InvalidKey)?;
    Ok(PublicKey {
        encrypting,
        spki: spki_der.to_vec(),
        bits,
    })
}

struct PrivateKey {
    signing: KeyPair,
    decrypting: OaepPrivateDecryptingKey,
    spki: Vec<u8>,
    public: Arc<PublicKey>,
}

impl RsaPrivateKey for PrivateKey {
    fn public_key_spki_der(&self) -> &[u8] {
        &self.spki
    }

    fn public_key(&self) -> Arc<dyn RsaPublicKey> {
        self.public.clone()
    }

    fn oaep_decrypt(&self, ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(vec![0u8; self.decrypting.min_output_size()]);
        let n = self
            .decrypting
            .decrypt(&OAEP_SHA256_MGF1SHA256, ciphertext, &mut out, None)
            .ok()?
            .len();
        out.truncate(n);
        Some(out)
    }

    fn pss_sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut sig = vec![0u8; self.signing.public_modulus_len()];
        self.signing
            .sign(&RSA_PSS_SHA256, &AwsRandom::new(), message, &mut sig)
            .map_err(|_| CryptoError::Sign)?;
        Ok(sig)
    }

    fn pss_sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, CryptoError> {
        let digest = import_digest(digest).map_err(|_| CryptoError::Sign)?;
        let mut sig = vec![0u8; self.signing.public_modulus_len()];
        self.signing
            .sign_digest(&RSA_PSS_SHA256, &digest, &mut sig)
            .map_err(|_| CryptoError::Sign)?;
        Ok(sig)
    }
}

fn import_digest(digest: &[u8; 32]) -> Result<Digest, aws_lc_rs::error::Unspecified> {
    Digest::import_less_safe(digest, &digest::SHA256)
}

struct PublicKey {
    encrypting: OaepPublicEncryptingKey,
    spki: Vec<u8>,
    bits: usize,
}

impl RsaPublicKey for PublicKey {
    fn bits(&self) -> usize {
        self.bits
    }

    fn oaep_encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = vec![0u8; self.encrypting.ciphertext_size()];
        let n = self
            .encrypting
            .encrypt(&OAEP_SHA256_MGF1SHA256, plaintext, &mut out, None)
            .map_err(|_| CryptoError::Encrypt)?
            .len();
        out.truncate(n);
        Ok(out)
    }

    fn pss_verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, &self.spki)
            .verify(message, signature)
            .map_err(|_| CryptoError::BadSignature)
    }

    fn pss_verify_digest(&self, digest: &[u8; 32], signature: &[u8]) -> Result<(), CryptoError> {
        let digest = import_digest(digest).map_err(|_| CryptoError::BadSignature)?;
        UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, &self.spki)
            .verify_digest(&digest, signature)
            .map_err(|_| CryptoError::BadSignature)
    }
}
