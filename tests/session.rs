//! A real server on 127.0.0.1 and real devices against it: the happy path,
//! certificate refusals, tampering, replay and truncation.
//!
//! The suite runs once per crypto backend compiled in.

mod common;

mod rustcrypto {
    const PROVIDER: &str = "rustcrypto";
    include!("suites/session.rs");
}

#[cfg(feature = "aws-lc")]
mod aws_lc {
    const PROVIDER: &str = "aws-lc";
    include!("suites/session.rs");
}
