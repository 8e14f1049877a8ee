//! Enrollment tokens: the key the server keeps and the proof a device
//! sends (proto-spec.md §14.1, §14.3). The token's secret itself never
//! travels: the device proves it with an HMAC bound to the handshake.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::hash::{HASH_LEN, sha256};

/// Length of a token's secret.
pub const TOKEN_SECRET_LEN: usize = 32;
/// Context of the token key derivation.
pub const TOKEN_KEY_CONTEXT: &[u8] = b"secured/3 token key\0";
/// Context of the enrollment proof.
pub const ENROLL_PROOF_CONTEXT: &[u8] = b"secured/3 enroll proof\0";

/// `K = SHA-256("secured/3 token key\0" ‖ secret)`: the only form of the
/// token the server stores, and the key of the device's proof.
#[must_use]
pub fn token_key(secret: &[u8; TOKEN_SECRET_LEN]) -> Zeroizing<[u8; HASH_LEN]> {
    Zeroizing::new(sha256(&[TOKEN_KEY_CONTEXT, secret]))
}

/// `HMAC-SHA256(K, "secured/3 enroll proof\0" ‖ th ‖ SHA-256(request))`:
/// what a device sends in `ENRQ`. It binds the token to this handshake
/// (both nonces, both `HELO`s, the wrapped pre-master) and to the request
/// whose key the device proved, so it is worth nothing in another session
/// or for another key.
#[must_use]
pub fn enroll_proof(
    key: &[u8; HASH_LEN],
    transcript_hash: &[u8; HASH_LEN],
    request_der: &[u8],
) -> [u8; HASH_LEN] {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(ENROLL_PROOF_CONTEXT);
    mac.update(transcript_hash);
    mac.update(&sha256(&[request_der]));
    mac.finalize().into_bytes().into()
}

/// Checks a proof in constant time.
#[must_use]
pub fn verify_enroll_proof(
    key: &[u8; HASH_LEN],
    transcript_hash: &[u8; HASH_LEN],
    request_der: &[u8],
    proof: &[u8; HASH_LEN],
) -> bool {
    bool::from(enroll_proof(key, transcript_hash, request_der).ct_eq(proof))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_binds_key_transcript_and_request() {
        let key = token_key(&[7; 32]);
        let th = [1; 32];
        let proof = enroll_proof(&key, &th, b"request");
        assert!(verify_enroll_proof(&key, &th, b"request", &proof));
        assert!(!verify_enroll_proof(&key, &[2; 32], b"request", &proof));
        assert!(!verify_enroll_proof(&key, &th, b"other", &proof));
        assert!(!verify_enroll_proof(
            &token_key(&[8; 32]),
            &th,
            b"request",
            &proof
        ));
    }
}
