-- segmentation_bi.segmentations. This file defines it, as each file in sql/bi/ defines the BI
-- object it is named after: change it here, never in a numbered migration; `segmentation db
-- upgrade` applies the change (segmentation/bi_definitions.py).
--
-- The segmentations side by side (sql/014), each with its current run: the newest row of
-- segmentation.current_run_log for it, as its own views read it. predict(customer,
-- segmentation) scores with the run named here.
CREATE OR REPLACE VIEW segmentation_bi.segmentations AS
SELECT g.name AS segmentation, c.run_id, r.published_at,
       CASE WHEN g.name = 'default' THEN 'current_' ELSE g.name || '_' END AS view_prefix
FROM segmentation.segmentations AS g
LEFT JOIN LATERAL (SELECT l.run_id FROM segmentation.current_run_log AS l
                   WHERE l.segmentation = g.name ORDER BY l.switch_id DESC LIMIT 1) AS c ON true
LEFT JOIN segmentation.runs AS r ON r.run_id = c.run_id;

COMMENT ON VIEW segmentation_bi.segmentations IS
    'The segmentations published side by side, one row each, with its current run. The default''s views are current_run, current_segments, ...; a segmentation NAME''s are NAME_run, NAME_segments, ....';
COMMENT ON COLUMN segmentation_bi.segmentations.segmentation IS 'The segmentation''s name (the flow parameter segmentation).';
COMMENT ON COLUMN segmentation_bi.segmentations.run_id IS 'Its current run; NULL until one is published.';
COMMENT ON COLUMN segmentation_bi.segmentations.published_at IS 'When the run was published: the segments are as of this time.';
COMMENT ON COLUMN segmentation_bi.segmentations.view_prefix IS 'How its views begin: current_ for the default (current_run, current_segments, ...), else NAME_ (NAME_run, NAME_segments, ...); its history views are customer_segment_history and customer_segment_spells, or NAME_customer_segment_history and NAME_customer_segment_spells.';
