//! Who may see a file (proto-spec.md §13.2): its owner always, and then
//! nobody else, every device of the CA, or the devices named.

use std::fmt;

use super::DecodeError;
use super::codec::{Reader, put_vec_u16};

/// Most devices a scope may name.
pub const MAX_SCOPE_DEVICES: usize = 32;
/// Longest device name (proto-spec.md §2).
pub const MAX_DEVICE_NAME_LEN: usize = 64;

/// Whether `name` is a device name (proto-spec.md §2): 1 to 64 characters
/// from `A–Z a–z 0–9 . _ -`, not starting with `.`.
#[must_use]
pub fn is_device_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_DEVICE_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The scope of a file, as its owner signed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// The owner only (kind 0).
    #[default]
    Private,
    /// Every device of this CA (kind 1).
    Everyone,
    /// The owner and the devices named (kind 2): 1 to 32 names, sorted
    /// and distinct. Build it with [`Scope::devices`].
    Devices(Vec<String>),
}

/// Why a list of device names cannot be a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// No name.
    #[error("a list of devices must name at least one device")]
    Empty,
    /// More than [`MAX_SCOPE_DEVICES`] names.
    #[error("a file can be shared with at most {MAX_SCOPE_DEVICES} named devices ({0} given)")]
    TooMany(usize),
    /// A name that no device certificate can carry.
    #[error("{0:?} is not a device name (1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.')")]
    BadName(String),
}

impl Scope {
    /// A scope naming `names`, sorted and without repeats.
    ///
    /// # Errors
    /// [`ScopeError`] for an empty list, too many names, or a name that is
    /// not a device name.
    pub fn devices<I, S>(names: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut names: Vec<String> = names.into_iter().map(Into::into).collect();
        if let Some(bad) = names.iter().find(|n| !is_device_name(n)) {
            return Err(ScopeError::BadName(bad.clone()));
        }
        names.sort_unstable();
        names.dedup();
        match names.len() {
            0 => Err(ScopeError::Empty),
            n if n > MAX_SCOPE_DEVICES => Err(ScopeError::TooMany(n)),
            _ => Ok(Self::Devices(names)),
        }
    }

    /// Parses the command-line form: `private`, `everyone`, or device names
    /// separated by commas.
    ///
    /// # Errors
    /// As [`Scope::devices`].
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        match text {
            "private" => Ok(Self::Private),
            "everyone" => Ok(Self::Everyone),
            list => Self::devices(list.split(',').map(str::trim).filter(|s| !s.is_empty())),
        }
    }

    /// Whether `device` may see a file of `owner` with this scope.
    #[must_use]
    pub fn allows(&self, owner: &str, device: &str) -> bool {
        owner == device
            || match self {
                Self::Private => false,
                Self::Everyone => true,
                Self::Devices(names) => names.binary_search_by(|n| n.as_str().cmp(device)).is_ok(),
            }
    }

    /// The wire value of the kind.
    #[must_use]
    pub fn kind_u8(&self) -> u8 {
        match self {
            Self::Private => 0,
            Self::Everyone => 1,
            Self::Devices(_) => 2,
        }
    }

    /// The kind's name: `private`, `everyone` or `devices`.
    #[must_use]
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Everyone => "everyone",
            Self::Devices(_) => "devices",
        }
    }

    /// The devices named (empty unless [`Scope::Devices`]).
    #[must_use]
    pub fn names(&self) -> &[String] {
        match self {
            Self::Devices(names) => names,
            _ => &[],
        }
    }

    /// Reads a scope (proto-spec.md §13.2).
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("scope.kind")? {
            0 => Ok(Self::Private),
            1 => Ok(Self::Everyone),
            2 => {
                let count = usize::from(r.u8("scope.count")?);
                if count == 0 || count > MAX_SCOPE_DEVICES {
                    return Err(r.invalid("scope.count", "must be 1 to 32"));
                }
                let mut names: Vec<String> = Vec::with_capacity(count);
                for _ in 0..count {
                    let name = read_device_name(r, "scope.name")?;
                    if names
                        .last()
                        .is_some_and(|last| last.as_str() >= name.as_str())
                    {
                        return Err(r.invalid("scope.name", "names must be in increasing order"));
                    }
                    names.push(name);
                }
                Ok(Self::Devices(names))
            }
            _ => Err(r.invalid("scope.kind", "must be 0, 1 or 2")),
        }
    }

    /// Appends the encoding of proto-spec.md §13.2 (also what is signed).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind_u8());
        if let Self::Devices(names) = self {
            out.push(u8::try_from(names.len()).unwrap_or(u8::MAX));
            for n in names.iter().take(MAX_SCOPE_DEVICES) {
                put_vec_u16(out, n.as_bytes());
            }
        }
    }
}

/// Reads a `DeviceName` (proto-spec.md §13.2).
pub(crate) fn read_device_name(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<String, DecodeError> {
    let bytes = r.vec_u16(field, 1, MAX_DEVICE_NAME_LEN)?;
    let name = std::str::from_utf8(bytes).map_err(|_| r.invalid(field, "not a device name"))?;
    if !is_device_name(name) {
        return Err(r.invalid(field, "not a device name"));
    }
    Ok(name.to_owned())
}

impl fmt::Display for Scope {
    /// The command-line form: `private`, `everyone`, or `a,b,c`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Devices(names) => f.write_str(&names.join(",")),
            other => f.write_str(other.kind_name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Scope, DecodeError> {
        let mut r = Reader::new("T", bytes);
        let s = Scope::read(&mut r)?;
        r.finish()?;
        Ok(s)
    }

    #[test]
    fn parse_sorts_and_round_trips() {
        assert_eq!(Scope::parse("private").unwrap(), Scope::Private);
        assert_eq!(Scope::parse("everyone").unwrap(), Scope::Everyone);
        let s = Scope::parse("phone, laptop,phone").unwrap();
        assert_eq!(s, Scope::Devices(vec!["laptop".into(), "phone".into()]));
        assert_eq!(s.to_string(), "laptop,phone");
        let mut out = Vec::new();
        s.encode(&mut out);
        assert_eq!(out, b"\x02\x02\x00\x06laptop\x00\x05phone");
        assert_eq!(decode(&out).unwrap(), s);
        assert_eq!(Scope::parse(","), Err(ScopeError::Empty));
        assert!(matches!(Scope::parse("a/b"), Err(ScopeError::BadName(_))));
        let many: Vec<String> = (0..33).map(|i| format!("d{i}")).collect();
        assert_eq!(Scope::devices(many), Err(ScopeError::TooMany(33)));
    }

    #[test]
    fn who_may_see() {
        let s = Scope::parse("b,c").unwrap();
        assert!(s.allows("a", "a") && s.allows("a", "b") && !s.allows("a", "d"));
        assert!(!Scope::Private.allows("a", "b"));
        assert!(Scope::Everyone.allows("server", "b"));
    }

    #[test]
    fn non_canonical_encodings_are_refused() {
        for bad in [
            &b"\x03"[..],
            b"\x02\x00",
            b"\x02\x01\x00\x00",
            b"\x02\x02\x00\x01b\x00\x01a",
            b"\x02\x02\x00\x01a\x00\x01a",
            b"\x02\x01\x00\x02.a",
            b"\x00\x00",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
