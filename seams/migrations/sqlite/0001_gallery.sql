-- The gallery as rows: identities, their enrolled faces, the change feed and its counter.
CREATE TABLE facerec_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- One row; every change takes the next number inside its own transaction.
CREATE TABLE facerec_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO facerec_counter (id, last) VALUES (1, 0);
CREATE TABLE facerec_identities (
    id INTEGER PRIMARY KEY,
    collection TEXT NOT NULL DEFAULT 'default',
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (collection, name)
);
CREATE TABLE facerec_faces (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES facerec_identities (id) ON DELETE CASCADE,
    -- The change that enrolled it.
    seq INTEGER NOT NULL,
    -- 128 little-endian f32.
    embedding BLOB NOT NULL,
    -- The face's size in its source image (pixels; 0 when unknown).
    side REAL NOT NULL,
    source TEXT,
    created_ms INTEGER NOT NULL
);
CREATE INDEX facerec_faces_identity ON facerec_faces (identity_id);
CREATE INDEX facerec_faces_seq ON facerec_faces (seq);
CREATE TABLE facerec_changes (
    seq INTEGER PRIMARY KEY,
    collection TEXT NOT NULL DEFAULT 'default',
    -- enrol, remove or rename
    kind TEXT NOT NULL,
    -- The identity's name when the change was made.
    identity TEXT NOT NULL,
    renamed_to TEXT,
    created_ms INTEGER NOT NULL
);
