-- segmentation_bi.segment_history. This file defines it, as each file in sql/bi/ defines the BI
-- object it is named after: change it here, never in a numbered migration; `segmentation db
-- upgrade` applies the change (segmentation/bi_definitions.py).
--
-- One row per time a run became current and segment of it, with the period it was current: a
-- chart of segment sizes over time is one query, right at any time grain (a day with two runs, a
-- rerun or a rollback, is not counted twice when the query takes the run current at the end of
-- the day, as docs/bi.md shows), without reading a customer row.
--
-- Each segmentation has its own copy of this view: the default's is the one named here; a
-- segmentation NAME's is rendered from this file with its own names (NAME_run_history), as
-- segmentation/segmentations.py and segmentation/bi_definitions.py do for every such file.
-- The periods are run_history's: one definition of when a run was current.
CREATE OR REPLACE VIEW segmentation_bi.segment_history AS
SELECT h.run_id, h.current_from, h.current_to, s.segment_id, s.segment_name, s.n_customers, s.share
FROM segmentation_bi.run_history AS h
JOIN segmentation.segments AS s ON s.run_id = h.run_id;

COMMENT ON VIEW segmentation_bi.segment_history IS
    'One row per time a run became current and segment of it, with the period it was current: segment sizes over time.';
COMMENT ON COLUMN segmentation_bi.segment_history.run_id IS 'The segmentation run (segmentation.runs).';
COMMENT ON COLUMN segmentation_bi.segment_history.current_from IS 'When the run became current.';
COMMENT ON COLUMN segmentation_bi.segment_history.current_to IS 'When the next run became current; NULL while it is current.';
COMMENT ON COLUMN segmentation_bi.segment_history.segment_id IS 'Stable segment id: a segment keeps its id from run to run while its centroid stays close.';
COMMENT ON COLUMN segmentation_bi.segment_history.segment_name IS 'The segment''s name in that run.';
COMMENT ON COLUMN segmentation_bi.segment_history.n_customers IS 'Customers in the segment in that run.';
COMMENT ON COLUMN segmentation_bi.segment_history.share IS 'Share of the run''s customers in the segment, 0 to 1.';
