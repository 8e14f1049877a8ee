// The fixed, test-only PKI of tests/data/fuzz-pki/, included by every
// target: the library embeds no key, the harness hands it over.
fn install_pki() {
    secured::fuzzing::set_pki(secured::fuzzing::FixedPki {
        ca_cert: include_bytes!("../../tests/data/fuzz-pki/ca.der"),
        ca_key: include_bytes!("../../tests/data/fuzz-pki/ca.key.der"),
        server_cert: include_bytes!("../../tests/data/fuzz-pki/server.der"),
        server_key: include_bytes!("../../tests/data/fuzz-pki/server.key.der"),
        device_cert: include_bytes!("../../tests/data/fuzz-pki/device.der"),
        device_key: include_bytes!("../../tests/data/fuzz-pki/device.key.der"),
    });
}
