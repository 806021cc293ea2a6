-- Collections: independent galleries in one store, each with its own identities, enrolled
-- faces, seen faces, change feed and re-tagging. 'default' always exists and holds what
-- was stored before collections.
CREATE TABLE facerec_collections (
    name TEXT PRIMARY KEY,
    -- The change number taken when it was created: a process that followed an earlier
    -- collection of the same name (deleted since) loads it again.
    created_seq INTEGER NOT NULL,
    -- The last change made in it: a seen face matched against a gallery before it is stale.
    last_seq INTEGER NOT NULL,
    -- Every seen face in it that is not stale has met every change up to here.
    retag_seq INTEGER NOT NULL,
    -- The re-tagging lease and its progress (JSON), if a process took it.
    retag_lease TEXT,
    created_ms INTEGER NOT NULL
);
INSERT INTO facerec_collections (name, created_seq, last_seq, retag_seq, retag_lease, created_ms)
    SELECT 'default', 0, c.last,
        COALESCE((SELECT CAST(value AS INTEGER) FROM facerec_meta WHERE key = 'retag_seq'), c.last),
        (SELECT value FROM facerec_meta WHERE key = 'retag_lease'), 0
    FROM facerec_counter c WHERE c.id = 1;
DELETE FROM facerec_meta WHERE key IN ('retag_seq', 'retag_lease');
-- A collection's change feed.
CREATE INDEX facerec_changes_collection ON facerec_changes (collection, seq);
-- A seen face's quality where it was found (`FaceQuality`): pose from its landmarks and
-- sharpness; NULL for faces recorded before.
ALTER TABLE facerec_seen_faces ADD COLUMN yaw REAL;
ALTER TABLE facerec_seen_faces ADD COLUMN roll REAL;
ALTER TABLE facerec_seen_faces ADD COLUMN sharpness REAL;
