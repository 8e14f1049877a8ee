//! Test support shared by unit tests, integration tests and benchmarks: an
//! in-memory PKI generated once per process, and configurations built from
//! it. RSA key generation is the slow part of every test, so each key here
//! is generated once and certificate variants (expired, wrong role, …) are
//! issued for existing keys.
//!
//! Not part of the stable API.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use crate::crypto::{CryptoProvider, default_provider};
use crate::handshake::{DeviceConfig, ServerConfig};
use crate::pki::{CertificateAuthority, Identity, Role, ServerName, TrustAnchor, Validity};

/// Key size used by the test PKI (the protocol's minimum, for speed).
pub const TEST_BITS: usize = 2048;

/// A certificate and its PKCS#8 key, both DER.
pub struct TestLeaf {
    /// Certificate DER.
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER private key.
    pub key_der: Vec<u8>,
}

impl TestLeaf {
    /// The leaf as an [`Identity`] with the default provider.
    ///
    /// # Panics
    /// If the pair does not load: a bug in the test kit.
    #[must_use]
    pub fn identity(&self) -> Arc<Identity> {
        self.identity_with(default_provider())
    }

    /// The leaf as an [`Identity`] whose key lives in `provider`.
    ///
    /// # Panics
    /// If the pair does not load: a bug in the test kit.
    #[must_use]
    pub fn identity_with(&self, provider: &'static CryptoProvider) -> Arc<Identity> {
        Arc::new(
            Identity::from_der(self.cert_der.clone(), &self.key_der, provider)
                .expect("test identity loads"),
        )
    }

    /// The SubjectPublicKeyInfo of this leaf's key.
    #[must_use]
    pub fn spki_der(&self) -> Vec<u8> {
        self.identity().key().public_key_spki_der().to_vec()
    }
}

/// The test PKI: a CA with a server and a device, and an unrelated CA.
pub struct TestPki {
    /// The CA.
    pub ca: CertificateAuthority,
    /// Server certificate for `localhost` and `127.0.0.1`.
    pub server: TestLeaf,
    /// Device certificate `device-1`.
    pub device: TestLeaf,
    /// A second device, `device-2`.
    pub device2: TestLeaf,
    /// A CA nobody trusts, with a device certificate of its own.
    pub other_ca: CertificateAuthority,
    /// A device certificate issued by `other_ca`.
    pub other_device: TestLeaf,
}

fn leaf(ca: &CertificateAuthority, role: Role, name: &str, names: &[ServerName]) -> TestLeaf {
    let issued = ca
        .issue(role, name, names, TEST_BITS, Validity::days_from_now(30))
        .expect("test leaf issues");
    TestLeaf {
        cert_der: issued.cert_der,
        key_der: issued.key_pkcs8_der.to_vec(),
    }
}

/// The process-wide test PKI.
///
/// # Panics
/// If generation fails: a bug in the PKI module.
pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let provider = default_provider();
        let ca = CertificateAuthority::generate(
            "secured test CA",
            TEST_BITS,
            Validity::days_from_now(30),
            provider,
        )
        .expect("test CA generates");
        let server = leaf(&ca, Role::Server, "localhost", &server_names());
        let device = leaf(&ca, Role::Device, "device-1", &[]);
        let device2 = leaf(&ca, Role::Device, "device-2", &[]);
        let other_ca = CertificateAuthority::generate(
            "untrusted CA",
            TEST_BITS,
            Validity::days_from_now(30),
            provider,
        )
        .expect("other CA generates");
        let other_device = leaf(&other_ca, Role::Device, "device-1", &[]);
        TestPki {
            ca,
            server,
            device,
            device2,
            other_ca,
            other_device,
        }
    })
}

/// `localhost` and `127.0.0.1`.
#[must_use]
pub fn server_names() -> Vec<ServerName> {
    vec![
        ServerName::Dns("localhost".into()),
        ServerName::Ip([127, 0, 0, 1].into()),
    ]
}

impl TestPki {
    /// The provider the test PKI uses.
    #[must_use]
    pub fn provider(&self) -> &'static CryptoProvider {
        default_provider()
    }

    /// The CA as a trust anchor.
    #[must_use]
    pub fn anchor(&self) -> Arc<TrustAnchor> {
        Arc::new(self.ca.trust_anchor().clone())
    }

    /// Server configuration with the test server identity.
    #[must_use]
    pub fn server_config(&self) -> ServerConfig {
        self.server_config_with(self.provider())
    }

    /// Server configuration whose RSA operations use `provider`.
    #[must_use]
    pub fn server_config_with(&self, provider: &'static CryptoProvider) -> ServerConfig {
        ServerConfig {
            identity: self.server.identity_with(provider),
            anchor: Arc::new(
                TrustAnchor::from_der(self.ca.cert_der(), provider).expect("test anchor loads"),
            ),
            provider,
            versions: crate::message::SUPPORTED_VERSIONS,
        }
    }

    /// Device configuration for `device-1` dialling `localhost`.
    #[must_use]
    pub fn device_config(&self) -> DeviceConfig {
        self.device_config_as(self.device.identity())
    }

    /// Device configuration for `device-1` whose RSA operations use `provider`.
    #[must_use]
    pub fn device_config_with(&self, provider: &'static CryptoProvider) -> DeviceConfig {
        DeviceConfig {
            identity: self.device.identity_with(provider),
            anchor: Arc::new(
                TrustAnchor::from_der(self.ca.cert_der(), provider).expect("test anchor loads"),
            ),
            server_name: ServerName::Dns("localhost".into()),
            provider,
            versions: crate::message::SUPPORTED_VERSIONS,
        }
    }

    /// Device configuration with another identity (its provider included).
    #[must_use]
    pub fn device_config_as(&self, identity: Arc<Identity>) -> DeviceConfig {
        DeviceConfig {
            identity,
            anchor: self.anchor(),
            server_name: ServerName::Dns("localhost".into()),
            provider: self.provider(),
            versions: crate::message::SUPPORTED_VERSIONS,
        }
    }

    /// Device configuration for a device called `name` (a certificate for
    /// `device-1`'s key: no key generation), offering `versions`.
    ///
    /// # Panics
    /// If issuing fails or `name` is not a device name.
    #[must_use]
    pub fn device_named(&self, name: &str, versions: &'static [u16]) -> DeviceConfig {
        let leaf = self.reissue(
            &self.device,
            Role::Device,
            name,
            &[],
            Validity::days_from_now(30),
        );
        DeviceConfig {
            versions,
            ..self.device_config_as(leaf.identity())
        }
    }

    /// A certificate from the test CA for the key of `key_of`, with the
    /// given role, name and validity: variants without new key generation.
    ///
    /// # Panics
    /// If issuing fails.
    #[must_use]
    pub fn reissue(
        &self,
        key_of: &TestLeaf,
        role: Role,
        name: &str,
        names: &[ServerName],
        validity: Validity,
    ) -> TestLeaf {
        let cert_der = self
            .ca
            .issue_for_key(role, name, names, &key_of.spki_der(), validity)
            .expect("variant issues");
        TestLeaf {
            cert_der,
            key_der: key_of.key_der.clone(),
        }
    }

    /// A validity window that ended yesterday.
    #[must_use]
    pub fn expired() -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(10 * 86_400),
            not_after: now - Duration::from_secs(86_400),
        }
    }

    /// A validity window that starts tomorrow.
    #[must_use]
    pub fn not_yet_valid() -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now + Duration::from_secs(86_400),
            not_after: now + Duration::from_secs(10 * 86_400),
        }
    }
}

/// A device that completes the handshake by hand, pausing `pause` between
/// the server's `HELO` and its own `PREM` (a slow signature or a slow
/// link), all within `limit`. Used to check that a flood does not evict
/// devices that are making progress.
///
/// # Errors
/// What went wrong, as text (a refusal, an alert, a timeout).
pub async fn handshake_with_pause(
    addr: std::net::SocketAddr,
    config: DeviceConfig,
    pause: Duration,
    limit: Duration,
) -> Result<(), String> {
    use futures_util::{SinkExt, StreamExt};

    use crate::frame::FrameCodec;
    use crate::handshake::DeviceStart;

    let run = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut framed = tokio_util::codec::Framed::new(stream, FrameCodec::new());
        let (state, helo) = DeviceStart::new(config)
            .start()
            .map_err(|e| e.to_string())?;
        framed.send(helo).await.map_err(|e| e.to_string())?;
        let reply = framed
            .next()
            .await
            .ok_or("closed before the server HELO")?
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(pause).await;
        let (state, frames) = state
            .handle(reply, SystemTime::now())
            .map_err(|e| e.to_string())?;
        for f in frames {
            framed.feed(f).await.map_err(|e| e.to_string())?;
        }
        SinkExt::<crate::frame::Frame>::flush(&mut framed)
            .await
            .map_err(|e| e.to_string())?;
        let fini = framed
            .next()
            .await
            .ok_or("closed before the server FINI")?
            .map_err(|e| e.to_string())?;
        state.handle(fini).map(|_| ()).map_err(|e| e.to_string())
    };
    tokio::time::timeout(limit, run)
        .await
        .map_err(|_| format!("no handshake within {limit:?}"))?
}

/// What [`flood`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct FloodStats {
    /// Connections made.
    pub connections: u64,
    /// Of those, connections that sent garbage and went away.
    pub garbage: u64,
}

/// Opens connections to `addr` from `source` as fast as it can until
/// `until`: every other one stays silent (at most `hold` are kept open, the
/// oldest dropped first), the others send a few bytes of garbage and close.
/// Bounded by `until`; loopback only.
pub async fn flood(
    addr: std::net::SocketAddr,
    source: std::net::IpAddr,
    until: std::time::Instant,
    hold: usize,
) -> FloodStats {
    use tokio::io::AsyncWriteExt;

    let mut stats = FloodStats::default();
    let mut silent = std::collections::VecDeque::with_capacity(hold);
    while std::time::Instant::now() < until {
        let socket = match source {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        };
        let Ok(socket) = socket else { break };
        if socket.bind((source, 0).into()).is_err() {
            break;
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        let Ok(Ok(mut stream)) = tokio::time::timeout(left, socket.connect(addr)).await else {
            continue;
        };
        stats.connections += 1;
        if stats.connections % 2 == 0 {
            let _ = stream.write_all(b"GET / HTTP/1.1\r\n\r\n\x00\xff").await;
            stats.garbage += 1;
        } else {
            if silent.len() >= hold {
                silent.pop_front();
            }
            silent.push_back(stream);
        }
    }
    stats
}
