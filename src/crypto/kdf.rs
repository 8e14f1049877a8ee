//! The key schedule (proto-spec.md §6): HKDF-SHA256 from the pre-master
//! secret, both nonces and the handshake transcript to the record keys of
//! both directions and the two Finished keys.
//!
//! ```text
//! PRK = HKDF-Extract(salt = nonce_d ‖ nonce_s, IKM = pre_master)
//! OKM = HKDF-Expand(PRK, info = "secured/1 key block" ‖ transcript_hash, L = 256)
//! OKM = d2s.enc ‖ d2s.mac ‖ d2s.iv ‖ s2d.enc ‖ s2d.mac ‖ s2d.iv ‖ d2s.fin ‖ s2d.fin   (32 bytes each)
//! ```

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::PreMaster;
use super::hash::HASH_LEN;

/// Length of each handshake nonce in bytes.
pub const NONCE_LEN: usize = 32;
/// Length of every derived key in bytes.
pub const KEY_LEN: usize = 32;
/// The HKDF-Expand info label; the transcript hash follows it.
pub const KEY_BLOCK_LABEL: &[u8] = b"secured/1 key block";
/// Total key-block length: eight 32-byte keys.
pub const KEY_BLOCK_LEN: usize = 8 * KEY_LEN;

/// The keys that protect one direction of the record layer.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DirectionKeys {
    /// AES-256-CBC key.
    pub enc: [u8; KEY_LEN],
    /// HMAC-SHA256 key.
    pub mac: [u8; KEY_LEN],
    /// AES-256 key that turns sequence numbers into IVs.
    pub iv: [u8; KEY_LEN],
}

impl fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DirectionKeys(<redacted>)")
    }
}

/// Everything the key schedule produces.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    /// Device → server record keys.
    pub device_to_server: DirectionKeys,
    /// Server → device record keys.
    pub server_to_device: DirectionKeys,
    /// Key of the device's Finished MAC.
    pub device_finished: [u8; KEY_LEN],
    /// Key of the server's Finished MAC.
    pub server_finished: [u8; KEY_LEN],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}

/// HKDF-Extract: the pseudorandom key of a session.
#[must_use]
pub fn extract(
    pre_master: &PreMaster,
    nonce_device: &[u8; NONCE_LEN],
    nonce_server: &[u8; NONCE_LEN],
) -> Zeroizing<[u8; KEY_LEN]> {
    let mut salt = [0u8; 2 * NONCE_LEN];
    salt[..NONCE_LEN].copy_from_slice(nonce_device);
    salt[NONCE_LEN..].copy_from_slice(nonce_server);
    let (prk, _) = Hkdf::<Sha256>::extract(Some(&salt), pre_master.as_bytes());
    Zeroizing::new(prk.into())
}

/// HKDF-Expand of the key block, split into keys.
#[must_use]
pub fn expand(prk: &[u8; KEY_LEN], transcript_hash: &[u8; HASH_LEN]) -> SessionKeys {
    let mut okm = Zeroizing::new([0u8; KEY_BLOCK_LEN]);
    match Hkdf::<Sha256>::from_prk(prk) {
        // 256 bytes is far below HKDF-SHA256's limit of 255 * 32 bytes.
        Ok(hk) => {
            let expanded = hk.expand_multi_info(&[KEY_BLOCK_LABEL, transcript_hash], &mut *okm);
            debug_assert!(expanded.is_ok());
        }
        Err(_) => unreachable!("a 32-byte PRK is valid"),
    }
    let key = |i: usize| {
        let mut k = [0u8; KEY_LEN];
        k.copy_from_slice(&okm[i * KEY_LEN..(i + 1) * KEY_LEN]);
        k
    };
    SessionKeys {
        device_to_server: DirectionKeys {
            enc: key(0),
            mac: key(1),
            iv: key(2),
        },
        server_to_device: DirectionKeys {
            enc: key(3),
            mac: key(4),
            iv: key(5),
        },
        device_finished: key(6),
        server_finished: key(7),
    }
}

/// Runs the whole key schedule.
#[must_use]
pub fn derive(
    pre_master: &PreMaster,
    nonce_device: &[u8; NONCE_LEN],
    nonce_server: &[u8; NONCE_LEN],
    transcript_hash: &[u8; HASH_LEN],
) -> SessionKeys {
    expand(
        &extract(pre_master, nonce_device, nonce_server),
        transcript_hash,
    )
}

/// The Finished MAC (proto-spec.md §5.4): HMAC-SHA256(finished_key, transcript_hash).
#[must_use]
pub fn finished_mac(finished_key: &[u8; KEY_LEN], transcript_hash: &[u8; HASH_LEN]) -> [u8; 32] {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(finished_key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(transcript_hash);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> SessionKeys {
        derive(
            &PreMaster::from_bytes([1u8; 32]),
            &[2u8; NONCE_LEN],
            &[3u8; NONCE_LEN],
            &[4u8; HASH_LEN],
        )
    }

    #[test]
    fn keys_are_distinct_and_deterministic() {
        let a = fixed();
        let b = fixed();
        assert_eq!(a.device_to_server.enc, b.device_to_server.enc);
        let all = [
            a.device_to_server.enc,
            a.device_to_server.mac,
            a.device_to_server.iv,
            a.server_to_device.enc,
            a.server_to_device.mac,
            a.server_to_device.iv,
            a.device_finished,
            a.server_finished,
        ];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j], "keys {i} and {j} collide");
            }
        }
    }

    #[test]
    fn every_input_changes_the_keys() {
        let base = fixed().device_to_server.enc;
        let pm = derive(
            &PreMaster::from_bytes([9u8; 32]),
            &[2u8; NONCE_LEN],
            &[3u8; NONCE_LEN],
            &[4u8; HASH_LEN],
        );
        let nd = derive(
            &PreMaster::from_bytes([1u8; 32]),
            &[9u8; NONCE_LEN],
            &[3u8; NONCE_LEN],
            &[4u8; HASH_LEN],
        );
        let ns = derive(
            &PreMaster::from_bytes([1u8; 32]),
            &[2u8; NONCE_LEN],
            &[9u8; NONCE_LEN],
            &[4u8; HASH_LEN],
        );
        let th = derive(
            &PreMaster::from_bytes([1u8; 32]),
            &[2u8; NONCE_LEN],
            &[3u8; NONCE_LEN],
            &[9u8; HASH_LEN],
        );
        for other in [pm, nd, ns, th] {
            assert_ne!(other.device_to_server.enc, base);
        }
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", fixed()), "SessionKeys(<redacted>)");
    }
}
