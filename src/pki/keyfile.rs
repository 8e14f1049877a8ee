//! Passphrase-encrypted private keys: this module's one job is to turn a
//! PKCS#8 private key into a PKCS#8 `EncryptedPrivateKeyInfo` (PEM
//! `ENCRYPTED PRIVATE KEY`) and back, and to obtain the passphrase that does
//! it from an environment variable, a file or the terminal.
//!
//! The encryption is PBES2 (RFC 8018) with scrypt (RFC 7914) as the key
//! derivation function and AES-256-CBC: what `openssl pkcs8 -topk8 -v2
//! aes-256-cbc -scrypt` writes and `openssl pkey` reads. The RustCrypto
//! `pkcs8`/`pkcs5` crates do all of the cryptography and DER; this module
//! chooses the parameters and refuses, before deriving anything, what it does
//! not accept: every scheme but PBES2 with scrypt (or PBKDF2-HMAC-SHA256) and
//! AES-CBC, and key-derivation costs that would let a hostile file take
//! gigabytes of memory or minutes of work.
//!
//! PBES2 has no integrity check of its own: a wrong passphrase (or a damaged
//! file) shows as bad padding or as a result that is not PKCS#8, both reported
//! as [`PkiError::WrongPassphrase`]; the loaders then check that the key
//! belongs to its certificate.

use std::fmt;
use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use der::asn1::{AnyRef, OctetString};
use der::{Decode, Encode};
use pkcs8::pkcs5::pbes2::{self, Kdf, Pbkdf2Prf, ScryptParams};
use pkcs8::pkcs5::{self, scrypt};
use pkcs8::{
    AlgorithmIdentifierRef, EncryptedPrivateKeyInfoOwned, EncryptedPrivateKeyInfoRef,
    PrivateKeyInfoRef,
};
use zeroize::Zeroizing;

use super::PkiError;

/// The environment variable the command line takes a passphrase from when
/// `--passphrase-file` is not given.
pub const PASSPHRASE_ENV: &str = "SECURED_KEY_PASSPHRASE";

/// scrypt cost of the keys we write: N = 2^14 and r = 8, so 16 MiB of memory
/// (128 · r · N bytes). This is the most OpenSSL 3 can read: it refuses to
/// give scrypt more than 32 MiB, and N = 2^15 with r = 8 needs just over that,
/// so a file with a larger N could not be opened with `openssl pkey`. The cost
/// is raised with [`SCRYPT_P`] instead.
const SCRYPT_LOG_N: u8 = 14;
/// scrypt block size r; see [`SCRYPT_LOG_N`].
const SCRYPT_R: u32 = 8;
/// scrypt parallelization p: four sequential passes over the same 16 MiB make
/// a guess four times as costly for an attacker as OpenSSL's default (p = 1)
/// while unlocking a key still takes about a tenth of a second.
const SCRYPT_P: u32 = 4;
/// Length of the random scrypt salt, in bytes (the `pkcs5` crate's and
/// OpenSSL's choice).
const SALT_LEN: usize = 16;
/// Length of the random AES-CBC initialisation vector: one AES block.
const IV_LEN: usize = 16;

/// Largest scrypt N accepted from a key file, as a power of two.
const MAX_SCRYPT_LOG_N: u32 = 20;
/// Largest scrypt r accepted from a key file.
const MAX_SCRYPT_R: u16 = 8;
/// Largest scrypt p accepted from a key file.
const MAX_SCRYPT_P: u16 = 4;
/// Most memory a key file may make scrypt take (128 · r · N bytes): 16 times
/// what our own keys need, a quarter of what the three limits above allow.
const MAX_SCRYPT_MEMORY: u64 = 256 * 1024 * 1024;
/// Largest PBKDF2 iteration count accepted from a key file: RFC 8018 §4.2's
/// figure for "especially critical keys", a few seconds of work.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// Longest passphrase file read, in bytes.
const MAX_PASSPHRASE_FILE_LEN: u64 = 64 * 1024;

/// A passphrase that encrypts or decrypts private keys: never empty, wiped
/// from memory when dropped, and never shown by `Debug`.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wraps a passphrase.
    ///
    /// # Errors
    /// [`PkiError::EmptyPassphrase`] for an empty one: it would protect
    /// nothing.
    pub fn new(secret: String) -> Result<Self, PkiError> {
        Self::from_origin(Zeroizing::new(secret), "the passphrase")
    }

    fn from_origin(secret: Zeroizing<String>, origin: &str) -> Result<Self, PkiError> {
        if secret.is_empty() {
            return Err(PkiError::EmptyPassphrase {
                origin: origin.to_owned(),
            });
        }
        Ok(Self(secret))
    }

    /// The passphrase's UTF-8 bytes, the PBES2 password.
    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// Where a passphrase comes from. Nothing is read until a passphrase is
/// needed: a plain key never asks for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassphraseSource {
    /// The value of this environment variable ([`PASSPHRASE_ENV`] on the
    /// command line).
    Env(String),
    /// The first line of this file, without its line ending.
    File(PathBuf),
    /// Asked for on the terminal, without echo; only when standard input is
    /// a terminal.
    Prompt,
}

impl PassphraseSource {
    /// The passphrase of the encrypted key file `key`.
    ///
    /// # Errors
    /// [`PkiError::KeyEncrypted`] for [`PassphraseSource::Prompt`] when
    /// standard input is not a terminal; otherwise as
    /// [`new_passphrase`](Self::new_passphrase), without the mismatch.
    pub fn passphrase_for(&self, key: &Path) -> Result<Passphrase, PkiError> {
        match self {
            Self::Prompt => {
                if !std::io::stdin().is_terminal() {
                    return Err(PkiError::KeyEncrypted {
                        path: key.to_owned(),
                    });
                }
                prompt(&format!("Passphrase for {}: ", key.display()))
            }
            other => other.read(),
        }
    }

    /// A passphrase for keys about to be written: on a terminal it is asked
    /// for twice, and the two must match.
    ///
    /// # Errors
    /// [`PkiError::NoPassphrase`] for [`PassphraseSource::Prompt`] when
    /// standard input is not a terminal, [`PkiError::PassphraseMismatch`],
    /// [`PkiError::Prompt`]; [`PkiError::PassphraseEnvUnset`] or
    /// [`PkiError::Read`] when the variable or file is missing;
    /// [`PkiError::EmptyPassphrase`], [`PkiError::PassphraseNotUtf8`].
    pub fn new_passphrase(&self) -> Result<Passphrase, PkiError> {
        match self {
            Self::Prompt => {
                if !std::io::stdin().is_terminal() {
                    return Err(PkiError::NoPassphrase);
                }
                let first = prompt("New passphrase: ")?;
                let second = prompt("The same passphrase again: ")?;
                if first.as_bytes() != second.as_bytes() {
                    return Err(PkiError::PassphraseMismatch);
                }
                Ok(first)
            }
            other => other.read(),
        }
    }

    /// Reads an environment variable or a file.
    fn read(&self) -> Result<Passphrase, PkiError> {
        match self {
            Self::Env(var) => {
                let origin = format!("the environment variable {var}");
                let value = std::env::var_os(var)
                    .ok_or_else(|| PkiError::PassphraseEnvUnset { var: var.clone() })?;
                let value = value
                    .into_string()
                    .map_err(|_| PkiError::PassphraseNotUtf8 {
                        origin: origin.clone(),
                    })?;
                Passphrase::from_origin(Zeroizing::new(value), &origin)
            }
            Self::File(path) => read_passphrase_file(path),
            Self::Prompt => Err(PkiError::NoPassphrase),
        }
    }
}

/// The first line of a passphrase file, without `\n` or `\r\n`.
fn read_passphrase_file(path: &Path) -> Result<Passphrase, PkiError> {
    let read_error = |source| PkiError::Read {
        kind: "passphrase",
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let limit = usize::try_from(MAX_PASSPHRASE_FILE_LEN).unwrap_or(usize::MAX);
    // Room for the whole bounded read, so no copy is left behind by a
    // reallocation.
    let mut bytes = Zeroizing::new(Vec::with_capacity(limit.saturating_add(1)));
    file.take(MAX_PASSPHRASE_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PASSPHRASE_FILE_LEN {
        return Err(PkiError::FileTooLarge {
            kind: "passphrase",
            path: path.to_owned(),
            max: MAX_PASSPHRASE_FILE_LEN,
        });
    }
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let origin = format!("the passphrase file {}", path.display());
    let text = std::str::from_utf8(line).map_err(|_| PkiError::PassphraseNotUtf8 {
        origin: origin.clone(),
    })?;
    Passphrase::from_origin(Zeroizing::new(text.to_owned()), &origin)
}

/// Asks on the terminal, without echo.
fn prompt(question: &str) -> Result<Passphrase, PkiError> {
    let answer = rpassword::prompt_password(question)
        .map(Zeroizing::new)
        .map_err(|source| PkiError::Prompt { source })?;
    Passphrase::from_origin(answer, "the passphrase typed")
}

/// Encrypts a PKCS#8 private key (DER) with `passphrase`: PBES2 with scrypt
/// (N = 2^14, r = 8, p = 4) and AES-256-CBC, with a random salt and IV from
/// the operating system. Returns the `EncryptedPrivateKeyInfo` DER.
///
/// # Errors
/// [`PkiError::KeyEncryption`] when `pkcs8_der` is not a PKCS#8 private key
/// or the random number generator fails.
pub fn encrypt(pkcs8_der: &[u8], passphrase: &Passphrase) -> Result<Vec<u8>, PkiError> {
    let fail = |reason: &str| PkiError::KeyEncryption {
        reason: reason.to_owned(),
    };
    PrivateKeyInfoRef::from_der(pkcs8_der).map_err(|_| fail("it is not a PKCS#8 private key"))?;
    let mut salt = [0u8; SALT_LEN];
    let mut iv = [0u8; IV_LEN];
    getrandom::fill(&mut salt)
        .and_then(|()| getrandom::fill(&mut iv))
        .map_err(|_| fail("the system random number generator failed"))?;
    let cost = scrypt::Params::new(SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
        .map_err(|_| fail("the scrypt parameters are invalid"))?;
    let params = pbes2::Parameters::generate_scrypt_aes256cbc(cost, &salt, iv)
        .map_err(|e| fail(&e.to_string()))?;

    // Encrypt in a buffer of our own that is wiped afterwards: it holds the
    // key in clear until the cipher has run over it.
    let mut buffer = Zeroizing::new(vec![0u8; pkcs8_der.len() + IV_LEN]);
    buffer[..pkcs8_der.len()].copy_from_slice(pkcs8_der);
    let ciphertext = params
        .encrypt_in_place(passphrase.as_bytes(), &mut buffer, pkcs8_der.len())
        .map_err(|e| fail(&e.to_string()))?;
    let encrypted_data = OctetString::new(ciphertext).map_err(|e| fail(&e.to_string()))?;
    EncryptedPrivateKeyInfoOwned {
        encryption_algorithm: params.into(),
        encrypted_data,
    }
    .to_der()
    .map_err(|e| fail(&e.to_string()))
}

/// Decrypts an `EncryptedPrivateKeyInfo` (DER) with `passphrase` and returns
/// the PKCS#8 private key DER.
///
/// # Errors
/// [`PkiError::WrongPassphrase`] when the passphrase is wrong or the
/// ciphertext damaged; [`PkiError::UnsupportedKeyEncryption`] for anything
/// but PBES2 with scrypt or PBKDF2-HMAC-SHA256 and AES-CBC;
/// [`PkiError::KeyDerivationTooCostly`] for parameters beyond the limits
/// (checked before deriving); [`PkiError::MalformedEncryptedKey`] for DER
/// that is not an `EncryptedPrivateKeyInfo`.
pub fn decrypt(
    encrypted_der: &[u8],
    passphrase: &Passphrase,
) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    decrypt_from(encrypted_der, passphrase, "the private key")
}

/// [`decrypt`], with `origin` (usually the file's path) named in errors.
pub(crate) fn decrypt_from(
    encrypted_der: &[u8],
    passphrase: &Passphrase,
    origin: &str,
) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let info = EncryptedPrivateKeyInfoRef::from_der(encrypted_der).map_err(|e| {
        match (refused_scheme(encrypted_der), e.kind()) {
            (Some(scheme), _) => unsupported(origin, scheme),
            (None, der::ErrorKind::OidUnknown { oid }) => unsupported(origin, oid_name(oid)),
            (None, _) => PkiError::MalformedEncryptedKey {
                origin: origin.to_owned(),
                reason: e.to_string(),
            },
        }
    })?;
    let params = match &info.encryption_algorithm {
        pkcs5::EncryptionScheme::Pbes2(params) => params,
        other => return Err(unsupported(origin, oid_name(other.oid()))),
    };
    check_parameters(params, origin)?;

    let mut buffer = Zeroizing::new(info.encrypted_data.as_bytes().to_vec());
    let len = params
        .decrypt_in_place(passphrase.as_bytes(), &mut buffer)
        .map_err(|e| match e {
            pkcs5::Error::DecryptFailed => PkiError::WrongPassphrase {
                origin: origin.to_owned(),
            },
            other => PkiError::MalformedEncryptedKey {
                origin: origin.to_owned(),
                reason: other.to_string(),
            },
        })?
        .len();
    buffer.truncate(len);
    // Without a MAC, a wrong passphrase passes the padding check about once
    // in 256 tries; what it yields is then not PKCS#8.
    if PrivateKeyInfoRef::from_der(&buffer).is_err() {
        return Err(PkiError::WrongPassphrase {
            origin: origin.to_owned(),
        });
    }
    Ok(buffer)
}

/// Refuses every PBES2 scheme but scrypt or PBKDF2-HMAC-SHA256 with AES-CBC,
/// and key-derivation costs beyond the limits, before anything is derived.
fn check_parameters(params: &pbes2::Parameters, origin: &str) -> Result<(), PkiError> {
    let cipher = params.encryption;
    if !matches!(
        cipher,
        pbes2::EncryptionScheme::Aes128Cbc { .. }
            | pbes2::EncryptionScheme::Aes192Cbc { .. }
            | pbes2::EncryptionScheme::Aes256Cbc { .. }
    ) {
        return Err(unsupported(origin, describe(params)));
    }
    match &params.kdf {
        Kdf::Scrypt(scrypt) => check_scrypt(scrypt, origin),
        Kdf::Pbkdf2(pbkdf2) if pbkdf2.prf == Pbkdf2Prf::HmacWithSha256 => {
            if pbkdf2.iteration_count > MAX_PBKDF2_ITERATIONS {
                return Err(PkiError::KeyDerivationTooCostly {
                    origin: origin.to_owned(),
                    what: format!(
                        "PBKDF2 with {} iterations; at most {MAX_PBKDF2_ITERATIONS}",
                        pbkdf2.iteration_count
                    ),
                });
            }
            Ok(())
        }
        _ => Err(unsupported(origin, describe(params))),
    }
}

/// Checks a file's scrypt parameters against the limits, saying which one
/// is exceeded.
fn check_scrypt(params: &ScryptParams, origin: &str) -> Result<(), PkiError> {
    let (n, r, p) = (
        params.cost_parameter,
        params.block_size,
        params.parallelization,
    );
    let shown = format!("scrypt with N = {n}, r = {r}, p = {p}");
    // Checked here because the `pkcs5` crate's conversion of N to its
    // logarithm panics on N = 0.
    if n < 2 || !n.is_power_of_two() {
        return Err(PkiError::MalformedEncryptedKey {
            origin: origin.to_owned(),
            reason: format!("{shown}: N must be a power of two above 1"),
        });
    }
    let exceeded = if n > 1 << MAX_SCRYPT_LOG_N {
        format!("N may be at most 2^{MAX_SCRYPT_LOG_N}")
    } else if r > MAX_SCRYPT_R {
        format!("r may be at most {MAX_SCRYPT_R}")
    } else if p > MAX_SCRYPT_P {
        format!("p may be at most {MAX_SCRYPT_P}")
    } else {
        // Both factors are bounded above, so this cannot overflow.
        let memory = 128 * u64::from(r) * n;
        if memory <= MAX_SCRYPT_MEMORY {
            return Ok(());
        }
        format!(
            "that needs {} MiB of memory, at most {} MiB are granted",
            memory >> 20,
            MAX_SCRYPT_MEMORY >> 20
        )
    };
    Err(PkiError::KeyDerivationTooCostly {
        origin: origin.to_owned(),
        what: format!("{shown}; {exceeded}"),
    })
}

/// `PBES2 with <kdf> and <cipher>`, for an error message.
fn describe(params: &pbes2::Parameters) -> String {
    let kdf = match &params.kdf {
        Kdf::Pbkdf2(pbkdf2) => format!("PBKDF2 with {}", oid_name(pbkdf2.prf.oid())),
        other => oid_name(other.oid()),
    };
    format!("PBES2 with {kdf} and {}", oid_name(params.encryption.oid()))
}

/// For a key the `pkcs5` crate cannot decode: the scheme it names when that
/// is not PBES2 with scrypt or PBKDF2 and AES-CBC (the crate does not know
/// PKCS#12's schemes, say); `None` when the file is just malformed.
fn refused_scheme(encrypted_der: &[u8]) -> Option<String> {
    let algorithm = AnyRef::from_der(encrypted_der)
        .and_then(|info| {
            info.sequence(|fields| {
                let algorithm = AlgorithmIdentifierRef::decode(fields)?;
                AnyRef::decode(fields)?;
                Ok(algorithm)
            })
        })
        .ok()?;
    if algorithm.oid != pbes2::PBES2_OID {
        return Some(oid_name(algorithm.oid));
    }
    let (kdf, cipher) = algorithm
        .parameters?
        .sequence(|fields| {
            Ok::<_, der::Error>((
                AlgorithmIdentifierRef::decode(fields)?,
                AlgorithmIdentifierRef::decode(fields)?,
            ))
        })
        .ok()?;
    let known_kdf = [pbes2::SCRYPT_OID, pbes2::PBKDF2_OID].contains(&kdf.oid);
    let known_cipher = [
        pbes2::AES_128_CBC_OID,
        pbes2::AES_192_CBC_OID,
        pbes2::AES_256_CBC_OID,
    ]
    .contains(&cipher.oid);
    (!known_kdf || !known_cipher).then(|| {
        format!(
            "PBES2 with {} and {}",
            oid_name(kdf.oid),
            oid_name(cipher.oid)
        )
    })
}

/// An object identifier's name: ours for the key-derivation functions and
/// their HMACs, else the `const-oid` database's, else its dotted form.
fn oid_name(oid: der::asn1::ObjectIdentifier) -> String {
    let ours = match oid {
        pbes2::SCRYPT_OID => Some("scrypt"),
        pbes2::PBKDF2_OID => Some("PBKDF2"),
        pbes2::HMAC_WITH_SHA1_OID => Some("HMAC-SHA-1"),
        pbes2::HMAC_WITH_SHA256_OID => Some("HMAC-SHA-256"),
        _ => None,
    };
    ours.or_else(|| const_oid::db::DB.by_oid(&oid))
        .map_or_else(|| oid.to_string(), ToOwned::to_owned)
}

fn unsupported(origin: &str, scheme: String) -> PkiError {
    PkiError::UnsupportedKeyEncryption {
        origin: origin.to_owned(),
        scheme,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use pkcs8::pkcs5::pbes2::Pbkdf2Params;

    use super::*;
    use crate::pki::store::{read_key_pem_with, write_key_pem, write_key_pem_encrypted};
    use crate::pki::testutil::fixture;

    fn pass(secret: &str) -> Passphrase {
        Passphrase::new(secret.to_owned()).unwrap()
    }

    /// The PKCS#8 DER of a test key.
    fn key() -> &'static [u8] {
        &fixture().device.key_pkcs8_der
    }

    fn decode(der: &[u8]) -> EncryptedPrivateKeyInfoOwned {
        EncryptedPrivateKeyInfoOwned::from_der(der).unwrap()
    }

    fn pbes2_of(info: &EncryptedPrivateKeyInfoOwned) -> pbes2::Parameters {
        info.encryption_algorithm.pbes2().unwrap().clone()
    }

    /// An `EncryptedPrivateKeyInfo` with these parameters and ciphertext.
    fn assemble(params: pbes2::Parameters, ciphertext: &[u8]) -> Vec<u8> {
        EncryptedPrivateKeyInfoOwned {
            encryption_algorithm: params.into(),
            encrypted_data: OctetString::new(ciphertext).unwrap(),
        }
        .to_der()
        .unwrap()
    }

    /// `key()` encrypted by the library with `params`, for schemes that
    /// [`encrypt`] does not write.
    fn encrypted_with(params: pbes2::Parameters, secret: &str) -> Vec<u8> {
        let ciphertext = params.encrypt(secret, key()).unwrap();
        assemble(params, &ciphertext)
    }

    fn scrypt_params(log_n: u8, r: u32, p: u32) -> pbes2::Parameters {
        let cost = scrypt::Params::new(log_n, r, p).unwrap();
        pbes2::Parameters::generate_scrypt_aes256cbc(cost, &[7; SALT_LEN], [9; IV_LEN]).unwrap()
    }

    #[test]
    fn round_trip_with_our_parameters() {
        let passphrase = pass("correct horse battery staple");
        let key = key();
        let started = Instant::now();
        let der = encrypt(key, &passphrase).unwrap();
        let encrypted_in = started.elapsed();
        let started = Instant::now();
        assert_eq!(*decrypt(&der, &passphrase).unwrap(), *key);
        let decrypted_in = started.elapsed();
        println!("scrypt encrypt {encrypted_in:?}, decrypt {decrypted_in:?}");

        let params = pbes2_of(&decode(&der));
        let Kdf::Scrypt(scrypt) = params.kdf else {
            panic!("not scrypt: {:?}", params.kdf)
        };
        assert_eq!(
            (
                scrypt.cost_parameter,
                scrypt.block_size,
                scrypt.parallelization
            ),
            (1 << 14, 8, 4)
        );
        assert_eq!(scrypt.salt.as_bytes().len(), SALT_LEN);
        assert_eq!(scrypt.key_length, None);
        assert!(matches!(
            params.encryption,
            pbes2::EncryptionScheme::Aes256Cbc { .. }
        ));

        // A fresh salt and IV every time.
        let again = pbes2_of(&decode(&encrypt(key, &passphrase).unwrap()));
        let Kdf::Scrypt(scrypt_again) = again.kdf else {
            panic!("not scrypt")
        };
        assert_ne!(scrypt.salt, scrypt_again.salt);
        assert_ne!(params.encryption, again.encryption);

        let err = encrypt(b"not a key", &passphrase).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot encrypt the private key: it is not a PKCS#8 private key"
        );
    }

    #[test]
    fn a_wrong_passphrase_is_told_apart() {
        let der = encrypt(key(), &pass("right")).unwrap();
        for wrong in ["wrong", "Right", "right ", "righ"] {
            let err = decrypt(&der, &pass(wrong)).unwrap_err();
            assert_eq!(
                err.to_string(),
                "the passphrase for the private key is wrong (or the file is damaged); try again"
            );
        }
    }

    /// CBC has no MAC: damage shows as bad padding or as a result that is not
    /// PKCS#8, both reported like a wrong passphrase.
    #[test]
    fn a_tampered_file_is_refused() {
        let passphrase = pass("right");
        let der = encrypt(key(), &passphrase).unwrap();
        let info = decode(&der);
        let params = pbes2_of(&info);
        let ciphertext = info.encrypted_data.as_bytes().to_vec();
        let n = ciphertext.len();

        // The last byte of the next-to-last block changes the padding length
        // byte to one above 16.
        let mut padding = ciphertext.clone();
        padding[n - 17] ^= 0x80;
        // A ciphertext that is not whole blocks.
        let truncated = &ciphertext[..n - 1];
        // The IV's first byte turns the key's leading SEQUENCE tag (0x30)
        // into something else.
        let mut other_iv = params.clone();
        let pbes2::EncryptionScheme::Aes256Cbc { iv } = &mut other_iv.encryption else {
            panic!("not AES-256-CBC")
        };
        iv[0] ^= 0x01;
        for tampered in [
            assemble(params.clone(), &padding),
            assemble(params.clone(), truncated),
            assemble(other_iv, &ciphertext),
        ] {
            let err = decrypt(&tampered, &passphrase).unwrap_err();
            assert!(matches!(err, PkiError::WrongPassphrase { .. }), "{err}");
        }

        let err = decrypt(&der[..der.len() - 1], &passphrase).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the private key is not a valid encrypted PKCS#8 private key ("),
            "{err}"
        );
    }

    /// Costs a hostile file could ask for are refused before scrypt runs:
    /// N = 2^30 with r = 8 would allocate 128 GiB.
    #[test]
    fn hostile_scrypt_parameters_are_refused_before_deriving() {
        let template = scrypt_params(14, 8, 1);
        let Kdf::Scrypt(base) = template.kdf else {
            panic!("not scrypt")
        };
        let with = |n: u64, r: u16, p: u16| {
            let mut params = template.clone();
            params.kdf = Kdf::Scrypt(ScryptParams {
                cost_parameter: n,
                block_size: r,
                parallelization: p,
                ..base
            });
            // Any ciphertext: nothing may be derived to decrypt it.
            assemble(params, &[0; 32])
        };
        let started = Instant::now();
        for (n, r, p, exceeded) in [
            (1 << 30, 8, 1, "N may be at most 2^20"),
            (1 << 62, 1, 1, "N may be at most 2^20"),
            (1 << 14, 9, 1, "r may be at most 8"),
            (1 << 14, 8, 5, "p may be at most 4"),
            (
                1 << 20,
                8,
                1,
                "that needs 1024 MiB of memory, at most 256 MiB are granted",
            ),
        ] {
            let err = decrypt(&with(n, r, p), &pass("x")).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "the private key asks for a costlier key derivation than accepted (scrypt with N = {n}, r = {r}, p = {p}; {exceeded}); re-encrypt it with scrypt at a lower cost, as `openssl pkcs8 -topk8 -v2 aes-256-cbc -scrypt` does"
                )
            );
        }
        // N = 0 makes the `pkcs5` crate panic; N must be a power of two.
        for n in [0, 1, 3, 12_345] {
            let err = decrypt(&with(n, 8, 1), &pass("x")).unwrap_err();
            assert!(
                matches!(err, PkiError::MalformedEncryptedKey { .. }),
                "N = {n}: {err}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(1));

        // PBKDF2 iterations are bounded as well.
        let many = pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(
            MAX_PBKDF2_ITERATIONS + 1,
            &[7; SALT_LEN],
            [9; IV_LEN],
        )
        .unwrap();
        let err = decrypt(&assemble(many, &[0; 32]), &pass("x")).unwrap_err();
        assert!(
            matches!(err, PkiError::KeyDerivationTooCostly { .. }),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn other_schemes_are_refused() {
        // PBKDF2 with HMAC-SHA-1 (OpenSSL 1.x's default PRF).
        let sha1 = pbes2::Parameters {
            kdf: Kdf::Pbkdf2(Pbkdf2Params {
                prf: Pbkdf2Prf::HmacWithSha1,
                ..Pbkdf2Params::hmac_sha256(2048, &[7; SALT_LEN]).unwrap()
            }),
            encryption: pbes2::EncryptionScheme::Aes256Cbc { iv: [9; IV_LEN] },
        };
        let err = decrypt(&assemble(sha1, &[0; 32]), &pass("x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the private key uses an unsupported encryption (PBES2 with PBKDF2 with HMAC-SHA-1 and id-aes256-CBC); re-encrypt it with scrypt and AES-256-CBC, as `openssl pkcs8 -topk8 -v2 aes-256-cbc -scrypt` does"
        );
        let sha512 = pbes2::Parameters {
            kdf: Kdf::Pbkdf2(Pbkdf2Params {
                prf: Pbkdf2Prf::HmacWithSha512,
                ..Pbkdf2Params::hmac_sha256(2048, &[7; SALT_LEN]).unwrap()
            }),
            encryption: pbes2::EncryptionScheme::Aes256Cbc { iv: [9; IV_LEN] },
        };
        let err = decrypt(&assemble(sha512, &[0; 32]), &pass("x")).unwrap_err();
        assert!(
            matches!(err, PkiError::UnsupportedKeyEncryption { .. }),
            "{err}"
        );
        // AES-GCM in PBES2 is not what OpenSSL writes or reads.
        let cost = scrypt::Params::new(10, 8, 1).unwrap();
        let gcm = pbes2::Parameters::scrypt_aes256gcm(cost, &[7; SALT_LEN], [9; 12]).unwrap();
        let err = decrypt(&assemble(gcm, &[0; 32]), &pass("x")).unwrap_err();
        assert!(
            err.to_string()
                .contains("(PBES2 with scrypt and id-aes256-GCM)"),
            "{err}"
        );

        // PBKDF2-HMAC-SHA256 and AES-128-CBC are read.
        let pbkdf2 =
            pbes2::Parameters::generate_pbkdf2_sha256_aes128cbc(2048, &[7; SALT_LEN], [9; IV_LEN])
                .unwrap();
        let der = encrypted_with(pbkdf2, "pw");
        assert_eq!(*decrypt(&der, &pass("pw")).unwrap(), *key());
        // And scrypt with other accepted costs.
        let der = encrypted_with(scrypt_params(10, 4, 2), "pw");
        assert_eq!(*decrypt(&der, &pass("pw")).unwrap(), *key());
    }

    #[test]
    fn passphrases_come_from_files_and_the_environment() {
        assert_eq!(format!("{:?}", pass("hunter2")), "Passphrase(..)");
        assert!(matches!(
            Passphrase::new(String::new()),
            Err(PkiError::EmptyPassphrase { .. })
        ));

        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, contents: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            PassphraseSource::File(path)
        };
        let key_path = Path::new("keys/x.key");
        for (contents, expected) in [
            (&b"secret\n"[..], "secret"),
            (b"secret", "secret"),
            (b"two words\r\nsecond line\n", "two words"),
            (b" spaced \n", " spaced "),
        ] {
            let source = file("p", contents);
            assert_eq!(
                source.new_passphrase().unwrap().as_bytes(),
                expected.as_bytes()
            );
            assert_eq!(
                source.passphrase_for(key_path).unwrap().as_bytes(),
                expected.as_bytes()
            );
        }
        let empty = file("empty", b"\nsecond line\n");
        assert_eq!(
            empty.new_passphrase().unwrap_err().to_string(),
            format!(
                "the passphrase file {} is empty, and an empty passphrase protects nothing; give one that is not",
                dir.path().join("empty").display()
            )
        );
        let latin1 = file("latin1", b"caf\xe9\n");
        assert!(matches!(
            latin1.new_passphrase(),
            Err(PkiError::PassphraseNotUtf8 { .. })
        ));
        let missing = PassphraseSource::File(dir.path().join("missing"));
        assert!(matches!(
            missing.passphrase_for(key_path),
            Err(PkiError::Read {
                kind: "passphrase",
                ..
            })
        ));
        let big = file("big", &vec![b'a'; 70 * 1024]);
        assert!(matches!(
            big.new_passphrase(),
            Err(PkiError::FileTooLarge { .. })
        ));

        let unset = PassphraseSource::Env("SECURED_TEST_NEVER_SET_PASSPHRASE".to_owned());
        assert_eq!(
            unset.passphrase_for(key_path).unwrap_err().to_string(),
            "the environment variable SECURED_TEST_NEVER_SET_PASSPHRASE is not set; set it to the passphrase, or give --passphrase-file FILE"
        );
        let path = PassphraseSource::Env("PATH".to_owned());
        assert!(!path.new_passphrase().unwrap().as_bytes().is_empty());
    }

    /// Key files: an encrypted key asks for its passphrase, a plain one never.
    #[test]
    fn key_files_ask_for_a_passphrase_only_when_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let pass_file = dir.path().join("pass");
        std::fs::write(&pass_file, "right\n").unwrap();
        let source = PassphraseSource::File(pass_file.clone());
        let encrypted = dir.path().join("e.key");
        write_key_pem_encrypted(&encrypted, key(), &pass("right"), false).unwrap();
        let mode = std::fs::metadata(&encrypted).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(crate::pki::key_is_encrypted(&encrypted));
        assert!(matches!(
            write_key_pem_encrypted(&encrypted, key(), &pass("right"), false),
            Err(PkiError::Exists { .. })
        ));

        assert_eq!(
            *read_key_pem_with(&encrypted, Some(&source)).unwrap(),
            *key()
        );
        assert_eq!(
            read_key_pem_with(&encrypted, None).unwrap_err().to_string(),
            format!(
                "the key file {} is encrypted: give its passphrase with --passphrase-file FILE or the SECURED_KEY_PASSPHRASE environment variable, or run on a terminal to be asked",
                encrypted.display()
            )
        );
        std::fs::write(&pass_file, "wrong\n").unwrap();
        assert_eq!(
            read_key_pem_with(&encrypted, Some(&source))
                .unwrap_err()
                .to_string(),
            format!(
                "the passphrase for {} is wrong (or the file is damaged); try again",
                encrypted.display()
            )
        );

        // A plain key does not read the source at all.
        let plain = dir.path().join("p.key");
        write_key_pem(&plain, key(), false).unwrap();
        assert!(!crate::pki::key_is_encrypted(&plain));
        let nowhere = PassphraseSource::File(dir.path().join("missing"));
        assert_eq!(*read_key_pem_with(&plain, Some(&nowhere)).unwrap(), *key());
    }

    /// OpenSSL reads our files, and we read the ones it writes with scrypt
    /// or PBKDF2-HMAC-SHA256, and refuse its older schemes.
    #[test]
    fn openssl_interoperates() {
        if Command::new("openssl").arg("version").output().is_err() {
            println!("note: openssl is not installed; skipping the interoperability checks");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            Command::new("openssl")
                .current_dir(dir.path())
                .args(args)
                .output()
                .unwrap()
        };

        // Ours, read by OpenSSL.
        write_key_pem_encrypted(&dir.path().join("ours.key"), key(), &pass("s3cret"), false)
            .unwrap();
        let out = openssl(&["pkey", "-in", "ours.key", "-passin", "pass:s3cret"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (label, der) = der::pem::decode_vec(&out.stdout).unwrap();
        assert_eq!((label, der.as_slice()), ("PRIVATE KEY", key()));
        let out = openssl(&["pkey", "-in", "ours.key", "-passin", "pass:wrong"]);
        assert!(!out.status.success());

        // OpenSSL's, read by us.
        write_key_pem(&dir.path().join("plain.key"), key(), false).unwrap();
        std::fs::write(dir.path().join("pass"), "s3cret\n").unwrap();
        let source = PassphraseSource::File(dir.path().join("pass"));
        let topk8 = |out: &str, scheme: &[&str]| {
            let mut args = vec!["pkcs8", "-topk8", "-in", "plain.key", "-out", out];
            args.extend_from_slice(scheme);
            args.extend_from_slice(&["-passout", "pass:s3cret"]);
            let made = openssl(&args);
            made.status
                .success()
                .then(|| read_key_pem_with(&dir.path().join(out), Some(&source)))
        };
        for (file, scheme) in [
            ("scrypt.key", &["-v2", "aes-256-cbc", "-scrypt"][..]),
            ("pbkdf2.key", &["-v2", "aes-256-cbc"]),
        ] {
            let read = topk8(file, scheme).expect("openssl pkcs8 -topk8");
            assert_eq!(*read.unwrap(), *key(), "{file}");
        }
        let sha1 = topk8(
            "sha1.key",
            &["-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA1"],
        )
        .expect("openssl pkcs8 -topk8 -v2prf hmacWithSHA1");
        assert!(
            matches!(sha1, Err(PkiError::UnsupportedKeyEncryption { .. })),
            "{sha1:?}"
        );
        let des = topk8("des.key", &["-v2", "des3"]).expect("openssl pkcs8 -topk8 -v2 des3");
        assert!(
            des.as_ref().is_err_and(|e| e
                .to_string()
                .contains("unsupported encryption (PBES2 with PBKDF2 and des-ede3-cbc)")),
            "{des:?}"
        );
        // PKCS#12-style PBES1 (may need OpenSSL's legacy provider).
        match topk8("pbes1.key", &["-v1", "PBE-SHA1-3DES"]) {
            Some(read) => {
                let err = read.unwrap_err();
                assert_eq!(
                    err.to_string(),
                    format!(
                        "{} uses an unsupported encryption (pbeWithSHAAnd3-KeyTripleDES-CBC); re-encrypt it with scrypt and AES-256-CBC, as `openssl pkcs8 -topk8 -v2 aes-256-cbc -scrypt` does",
                        dir.path().join("pbes1.key").display()
                    )
                );
            }
            None => println!("note: this openssl cannot write PBE-SHA1-3DES; skipping that check"),
        }
    }
}
