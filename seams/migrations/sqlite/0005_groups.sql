-- Grouping the unknown faces into people. Groups are worked out from the unknown faces
-- themselves; what is stored is a person's corrections: a seen face's pin (faces of one
-- pin are one group, faces of two pins never are; 0: taken out of grouping for good).
ALTER TABLE facerec_seen_faces ADD COLUMN group_pin INTEGER;
-- Counts the corrections made in a collection: pins of one call are numbered from it, and
-- a process holding the groups sees that they changed.
ALTER TABLE facerec_collections ADD COLUMN group_version INTEGER NOT NULL DEFAULT 0;
-- A collection's unknown faces, by id.
CREATE INDEX facerec_seen_unknown ON facerec_seen_faces (collection, id) WHERE identity_id IS NULL;
-- Seen faces' ids are never used twice (SQLite would give the id of the newest face
-- deleted to the next one recorded): a process that holds faces by id would take a new
-- face for one it knew. The highest id deleted is kept, and a face gets an id past both.
CREATE TABLE facerec_seen_high (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO facerec_seen_high (id, last)
    VALUES (1, COALESCE((SELECT MAX(id) FROM facerec_seen_faces), 0));
CREATE TRIGGER facerec_seen_high_water AFTER DELETE ON facerec_seen_faces
    WHEN OLD.id > (SELECT last FROM facerec_seen_high WHERE id = 1)
BEGIN
    UPDATE facerec_seen_high SET last = OLD.id WHERE id = 1;
END;
