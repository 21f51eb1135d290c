-- segmentation_bi.customer_segment_history. This file defines it, as each file in sql/bi/ defines
-- the BI object it is named after: change it here, never in a numbered migration; `segmentation
-- db upgrade` applies the change (segmentation/bi_definitions.py).
--
-- Read from the spells (segmentation.segment_spell_versions, sql/007): one row per customer and
-- published run whose assignments are kept, although only changes are stored.
CREATE OR REPLACE VIEW segmentation_bi.customer_segment_history AS
SELECT sp.customer_id, r.run_id, r.published_at, sp.segment_id, s.segment_name
FROM segmentation.segment_spell_versions AS sp
JOIN segmentation.runs AS r
  ON r.history_version >= coalesce(sp.began_version, 1)
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
