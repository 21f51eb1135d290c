-- segmentation_bi.customer_segment_spells. This file defines it, as each file in sql/bi/ defines
-- the BI object it is named after: change it here, never in a numbered migration; `segmentation
-- db upgrade` applies the change (segmentation/bi_definitions.py).
--
-- The spells as a dbt snapshot shows them (segmentation.segment_spells, sql/007 and 014): valid
-- from the run the customer entered the segment in (or the oldest run kept, when earlier) to the
-- run it left in (NULL: still in it).
--
-- Each segmentation has its own copy of this view: the default's is the one named here; a
-- segmentation NAME's is rendered from this file with its own names and, for the literal
-- 'default', which here only ever names the segmentation, its own name
-- (segmentation/segmentations.py, segmentation/bi_definitions.py).
CREATE OR REPLACE VIEW segmentation_bi.customer_segment_spells AS
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
), kept AS (
    SELECT min(history_version) AS oldest, max(history_version) AS newest
    FROM segmentation.runs
    WHERE segmentation = 'default' AND history_version IS NOT NULL AND assignments_pruned_at IS NULL
)
SELECT sp.customer_id, sp.segment_id, s.segment_name,
       f.run_id AS valid_from_run_id, f.published_at AS valid_from,
       t.run_id AS valid_to_run_id, t.published_at AS valid_to
FROM spell_versions AS sp
CROSS JOIN kept
JOIN segmentation.runs AS f
  ON f.segmentation = 'default' AND f.history_version = greatest(sp.began_version, kept.oldest)
JOIN segmentation.runs AS l
  ON l.segmentation = 'default' AND l.history_version = coalesce(sp.ended_version - 1, kept.newest)
LEFT JOIN segmentation.runs AS t ON t.segmentation = 'default' AND t.history_version = sp.ended_version
JOIN segmentation.segments AS s ON s.run_id = l.run_id AND s.segment_id = sp.segment_id
WHERE sp.ended_version IS NULL OR sp.ended_version > kept.oldest;

COMMENT ON VIEW segmentation_bi.customer_segment_spells IS
    'Each customer''s spells in a segment (like a dbt snapshot): one row per customer and spell.';
COMMENT ON COLUMN segmentation_bi.customer_segment_spells.customer_id IS 'The customer''s id in the source table.';
COMMENT ON COLUMN segmentation_bi.customer_segment_spells.segment_id IS 'Stable segment id: a segment keeps its id from run to run while its centroid stays close.';
COMMENT ON COLUMN segmentation_bi.customer_segment_spells.segment_name IS 'Readable name from the segment''s centroid against the population, e.g. "High income · Low spending · Age 30-44".';
COMMENT ON COLUMN segmentation_bi.customer_segment_spells.valid_from_run_id IS 'The run the customer entered the segment in (or the oldest run kept, when earlier).';
COMMENT ON COLUMN segmentation_bi.customer_segment_spells.valid_from IS 'That run''s published_at.';
COMMENT ON COLUMN segmentation_bi.customer_segment_spells.valid_to_run_id IS 'The run the customer left the segment in; NULL while still in it.';
COMMENT ON COLUMN segmentation_bi.customer_segment_spells.valid_to IS 'That run''s published_at; NULL while still in the segment.';
