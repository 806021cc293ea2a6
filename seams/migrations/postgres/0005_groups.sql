-- Grouping the unknown faces into people. Groups are worked out from the unknown faces
-- themselves; what is stored is a person's corrections: a seen face's pin (faces of one
-- pin are one group, faces of two pins never are; 0: taken out of grouping for good).
ALTER TABLE facerec_seen_faces ADD COLUMN group_pin BIGINT;
-- Counts the corrections made in a collection: pins of one call are numbered from it, and
-- a process holding the groups sees that they changed.
ALTER TABLE facerec_collections ADD COLUMN group_version BIGINT NOT NULL DEFAULT 0;
-- A collection's unknown faces, by id.
CREATE INDEX facerec_seen_unknown ON facerec_seen_faces (collection, id) WHERE identity_id IS NULL;
