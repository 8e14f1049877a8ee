// Helpers of the per-backend suites (included by each suite, inside the
// module where `PROVIDER` names the crypto backend under test).

fn provider() -> &'static secured::crypto::CryptoProvider {
    secured::crypto::provider_by_name(PROVIDER).expect("backend compiled in")
}

fn device_config() -> secured::handshake::DeviceConfig {
    secured::testkit::pki().device_config_with(provider())
}

fn device_config_as_leaf(
    identity: std::sync::Arc<secured::pki::Identity>,
) -> secured::handshake::DeviceConfig {
    let mut c = device_config();
    c.identity = identity;
    c
}

/// device-1 for even `i`, device-2 for odd `i`.
fn device1_or_2(i: usize) -> secured::handshake::DeviceConfig {
    if i.is_multiple_of(2) {
        device_config()
    } else {
        device_config_as_leaf(secured::testkit::pki().device2.identity_with(provider()))
    }
}

fn server_config() -> secured::handshake::ServerConfig {
    secured::testkit::pki().server_config_with(provider())
}

async fn start_server_here() -> crate::common::TestServer {
    crate::common::start_server_with(server_config(), |_| {}).await
}
