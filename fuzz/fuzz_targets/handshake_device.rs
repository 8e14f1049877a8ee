#![no_main]

use libfuzzer_sys::fuzz_target;

include!("pki.rs");

fuzz_target!(|data: &[u8]| {
    install_pki();
    secured::fuzzing::handshake_device(data);
});
