-- The BI contract, schema segmentation_bi, is defined by the files in sql/bi/ from here on, one
-- per view or function and named after it; the numbered migrations before this one are its
-- history. `segmentation db upgrade` applies such a file again whenever its content changes, after
-- the numbered migrations (segmentation/bi_definitions.py): this records which version of each is
-- in place.
CREATE TABLE segmentation.bi_definitions (
    name       text PRIMARY KEY,            -- the file's name without .sql: the object it defines
    checksum   text NOT NULL,               -- sha256 of the file as applied
    applied_at timestamptz NOT NULL DEFAULT now()
);
