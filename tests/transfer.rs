//! IMGX end to end: a real server on 127.0.0.1, real devices, files on disk.
//!
//! The suite runs once per crypto backend compiled in.

mod common;

mod rustcrypto {
    const PROVIDER: &str = "rustcrypto";
    include!("suites/transfer.rs");
}

#[cfg(feature = "aws-lc")]
mod aws_lc {
    const PROVIDER: &str = "aws-lc";
    include!("suites/transfer.rs");
}
