-- Several segmentations side by side (docs/design.md#several-segmentations). Each has its own
-- current run, history, retention, run lock, staged and rejected runs and model; `default` is
-- the one that was here before, whose BI views keep their current_* names. A named segmentation
-- gets its own views, segmentation_bi.<name>_run and so on, when it first runs
-- (segmentation.migrations.add_segmentation), rendered from the same files in sql/bi/.

-- The segmentations this database knows. The name rule is declared once, in
-- segmentation/segmentations.py; this CHECK is its pattern (a test holds the two together).
CREATE TABLE segmentation.segmentations (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO segmentation.segmentations (name) VALUES ('default');

ALTER TABLE segmentation.runs
    ADD COLUMN segmentation text NOT NULL DEFAULT 'default' REFERENCES segmentation.segmentations;
CREATE INDEX runs_segmentation_idx ON segmentation.runs (segmentation, run_id);

ALTER TABLE segmentation.current_run_log
    ADD COLUMN segmentation text NOT NULL DEFAULT 'default' REFERENCES segmentation.segmentations;
-- The current run of a segmentation: its newest row here.
CREATE INDEX current_run_log_segmentation_idx ON segmentation.current_run_log (segmentation, switch_id DESC);

-- History versions count per segmentation: 1, 2, 3, ... in each, so that a spell's last run is
-- the version before the one it ended in, whatever the other segmentations do meanwhile.
ALTER TABLE segmentation.runs DROP CONSTRAINT runs_history_version_key;
ALTER TABLE segmentation.runs ADD CONSTRAINT runs_history_version_key UNIQUE (segmentation, history_version);

ALTER TABLE segmentation.segment_spells ADD COLUMN segmentation text NOT NULL DEFAULT 'default';
-- customer_id first, as before: an erasure finds a customer's spells in every segmentation by it,
-- and within one segmentation the key still reads in (customer_id, ended_version) order.
ALTER TABLE segmentation.segment_spells DROP CONSTRAINT segment_spells_pkey;
ALTER TABLE segmentation.segment_spells ADD PRIMARY KEY (customer_id, segmentation, ended_version);

-- sql/007's view of every spell with where it began cannot tell one segmentation's history from
-- another's: the two BI views that read it now read their own segmentation's spells themselves
-- (sql/bi/customer_segment_history.sql and customer_segment_spells.sql), and come back from there.
DROP VIEW segmentation.segment_spell_versions CASCADE;

-- predict(customer, segmentation) for a name no segmentation has: the error it gives.
CREATE FUNCTION segmentation.no_segmentation(segmentation text)
RETURNS SETOF segmentation.prediction
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
    RAISE EXCEPTION 'there is no segmentation %; segmentation_bi.segmentations lists them', quote_literal(segmentation)
        USING ERRCODE = 'no_data_found';
END
$$;

-- predict calls it with the reader's rights: the reader may execute it, as the roles file grants
-- (sql/roles/), also when this migration runs as a login that may not apply that file.
DO $grants$
BEGIN
    IF to_regrole('segmentation_reader') IS NOT NULL THEN
        REVOKE ALL ON FUNCTION segmentation.no_segmentation(text) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION segmentation.no_segmentation(text) TO segmentation_reader;
    END IF;
END
$grants$;
