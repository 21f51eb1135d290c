-- segmentation_bi.customer_segment_spells. This file defines it, as each file in sql/bi/ defines
-- the BI object it is named after: change it here, never in a numbered migration; `segmentation
-- db upgrade` applies the change (segmentation/bi_definitions.py).
--
-- The spells as a dbt snapshot shows them (segmentation.segment_spell_versions, sql/007): valid
-- from the run the customer entered the segment in (or the oldest run kept, when earlier) to the
-- run it left in (NULL: still in it).
CREATE OR REPLACE VIEW segmentation_bi.customer_segment_spells AS
WITH kept AS (
    SELECT min(history_version) AS oldest, max(history_version) AS newest
    FROM segmentation.runs WHERE history_version IS NOT NULL AND assignments_pruned_at IS NULL
)
SELECT sp.customer_id, sp.segment_id, s.segment_name,
       f.run_id AS valid_from_run_id, f.published_at AS valid_from,
       t.run_id AS valid_to_run_id, t.published_at AS valid_to
FROM segmentation.segment_spell_versions AS sp
CROSS JOIN kept
JOIN segmentation.runs AS f ON f.history_version = greatest(sp.began_version, kept.oldest)
JOIN segmentation.runs AS l ON l.history_version = coalesce(sp.ended_version - 1, kept.newest)
LEFT JOIN segmentation.runs AS t ON t.history_version = sp.ended_version
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
