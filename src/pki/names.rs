//! Certificate roles, server names and device names.
//!
//! A device's name becomes a storage folder name on the server, so the rules
//! here are deliberately narrow: 1 to 64 characters of `[A-Za-z0-9._-]`, not
//! starting with `.`. Server names are DNS names (lowercase, no wildcards) or
//! IP addresses, matched exactly against subjectAltName entries.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::PkiError;

/// Longest device name, in characters (also the X.509 upper bound for a
/// common name).
pub(crate) const MAX_DEVICE_NAME_LEN: usize = 64;
/// Longest DNS name, in characters, without a trailing dot.
const MAX_DNS_NAME_LEN: usize = 253;
/// Longest DNS label, in characters.
const MAX_DNS_LABEL_LEN: usize = 63;

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The certificate authority that signs every other certificate.
    Ca,
    /// The daemon: subjectAltName carries its names, EKU serverAuth.
    Server,
    /// A device client: the common name is the device name, EKU clientAuth.
    Device,
}

impl Role {
    /// The extendedKeyUsage purpose a leaf of this role must carry.
    pub(crate) fn purpose_name(self) -> &'static str {
        match self {
            Role::Ca => "none",
            Role::Server => "serverAuth",
            Role::Device => "clientAuth",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Ca => "CA",
            Role::Server => "server",
            Role::Device => "device",
        })
    }
}

/// A name a server certificate can be issued for and checked against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerName {
    /// A DNS name, validated and lowercase.
    Dns(String),
    /// An IP address; it matches only IP subjectAltName entries.
    Ip(IpAddr),
}

impl FromStr for ServerName {
    type Err = PkiError;

    /// Parses an IP address if the text is one, and otherwise a DNS name
    /// (letters, digits and `-` in dot-separated labels; stored lowercase).
    fn from_str(s: &str) -> Result<Self, PkiError> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(ServerName::Ip(ip));
        }
        match dns_name_problem(s) {
            None => Ok(ServerName::Dns(s.to_ascii_lowercase())),
            Some(reason) => Err(PkiError::InvalidServerName {
                name: s.to_owned(),
                reason,
            }),
        }
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerName::Dns(name) => f.write_str(name),
            ServerName::Ip(ip) => ip.fmt(f),
        }
    }
}

/// Why `name` is not an acceptable DNS name, if it is not.
fn dns_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("a server name cannot be empty");
    }
    if name.len() > MAX_DNS_NAME_LEN {
        return Some("a DNS name is at most 253 characters long");
    }
    if name.contains('*') {
        return Some("wildcard names are not supported");
    }
    let mut last_label = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Some("a DNS name cannot have empty labels (leading, trailing or double dots)");
        }
        if label.len() > MAX_DNS_LABEL_LEN {
            return Some("a DNS label is at most 63 characters long");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Some("a DNS name may only contain letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("a DNS label cannot start or end with '-'");
        }
        last_label = label;
    }
    if last_label.bytes().all(|b| b.is_ascii_digit()) {
        return Some("this looks like an IP address but is not a valid one");
    }
    None
}

/// Why `name` is not an acceptable device name (or certificate file stem),
/// if it is not. The reason completes "invalid device name X: ...".
pub(crate) fn device_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it cannot be empty")
    } else if name.len() > MAX_DEVICE_NAME_LEN {
        Some("it is longer than 64 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("it may only contain letters, digits, '.', '_' and '-'")
    } else if name.starts_with('.') {
        Some("it cannot start with '.'")
    } else {
        None
    }
}

/// Checks a device name: 1 to 64 characters of `[A-Za-z0-9._-]`, not
/// starting with `.`. Device names become folder names on the server.
///
/// # Errors
/// [`PkiError::InvalidDeviceName`] saying which rule the name breaks.
pub fn validate_device_name(name: &str) -> Result<(), PkiError> {
    match device_name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(PkiError::InvalidDeviceName {
            name: name.to_owned(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_display() {
        assert_eq!(Role::Ca.to_string(), "CA");
        assert_eq!(Role::Server.to_string(), "server");
        assert_eq!(Role::Device.to_string(), "device");
    }

    #[test]
    fn server_name_parsing() {
        assert_eq!(
            "LocalHost".parse::<ServerName>().unwrap(),
            ServerName::Dns("localhost".into())
        );
        assert_eq!(
            "127.0.0.1".parse::<ServerName>().unwrap(),
            ServerName::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            "::1".parse::<ServerName>().unwrap().to_string(),
            "::1".to_string()
        );
        assert_eq!(
            "a-b.example.com".parse::<ServerName>().unwrap().to_string(),
            "a-b.example.com"
        );
        for bad in [
            "",
            "*.example.com",
            "a..b",
            ".a",
            "a.",
            "-a.b",
            "a_b.c",
            "256.1.1.1",
            "exa mple",
            &"a".repeat(64),
        ] {
            let err = bad.parse::<ServerName>().unwrap_err();
            assert!(
                matches!(err, PkiError::InvalidServerName { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn device_names() {
        for good in ["device-1", "A.b_c-9", "x", &"d".repeat(64)] {
            validate_device_name(good).unwrap();
        }
        for bad in ["", ".hidden", "..", "a/b", "a b", "dév", &"d".repeat(65)] {
            let err = validate_device_name(bad).unwrap_err();
            assert!(err.to_string().starts_with("invalid device name"), "{err}");
        }
    }
}
