//! Shared integration-test support, one of each: a real server on
//! 127.0.0.1 port 0 and its events ([`server`]), the tampering proxy
//! ([`proxy`]), a device that speaks `IMGX` by hand ([`device`]), what is
//! on disk in the data folder ([`store`]), file contents to send
//! ([`files`]), what a raw connection receives ([`wire`]), a bounded poll
//! ([`wait`]), log capture ([`logs`]), the built binary ([`binary`]) and
//! the spec's refusal tables ([`spec`]).
//!
//! Every integration test binary includes this module and uses a part of
//! it, hence the allowance for what a given binary leaves unused.
#![allow(dead_code)]

pub mod binary;
pub mod device;
pub mod files;
pub mod logs;
pub mod proxy;
pub mod server;
pub mod spec;
pub mod store;
pub mod wait;
pub mod wire;

// The most used helpers, at the top; a binary that uses others leaves these
// unused.
#[allow(unused_imports)]
pub use logs::Logs;
#[allow(unused_imports)]
pub use server::{
    TestServer, next_ending, next_event, start_server, start_server_in, start_server_with,
    texts_until_closed,
};
