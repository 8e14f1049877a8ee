//! The enrollment token as people handle it (proto-spec.md §14.1): one
//! line of text that an operator gives to a new device.
//!
//! `st1.` followed by the unpadded base64url encoding of: the token id
//! (16 bytes), the secret (32), the SHA-256 fingerprint of the root
//! certificate (32) and the device name it enrolls (1 to 64 bytes). The id
//! finds the token on the server, the secret proves it, the fingerprint
//! lets the device authenticate a server before it trusts anything else,
//! and the name saves typing it (the server holds the name it issued the
//! token for, and only that counts).

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use zeroize::Zeroizing;

use crate::crypto::CryptoProvider;
use crate::crypto::token::TOKEN_SECRET_LEN;
use crate::message::TOKEN_ID_LEN;

/// The prefix of a token's text.
pub const TOKEN_PREFIX: &str = "st1.";
const FIXED_BYTES: usize = TOKEN_ID_LEN + TOKEN_SECRET_LEN + 32;
const MAX_TOKEN_BYTES: usize = FIXED_BYTES + crate::message::MAX_DEVICE_NAME_LEN;

/// A one-time enrollment token.
pub struct EnrollmentToken {
    /// Which token, as stored on the server.
    pub id: [u8; TOKEN_ID_LEN],
    /// The secret the device proves.
    pub secret: Zeroizing<[u8; TOKEN_SECRET_LEN]>,
    /// SHA-256 of the root certificate the server must chain to.
    pub root_fingerprint: [u8; 32],
    /// The device name it enrolls.
    pub name: String,
}

impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("id", &hex::encode(self.id))
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why a token's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the enrollment token is not valid: it must be the whole `st1.…` line that `secured admin token` printed ({reason})"
)]
pub struct TokenFormatError {
    reason: &'static str,
}

impl EnrollmentToken {
    /// A fresh token pinning `root_fingerprint`.
    ///
    /// # Errors
    /// The random source's error.
    pub fn generate(
        provider: &CryptoProvider,
        root_fingerprint: [u8; 32],
        name: &str,
    ) -> Result<Self, crate::crypto::CryptoError> {
        let mut id = [0u8; TOKEN_ID_LEN];
        provider.random.fill(&mut id)?;
        let mut secret = Zeroizing::new([0u8; TOKEN_SECRET_LEN]);
        provider.random.fill(secret.as_mut())?;
        Ok(Self {
            id,
            secret,
            root_fingerprint,
            name: name.to_owned(),
        })
    }

    /// The token as one line of text.
    #[must_use]
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(MAX_TOKEN_BYTES));
        raw.extend_from_slice(&self.id);
        raw.extend_from_slice(self.secret.as_ref());
        raw.extend_from_slice(&self.root_fingerprint);
        raw.extend_from_slice(self.name.as_bytes());
        Zeroizing::new(format!(
            "{TOKEN_PREFIX}{}",
            Base64UrlUnpadded::encode_string(&raw)
        ))
    }

    /// Parses a token's text (surrounding whitespace is ignored).
    ///
    /// # Errors
    /// [`TokenFormatError`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, TokenFormatError> {
        let text = text.trim();
        let Some(body) = text.strip_prefix(TOKEN_PREFIX) else {
            return Err(TokenFormatError {
                reason: "it does not start with `st1.`",
            });
        };
        let mut buf = Zeroizing::new([0u8; MAX_TOKEN_BYTES]);
        let decoded =
            Base64UrlUnpadded::decode(body, buf.as_mut()).map_err(|_| TokenFormatError {
                reason: "it is cut short, too long or holds other characters",
            })?;
        let len = decoded.len();
        if len <= FIXED_BYTES {
            return Err(TokenFormatError {
                reason: "it is cut short",
            });
        }
        let raw = &buf[..len];
        let name = std::str::from_utf8(&raw[FIXED_BYTES..])
            .ok()
            .filter(|n| crate::message::is_device_name(n))
            .ok_or(TokenFormatError {
                reason: "it does not end with a device name",
            })?
            .to_owned();
        let mut id = [0u8; TOKEN_ID_LEN];
        id.copy_from_slice(&raw[..TOKEN_ID_LEN]);
        let mut secret = Zeroizing::new([0u8; TOKEN_SECRET_LEN]);
        secret.copy_from_slice(&raw[TOKEN_ID_LEN..TOKEN_ID_LEN + TOKEN_SECRET_LEN]);
        let mut root_fingerprint = [0u8; 32];
        root_fingerprint.copy_from_slice(&raw[TOKEN_ID_LEN + TOKEN_SECRET_LEN..FIXED_BYTES]);
        Ok(Self {
            id,
            secret,
            root_fingerprint,
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_errors() {
        let token = EnrollmentToken {
            id: [1; 16],
            secret: Zeroizing::new([2; 32]),
            root_fingerprint: [3; 32],
            name: "cam-7".to_owned(),
        };
        let text = token.to_text();
        assert!(
            text.starts_with("st1.") && text.len() == 4 + 114,
            "{}",
            text.len()
        );
        let back = EnrollmentToken::parse(&format!("  {}\n", text.as_str())).unwrap();
        assert_eq!(back.id, token.id);
        assert_eq!(*back.secret, *token.secret);
        assert_eq!(back.root_fingerprint, token.root_fingerprint);
        assert_eq!(back.name, "cam-7");
        assert!(!format!("{back:?}").contains("0202"));
        let cut = &text[..4 + 107];
        for bad in ["", "st1.", "st2.AAAA", cut, &format!("{}A", text.as_str())] {
            let err = EnrollmentToken::parse(bad).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("the enrollment token is not valid"),
                "{bad}"
            );
        }
    }
}
