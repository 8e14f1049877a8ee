-- The server's index: the devices it has seen, the files it stores and the
-- events that announce them (proto-spec.md §13.4, §13.9). Types and
-- statements stay within what PostgreSQL also accepts, except the
-- AUTOINCREMENT of events.id.

-- Every certificate a device authenticated with (or signed a file with).
-- Downloads send the uploader's certificate from here.
CREATE TABLE devices (
    name        TEXT   NOT NULL,
    serial      TEXT   NOT NULL,            -- lowercase hex
    certificate BLOB   NOT NULL,            -- DER
    first_seen  BIGINT NOT NULL,            -- Unix time, milliseconds
    last_seen   BIGINT NOT NULL,
    PRIMARY KEY (name, serial)
);

-- One row per stored file. The signer's certificate is the devices row
-- (owner, owner_serial).
CREATE TABLE files (
    id             BIGINT  NOT NULL PRIMARY KEY CHECK (id > 0), -- random, never reused
    owner          TEXT    NOT NULL,
    owner_serial   TEXT    NOT NULL,
    name           TEXT    NOT NULL,        -- the name the owner signed
    stored_as      TEXT    NOT NULL,        -- unique per owner (§8.3.4)
    kind           INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 3),
    size           BIGINT  NOT NULL CHECK (size >= 0),
    content_type   TEXT    NOT NULL,
    sha256         BLOB    NOT NULL,
    file_digest    BLOB    NOT NULL,
    signature      BLOB    NOT NULL,
    signed_version INTEGER NOT NULL CHECK (signed_version IN (1, 2)),
    signed_at      BIGINT  NOT NULL,        -- Unix time, seconds; 0 for version 1
    scope          INTEGER NOT NULL CHECK (scope IN (0, 1, 2)), -- private, everyone, devices
    stored_at      BIGINT  NOT NULL,        -- Unix time, milliseconds
    duration_ms    BIGINT  NOT NULL,
    blob           TEXT    NOT NULL UNIQUE, -- key in the blob store
    UNIQUE (owner, stored_as)
);

-- The devices named by a scope of kind 2.
CREATE TABLE file_readers (
    file_id BIGINT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    device  TEXT   NOT NULL,
    PRIMARY KEY (file_id, device)
);
CREATE INDEX file_readers_device ON file_readers (device);

-- One event per committed file, numbered in commit order; ids are never
-- reused, also after old events are pruned.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id BIGINT  NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    at      BIGINT  NOT NULL                -- Unix time, milliseconds
);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_file ON events (file_id);
