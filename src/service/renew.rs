//! `RNEW` (proto-spec.md §14.4): a device renews its certificate over its
//! authenticated session, for the key it holds or a new one.
//!
//! Authorisation: the request must name the session's device (a device
//! renews only itself), carry an acceptable RSA key and a self-signature
//! that verifies, which proves possession of the (possibly new) key. The
//! certificate is issued by the server's issuing CA with the device
//! profile and the configured lifetime, recorded in the index (so
//! `admin revoke NAME` finds it), and sent back in `CERT`.

use tracing::{info, warn};

use super::enroll::issue;
use super::{Context, Reply};
use crate::index::now_ms;
use crate::message::{AlertCode, CertMsg, Message, Rnew};
use crate::pki::{CertRequest, CsrError};

/// Answers an `RNEW` whose stream id the caller has checked.
pub(super) async fn handle(rnew: Rnew, cx: &Context<'_>) -> Reply {
    let Some(issuer) = cx.issuer else {
        return Reply::Close(
            AlertCode::EnrollmentUnavailable,
            "this server holds no issuing CA key",
        );
    };
    let request = match CertRequest::verify(&rnew.request, cx.provider) {
        Ok(r) => r,
        Err(CsrError::WeakKey { .. }) => {
            return Reply::Close(AlertCode::WeakKey, "the renewal request's key is too weak");
        }
        Err(e) => {
            warn!(error = %e, "refused a renewal request");
            return Reply::Close(AlertCode::BadRequest, "the renewal request was refused");
        }
    };
    if request.name() != cx.device.name() {
        warn!(
            requested = request.name(),
            "a device asked to renew another name"
        );
        return Reply::Close(
            AlertCode::NameMismatch,
            "a device may renew only its own name",
        );
    }
    let issued = match issue(issuer, &request, cx.validity_days) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "cannot issue a renewed certificate");
            return Reply::Close(AlertCode::InternalError, "cannot issue the certificate");
        }
    };
    if let Err(e) = cx
        .store
        .index()
        .record_issued(
            &issued.serial_hex,
            request.name(),
            issued.not_after_ms,
            now_ms(),
            "renew",
            None,
        )
        .await
    {
        tracing::error!(error = %e, "cannot record a renewed certificate");
        return Reply::Close(AlertCode::InternalError, "cannot record the certificate");
    }
    info!(
        old_serial = %cx.device.serial_hex(),
        serial = %issued.serial_hex,
        "renewed"
    );
    Reply::Send(Message::Cert(CertMsg {
        stream: rnew.stream,
        certificate: issued.certificate,
        chain: issuer.chain().to_vec(),
    }))
}
