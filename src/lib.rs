//! secured: a daemon and device client speaking a mutually authenticated,
//! TLS-like protocol.
#![forbid(unsafe_code)]

pub mod crypto;
pub mod pki;
