//! SHA-256: the handshake transcript, a running hash over the exact bytes
//! of each handshake frame, header included (proto-spec.md §5.5), and the
//! content hash of streamed files (§8.3).

use sha2::{Digest, Sha256};

/// Length of a transcript hash in bytes.
pub const HASH_LEN: usize = 32;

/// A running hash over handshake frames.
#[derive(Clone, Default)]
pub struct Transcript(Sha256);

impl Transcript {
    /// An empty transcript.
    #[must_use]
    pub fn new() -> Self {
        Self(Sha256::new())
    }

    /// Adds bytes exactly as they travel on the wire.
    pub fn add(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The hash of everything added so far; the transcript can go on.
    #[must_use]
    pub fn hash(&self) -> [u8; HASH_LEN] {
        self.0.clone().finalize().into()
    }
}

/// A running SHA-256 over content that arrives in pieces.
#[derive(Clone, Default)]
pub struct ContentHasher(Sha256);

impl ContentHasher {
    /// An empty hash.
    #[must_use]
    pub fn new() -> Self {
        Self(Sha256::new())
    }

    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything added.
    #[must_use]
    pub fn finish(self) -> [u8; HASH_LEN] {
        self.0.finalize().into()
    }
}

/// SHA-256 of `parts` concatenated.
#[must_use]
pub fn sha256(parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_prefix_hash_and_transcript_continues() {
        let mut t = Transcript::new();
        t.add(b"ab");
        assert_eq!(t.hash(), sha256(&[b"ab"]));
        t.add(b"c");
        assert_eq!(t.hash(), sha256(&[b"a", b"bc"]));
        // FIPS 180-2 "abc".
        assert_eq!(
            hex::encode(t.hash()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
