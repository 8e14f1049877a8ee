//! secured: a daemon and device client speaking a mutually authenticated,
//! TLS-like protocol.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod config;
pub mod crypto;
pub mod frame;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod index;
pub mod logging;
pub mod media;
pub mod message;
pub mod net;
pub mod pki;
pub mod record;
pub mod revocation;
pub mod server;
pub mod service;
pub mod session;
pub mod store;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod testkit;
pub mod transfer;
