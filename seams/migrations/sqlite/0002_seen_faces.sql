-- Every face recognised in an upload: where it was seen, its embedding and whom it was
-- matched to, so that "where does this person appear?" is one indexed query.
CREATE TABLE facerec_seen_faces (
    id INTEGER PRIMARY KEY,
    collection TEXT NOT NULL DEFAULT 'default',
    -- The upload's request id and the face's place in its answer: a request answered
    -- twice (at-least-once delivery) records its faces once.
    request_id TEXT NOT NULL,
    face_index INTEGER NOT NULL,
    -- The bulk job the upload belongs to, if any.
    batch TEXT,
    filename TEXT NOT NULL,
    -- The box in pixels of the upright image, the detector's score, the face's size.
    box_x REAL NOT NULL,
    box_y REAL NOT NULL,
    box_w REAL NOT NULL,
    box_h REAL NOT NULL,
    score REAL NOT NULL,
    side REAL NOT NULL,
    -- 128 little-endian f32.
    embedding BLOB NOT NULL,
    -- The enrolled identity it matched (NULL: unknown, or the identity was removed since).
    identity_id INTEGER,
    distance REAL,
    seen_ms INTEGER NOT NULL,
    UNIQUE (request_id, face_index)
);
CREATE INDEX facerec_seen_identity ON facerec_seen_faces (identity_id, id);
CREATE INDEX facerec_seen_time ON facerec_seen_faces (seen_ms);
