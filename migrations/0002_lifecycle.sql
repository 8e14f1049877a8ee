-- The certificate lifecycle (proto-spec.md §14): enrollment tokens, the
-- certificates the server issued, revocations and the CRL's number.

-- One-time enrollment tokens. Only the token key K = SHA-256(context ||
-- secret) is kept, never the token's text.
CREATE TABLE enrollment_tokens (
    id         BLOB   NOT NULL PRIMARY KEY, -- 16 bytes
    token_key  BLOB   NOT NULL,             -- 32 bytes
    name       TEXT   NOT NULL,             -- the device name it may enroll
    created_at BIGINT NOT NULL,             -- Unix time, milliseconds
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,                      -- NULL until redeemed
    serial     TEXT                         -- the certificate it gave
);

-- Every certificate the server issued (enrollment and renewal), so that
-- `admin revoke NAME` finds them even before the device first connects.
CREATE TABLE issued_certificates (
    serial     TEXT   NOT NULL PRIMARY KEY, -- lowercase hex
    name       TEXT   NOT NULL,
    not_after  BIGINT NOT NULL,             -- Unix time, milliseconds
    issued_at  BIGINT NOT NULL,
    how        TEXT   NOT NULL CHECK (how IN ('enroll', 'renew'))
);
CREATE INDEX issued_certificates_name ON issued_certificates (name);

-- Revoked certificates: what the CRL lists.
CREATE TABLE revocations (
    serial     TEXT   NOT NULL PRIMARY KEY, -- lowercase hex
    name       TEXT   NOT NULL,
    revoked_at BIGINT NOT NULL,             -- Unix time, milliseconds
    reason     TEXT,                        -- RFC 5280 reason, or NULL
    not_after  BIGINT NOT NULL              -- kept on the CRL until then
);

-- The number of the last CRL signed (RFC 5280 cRLNumber): one row.
CREATE TABLE crl_state (
    id     INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    number BIGINT  NOT NULL
);
