//! The TOML configuration file. Every key is optional; command-line flags
//! override the file, and the file overrides the built-in defaults.
//! Relative paths in the file are taken relative to the file's folder.
//!
//! ```toml
//! crypto = "aws-lc"        # RSA backend: "aws-lc" (default) or "rustcrypto"
//!
//! [log]
//! format = "json"          # or "text"
//! level = "info"
//!
//! [server]
//! listen = "0.0.0.0:7443"
//! cert = "certs/server.pem"
//! key = "keys/server.key"
//! ca = "certs/ca.pem"
//! data_dir = "data"
//! issuing_cert = "certs/issuing-ca.pem"  # enrollment and renewal, with...
//! issuing_key = "keys/issuing-ca.key"    # ...its key (the root's stays offline)
//! crl = "certs/crl.pem"
//! device_cert_days = 30
//! handshake_timeout_secs = 10
//! hello_timeout_secs = 3          # for the first frame of a connection
//! idle_timeout_secs = 300         # also bounds every write to a device
//! max_connections = 1024
//! max_unauthenticated = 128       # connections in the handshake, in all
//! max_unauthenticated_per_source = 32
//! early_drop_start = 64           # random early drop from here ...
//! early_drop_percent = 30         # ... with this chance, rising to 100 %
//! shutdown_grace_secs = 30
//! max_file_size = "64GiB"
//! quota_bytes_per_device = "256GiB"  # stored files plus uploads in flight
//! quota_files_per_device = 100000
//! max_uploads_per_device = 4         # at once, over all of a device's sessions
//! min_free_space = "1GiB"            # uploads that would leave less are refused
//!
//! [device]
//! server = "server.example.net:7443"
//! server_name = "server.example.net"
//! name = "device-1"        # selects certs/<name>.pem and keys/<name>.key
//! cert = "certs/device-1.pem"
//! key = "keys/device-1.key"
//! ca = "certs/ca.pem"
//!
//! [pki]
//! certs_dir = "certs"
//! keys_dir = "keys"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::logging::LogFormat;

/// The default listening address of `secured serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7443";

/// Where the server's files are when neither a flag nor the `[server]`
/// section names them: the layout `secured pki init` writes, relative to
/// the working directory. `serve` and `admin` share them.
pub mod server_defaults {
    /// The server's certificate.
    pub const CERT: &str = "certs/server.pem";
    /// The server's private key.
    pub const KEY: &str = "keys/server.key";
    /// The root CA certificate.
    pub const CA: &str = "certs/ca.pem";
    /// The data folder.
    pub const DATA_DIR: &str = "data";
    /// The issuing CA certificate.
    pub const ISSUING_CERT: &str = "certs/issuing-ca.pem";
    /// The issuing CA private key.
    pub const ISSUING_KEY: &str = "keys/issuing-ca.key";
    /// The CRL the server follows.
    pub const CRL: &str = "certs/crl.pem";
}

/// A path from its command-line flag, else the configuration file, else
/// `default`.
#[must_use]
pub fn pick_path(flag: Option<&PathBuf>, conf: Option<&PathBuf>, default: &str) -> PathBuf {
    flag.or(conf)
        .cloned()
        .unwrap_or_else(|| PathBuf::from(default))
}

/// Errors reading the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid for this program.
    #[error("configuration file {}{}: {message}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line of the problem, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// Output format.
    pub format: Option<LogFormat>,
    /// Filter directive.
    pub level: Option<String>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Listening address.
    pub listen: Option<String>,
    /// Server certificate.
    pub cert: Option<PathBuf>,
    /// Server private key.
    pub key: Option<PathBuf>,
    /// CA certificate that issues device certificates.
    pub ca: Option<PathBuf>,
    /// Data folder.
    pub data_dir: Option<PathBuf>,
    /// Issuing CA certificate (enrollment and renewal).
    pub issuing_cert: Option<PathBuf>,
    /// Issuing CA private key.
    pub issuing_key: Option<PathBuf>,
    /// Certificate revocation list.
    pub crl: Option<PathBuf>,
    /// Validity of the device certificates the server issues, in days.
    pub device_cert_days: Option<u32>,
    /// Handshake limit in seconds.
    pub handshake_timeout_secs: Option<u64>,
    /// Limit for the first frame of a connection, in seconds.
    pub hello_timeout_secs: Option<u64>,
    /// Idle limit in seconds.
    pub idle_timeout_secs: Option<u64>,
    /// Most concurrent sessions.
    pub max_connections: Option<usize>,
    /// Most connections still in the handshake.
    pub max_unauthenticated: Option<usize>,
    /// Most connections in the handshake from one address.
    pub max_unauthenticated_per_source: Option<usize>,
    /// Connections in the handshake from which random early drop starts.
    pub early_drop_start: Option<usize>,
    /// Chance of random early drop at its start, in percent.
    pub early_drop_percent: Option<u8>,
    /// Grace period for transfers at shutdown, in seconds.
    pub shutdown_grace_secs: Option<u64>,
    /// Largest upload, e.g. `"64GiB"`.
    pub max_file_size: Option<bytesize::ByteSize>,
    /// Most bytes one device may store (default 256 GiB).
    pub quota_bytes_per_device: Option<bytesize::ByteSize>,
    /// Most files one device may store (default 100,000).
    pub quota_files_per_device: Option<u64>,
    /// Most uploads of one device at once (default 4).
    pub max_uploads_per_device: Option<usize>,
    /// Free space the data folder's file system keeps (default 1 GiB).
    pub min_free_space: Option<bytesize::ByteSize>,
    /// Files the server publishes, visible to every device.
    pub publish: Option<Vec<PathBuf>>,
    /// Days notices are kept for watchers that reconnect (default 7).
    pub notice_retention_days: Option<u64>,
}

/// `[device]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    /// Server address, `host:port`.
    pub server: Option<String>,
    /// Name the server certificate must carry.
    pub server_name: Option<String>,
    /// Device name; selects default certificate and key files.
    pub name: Option<String>,
    /// Device certificate.
    pub cert: Option<PathBuf>,
    /// Device private key.
    pub key: Option<PathBuf>,
    /// CA certificate that issues the server certificate.
    pub ca: Option<PathBuf>,
    /// The CRL of the CA that issued the server's certificate: a revoked
    /// server is refused.
    pub crl: Option<PathBuf>,
    /// Who may see files sent without `--share`: `private` (the default),
    /// `everyone`, or device names separated by commas.
    pub share: Option<String>,
    /// Where `device watch` keeps the id of the last notice it handled
    /// (default: `.secured-watch-NAME` in the current folder).
    pub watch_state: Option<PathBuf>,
}

/// `[pki]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkiSection {
    /// Certificate folder.
    pub certs_dir: Option<PathBuf>,
    /// Private key folder.
    pub keys_dir: Option<PathBuf>,
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// RSA backend: `aws-lc` or `rustcrypto`.
    pub crypto: Option<String>,
    /// `[log]`
    #[serde(default)]
    pub log: LogSection,
    /// `[server]`
    #[serde(default)]
    pub server: ServerSection,
    /// `[device]`
    #[serde(default)]
    pub device: DeviceSection,
    /// `[pki]`
    #[serde(default)]
    pub pki: PkiSection,
}

impl FileConfig {
    /// Reads and parses `path`, resolving relative paths against its folder.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file (and line) at fault.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
            message: e.message().trim().to_owned(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve(base);
        Ok(cfg)
    }

    fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p.as_mut().filter(|p| p.is_relative()) {
                *path = base.join(&*path);
            }
        };
        fix(&mut self.server.cert);
        fix(&mut self.server.key);
        fix(&mut self.server.ca);
        fix(&mut self.server.data_dir);
        fix(&mut self.server.issuing_cert);
        fix(&mut self.server.issuing_key);
        fix(&mut self.server.crl);
        fix(&mut self.device.crl);
        fix(&mut self.device.cert);
        fix(&mut self.device.key);
        fix(&mut self.device.ca);
        fix(&mut self.device.watch_state);
        for path in self.server.publish.iter_mut().flatten() {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        fix(&mut self.pki.certs_dir);
        fix(&mut self.pki.keys_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secured.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"0.0.0.0:1\"\ncert = \"c.pem\"\nkey = \"/abs/k\"\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        let cfg = FileConfig::load(&path).unwrap();
        assert_eq!(cfg.server.listen.as_deref(), Some("0.0.0.0:1"));
        assert_eq!(cfg.server.cert, Some(dir.path().join("c.pem")));
        assert_eq!(cfg.server.key, Some(PathBuf::from("/abs/k")));
        assert_eq!(cfg.log.format, Some(LogFormat::Json));
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[server]\nlisten = \"x\"\nlisen = \"y\"\n").unwrap();
        let err = FileConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.toml, line 3"), "{err}");
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn the_readme_example_is_a_valid_configuration() {
        let readme = include_str!("../README.md");
        let block = readme
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("README.md has a toml block");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secured.toml");
        std::fs::write(&path, block).unwrap();
        let cfg = FileConfig::load(&path).unwrap();
        assert_eq!(cfg.crypto.as_deref(), Some("aws-lc"));
        assert!(cfg.server.max_file_size.is_some());
        assert_eq!(
            cfg.server.quota_bytes_per_device,
            Some(bytesize::ByteSize::gib(256))
        );
        assert_eq!(cfg.server.quota_files_per_device, Some(100_000));
        assert_eq!(cfg.server.max_uploads_per_device, Some(4));
        assert_eq!(cfg.server.min_free_space, Some(bytesize::ByteSize::gib(1)));
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = FileConfig::load(Path::new("/nonexistent/secured.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot read configuration file /nonexistent/secured.toml"));
    }
}
