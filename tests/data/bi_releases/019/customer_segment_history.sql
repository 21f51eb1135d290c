-- segmentation_bi.customer_segment_history. This file defines it, as each file in sql/bi/ defines
-- the BI object it is named after: change it here, never in a numbered migration; `segmentation
-- db upgrade` applies the change (segmentation/bi_definitions.py).
--
-- Read from the spells (segmentation.segment_spells, sql/007 and 014): one row per customer and
-- published run of the segmentation whose assignments are kept, although only changes are stored.
--
-- Each segmentation has its own copy of this view: the default's is the one named here; a
-- segmentation NAME's is rendered from this file with its own names and, for the literal
-- 'default', which here only ever names the segmentation, its own name
-- (segmentation/segmentations.py, segmentation/bi_definitions.py).
CREATE OR REPLACE VIEW segmentation_bi.customer_segment_history AS
WITH spell_versions AS (
    -- The segmentation's spells with where each began: the ended ones, and the running ones (the
    -- rows of its newest history run, since the customer's last ended spell). Versions, not run
    -- ids: history order. The same text in customer_segment_history.sql and
    -- customer_segment_spells.sql (tests/test_segmentations.py holds them equal).
    SELECT sp.customer_id, sp.segment_id,
           lag(sp.ended_version) OVER (PARTITION BY sp.customer_id ORDER BY sp.ended_version) AS began_version,
           sp.ended_version
    FROM segmentation.segment_spells AS sp
    WHERE sp.segmentation = 'default'
    UNION ALL
    SELECT cs.customer_id, cs.segment_id, ended.last_version, NULL
    FROM segmentation.customer_segments AS cs
    LEFT JOIN (SELECT customer_id, max(ended_version) AS last_version
               FROM segmentation.segment_spells WHERE segmentation = 'default'
               GROUP BY customer_id) AS ended USING (customer_id)
    -- The run id as a scalar subquery: PostgreSQL then reads only the run's partition.
    WHERE cs.run_id = (SELECT run_id FROM segmentation.runs
                       WHERE segmentation = 'default'
                         AND history_version = (SELECT max(history_version) FROM segmentation.runs
                                                WHERE segmentation = 'default'))
)
SELECT sp.customer_id, r.run_id, r.published_at, sp.segment_id, s.segment_name
FROM spell_versions AS sp
JOIN segmentation.runs AS r
  ON r.segmentation = 'default'
 AND r.history_version >= coalesce(sp.began_version, 1)
 AND (sp.ended_version IS NULL OR r.history_version < sp.ended_version)
 AND r.assignments_pruned_at IS NULL
JOIN segmentation.segments AS s ON s.run_id = r.run_id AND s.segment_id = sp.segment_id;

COMMENT ON VIEW segmentation_bi.customer_segment_history IS
    'Each customer''s segment in every published run whose assignments are kept, one row per customer and run.';
COMMENT ON COLUMN segmentation_bi.customer_segment_history.customer_id IS 'The customer''s id in the source table.';
COMMENT ON COLUMN segmentation_bi.customer_segment_history.run_id IS 'The segmentation run (segmentation.runs) these rows come from.';
COMMENT ON COLUMN segmentation_bi.customer_segment_history.published_at IS 'When the run was published: the segments are as of this time.';
COMMENT ON COLUMN segmentation_bi.customer_segment_history.segment_id IS 'Stable segment id: a segment keeps its id from run to run while its centroid stays close.';
COMMENT ON COLUMN segmentation_bi.customer_segment_history.segment_name IS 'Readable name from the segment''s centroid against the population, e.g. "High income · Low spending · Age 30-44".';
