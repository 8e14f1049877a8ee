//! What the server trusts and signs with, replaced as a whole on reload
//! (SIGHUP) and when a new CRL appears (proto-spec.md §14.5).
//!
//! Handshakes take the current [`Trust`] when they start; a session keeps
//! the generation counter of [`TrustHandle::subscribe`] and, when it moves,
//! checks its device's serial against the new CRL, so a revocation closes
//! live sessions within the CRL poll interval.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::handshake::ServerConfig;
use crate::message::AlertCode;
use crate::pki::CertificateAuthority;
use crate::pki::crl::{CrlError, CrlIssuer, VerifiedCrl};
use crate::revocation;
use crate::store::Store;

/// How often the CRL file is looked at for a new version.
pub const CRL_POLL: Duration = Duration::from_secs(1);

/// The server's certificates and keys, and the revocation list.
pub struct Trust {
    /// Identity, root and protocol settings of the handshake.
    pub config: ServerConfig,
    /// The issuing CA with its key, when the server enrolls and renews.
    pub issuer: Option<Arc<CertificateAuthority>>,
    /// The CRL devices are checked against; `None` when revocation is not
    /// set up (no CRL file and no issuing CA to sign one).
    pub crl: Option<Arc<VerifiedCrl>>,
}

impl Trust {
    /// The revocation check of a device certificate (proto-spec.md
    /// §14.5): refused when the CRL lists its serial, and refused for all
    /// (fail closed) when the CRL is past its next update.
    ///
    /// # Errors
    /// The alert to send and the reason, as one sentence.
    pub fn check_serial(&self, serial: &[u8], now: SystemTime) -> Result<(), (AlertCode, String)> {
        let Some(crl) = &self.crl else {
            return Ok(());
        };
        crl.check_serial(serial, now).map_err(|e| match e {
            CrlError::Revoked { .. } => (AlertCode::CertificateRevoked, e.to_string()),
            other => (AlertCode::RevocationStale, other.to_string()),
        })
    }
}

/// The shared, replaceable [`Trust`].
#[derive(Clone)]
pub struct TrustHandle {
    current: Arc<RwLock<Arc<Trust>>>,
    generation: watch::Sender<u64>,
}

impl TrustHandle {
    /// A handle holding `trust`.
    #[must_use]
    pub fn new(trust: Trust) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(trust))),
            generation: watch::Sender::new(0),
        }
    }

    /// The trust in force now.
    #[must_use]
    pub fn current(&self) -> Arc<Trust> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Replaces the whole trust (a reload): new handshakes use it, and
    /// sessions re-check their device against its CRL.
    pub fn replace(&self, trust: Trust) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(trust);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Replaces only the CRL.
    pub fn set_crl(&self, crl: Option<Arc<VerifiedCrl>>) {
        {
            let mut guard = self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let old = Arc::clone(&guard);
            *guard = Arc::new(Trust {
                config: old.config.clone(),
                issuer: old.issuer.clone(),
                crl,
            });
        }
        self.generation.send_modify(|g| *g += 1);
    }

    /// A receiver that changes whenever the trust does.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// The CA whose CRL the server follows: the issuing CA when the server
/// holds it, else the first certificate of the server's own chain (the CA
/// that issued it), else the root.
///
/// # Errors
/// The CRL issuer's certificate does not fit the CRL profile.
pub fn crl_issuer(trust: &Trust) -> Result<CrlIssuer, CrlError> {
    let provider = trust.config.provider;
    if let Some(ca) = &trust.issuer {
        return CrlIssuer::from_verified_ca_cert(ca.cert_der(), provider);
    }
    match trust.config.identity.chain().first() {
        Some(der) => CrlIssuer::from_verified_ca_cert(der, provider),
        None => CrlIssuer::from_anchor(&trust.config.anchor),
    }
}

/// Watches the CRL file at `path`: loads it whenever it changes, and, when
/// the server holds the issuing CA's key, signs a fresh one from the index
/// whenever the current one is missing or past half its life. Runs until
/// `shutdown`.
pub async fn follow_crl(
    handle: TrustHandle,
    path: PathBuf,
    store: Store,
    lifetime: Duration,
    shutdown: CancellationToken,
) {
    let mut seen: Option<FileStamp> = None;
    loop {
        let trust = handle.current();
        if let Some(issuer) = &trust.issuer {
            let due = trust.crl.as_ref().is_none_or(|crl| {
                let half = crl
                    .next_update()
                    .duration_since(crl.this_update())
                    .unwrap_or_default()
                    / 2;
                SystemTime::now() >= crl.this_update() + half
            });
            if due {
                match revocation::publish(store.index(), issuer, &path, lifetime).await {
                    Ok(n) => info!(revoked = n, crl = %path.display(), "signed a fresh CRL"),
                    Err(e) => warn!(error = %e, "cannot sign a fresh CRL"),
                }
            }
        }
        let stamp = FileStamp::of(&path);
        if stamp != seen {
            seen = stamp;
            if seen.is_some() {
                // Parsing and verifying up to 1 MiB of CRL is blocking work.
                let (h, p) = (handle.clone(), path.clone());
                let _ = tokio::task::spawn_blocking(move || load_into(&h, &p)).await;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(CRL_POLL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Loads and verifies the CRL at `path` into `handle`; a CRL that does not
/// verify is refused and the previous one stays. Returns whether it was
/// loaded.
pub fn load_into(handle: &TrustHandle, path: &std::path::Path) -> bool {
    let trust = handle.current();
    let issuer = match crl_issuer(&trust) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "cannot check CRLs against the issuing CA");
            return false;
        }
    };
    match VerifiedCrl::load(path, &issuer, SystemTime::now()) {
        Ok(crl)
            if trust
                .crl
                .as_ref()
                .is_some_and(|held| crl.crl_number() < held.crl_number()) =>
        {
            warn!(
                crl = %path.display(),
                number = crl.crl_number(),
                "refused a CRL older than the one in use (a lower CRL number); keeping the newer one"
            );
            false
        }
        Ok(crl) => {
            info!(
                crl = %path.display(),
                number = crl.crl_number(),
                revoked = crl.entry_count(),
                "loaded the CRL"
            );
            if let Err(e) = crl.check_fresh(SystemTime::now()) {
                warn!(error = %e, "the CRL is out of date: every device is refused until a fresh one arrives");
            }
            handle.set_crl(Some(Arc::new(crl)));
            true
        }
        Err(e) => {
            warn!(error = %e, "refused the new CRL; keeping the previous one");
            false
        }
    }
}

/// What tells a changed file: inode, length and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    fn of(path: &std::path::Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}
