//! Alert codes (proto-spec.md §9).

use super::DecodeError;
use super::codec::Reader;

wire_codes! {
    /// The code carried by an `ALRT` message (proto-spec.md §9). Unknown codes are kept.
    pub enum AlertCode;
    /// A message arrived that is not allowed at this point.
    UnexpectedMessage = 10, "unexpected_message", "a message arrived that is not allowed at that point";
    /// A protected record failed authentication.
    BadRecordMac = 20, "bad_record_mac", "a record failed authentication (tampered, replayed or reordered)";
    /// A frame or record exceeded a size limit.
    RecordOverflow = 22, "record_overflow", "a frame exceeded the size limit";
    /// A message could not be decoded.
    DecodeError = 30, "decode_error", "a message was malformed";
    /// The handshake failed (e.g. a Finished MAC did not verify).
    HandshakeFailure = 40, "handshake_failure", "the Finished check failed (tampering, or a key that does not match)";
    /// The device's proof of possession (PREM signature) did not verify.
    DecryptError = 41, "decrypt_error", "the device could not prove it holds the key of its certificate";
    /// A certificate is malformed or fails a check not covered below.
    BadCertificate = 42, "bad_certificate", "a certificate was refused";
    /// A certificate uses an algorithm or extension this version does not accept.
    UnsupportedCertificate = 43, "unsupported_certificate", "a certificate uses an unsupported algorithm or extension";
    /// A certificate is not valid yet.
    CertificateNotYetValid = 44, "certificate_not_yet_valid", "a certificate is not valid yet";
    /// A certificate has expired.
    CertificateExpired = 45, "certificate_expired", "a certificate has expired";
    /// A certificate is for the wrong role (server vs device) or name.
    CertificateRole = 46, "certificate_role", "a certificate is for another role or name";
    /// A field had a value the protocol forbids (a file name with a path
    /// separator, more data than declared, …).
    IllegalParameter = 47, "illegal_parameter", "a message field had a forbidden value";
    /// A certificate was not issued by the trusted CA.
    UnknownCa = 48, "unknown_ca", "a certificate was not issued by the CA the other side trusts";
    /// A certificate has been revoked (it is on the issuing CA's CRL).
    CertificateRevoked = 49, "certificate_revoked", "a certificate has been revoked";
    /// The revocation list is past its next update, so revocation cannot
    /// be checked: the check fails closed.
    RevocationStale = 50, "revocation_stale", "the revocation list is out of date, so certificates cannot be checked";
    /// No protocol version in common.
    ProtocolVersion = 70, "protocol_version", "no protocol version in common";
    /// The sender failed internally.
    InternalError = 80, "internal_error", "the other side failed internally";
    /// A time limit ran out.
    Timeout = 90, "timeout", "a time limit ran out";
    /// The server is shutting down or at capacity; try again later.
    Unavailable = 100, "unavailable", "the server is shutting down or busy; try again later";
    /// The enrollment token is unknown, or the proof of it is wrong.
    BadToken = 110, "bad_token", "the enrollment token is unknown or wrong";
    /// The enrollment token was already redeemed.
    TokenUsed = 111, "token_used", "the enrollment token was already used";
    /// The enrollment token has expired.
    TokenExpired = 112, "token_expired", "the enrollment token has expired";
    /// The request names another device than the token (or the session).
    NameMismatch = 113, "name_mismatch", "the certificate request names another device than the token allows";
    /// The request's key is not RSA of an accepted size.
    WeakKey = 114, "weak_key", "the certificate request's key is too weak or not RSA";
    /// The request is malformed or its signature does not verify.
    BadRequest = 115, "bad_request", "the certificate request is malformed or its signature does not verify";
    /// The server does not issue certificates.
    EnrollmentUnavailable = 116, "enrollment_unavailable", "this server does not issue certificates";
}

impl std::fmt::Display for AlertCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.to_u16())
    }
}

pub(super) fn decode(body: &[u8]) -> Result<AlertCode, DecodeError> {
    let mut r = Reader::new("ALRT", body);
    let code = AlertCode::from_u16(r.u16("code")?);
    r.finish()?;
    Ok(code)
}
