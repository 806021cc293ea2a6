-- Re-tagging: what each seen face was matched against, so that the enrolments and removals
-- made after it reach it (the re-tagger, `facerec_seams::retag`; a rename keeps the tags).
-- The identity of the nearest enrolled face (tagged or not): a removal re-matches the faces
-- it was nearest to.
ALTER TABLE facerec_seen_faces ADD COLUMN nearest_id BIGINT;
-- The change the gallery it was matched against had reached.
ALTER TABLE facerec_seen_faces ADD COLUMN gallery_seq BIGINT NOT NULL DEFAULT 0;
-- true: to be matched again against the whole gallery (recorded against a gallery behind the
-- store, or its nearest identity was removed).
ALTER TABLE facerec_seen_faces ADD COLUMN stale BOOLEAN NOT NULL DEFAULT false;
UPDATE facerec_seen_faces SET nearest_id = identity_id;
CREATE INDEX facerec_seen_stale ON facerec_seen_faces (id) WHERE stale;
CREATE INDEX facerec_seen_nearest ON facerec_seen_faces (nearest_id)
    WHERE nearest_id IS NOT NULL;
-- A bulk job's seen faces, to search within or delete.
CREATE INDEX facerec_seen_batch ON facerec_seen_faces (batch) WHERE batch IS NOT NULL;
-- Faces seen before re-tagging existed were matched against the whole gallery of their
-- time; the re-tagger starts from the change the store has reached.
INSERT INTO facerec_meta (key, value)
    SELECT 'retag_seq', last::TEXT FROM facerec_counter WHERE id = 1;
