-- segmentation_bi.current_segment_centroids. This file defines it, as each file in sql/bi/ defines
-- the BI object it is named after: change it here, never in a numbered migration; `segmentation
-- db upgrade` applies the change (segmentation/bi_definitions.py).
--
-- Long format, like BigQuery ML's ML.CENTROIDS. The current run's rows, read with the current run
-- in one statement (see current_run.sql).
--
-- Each segmentation has its own copy of this view: the default's is the one named here; a
-- segmentation NAME's is rendered from this file with its own names and, for the literal
-- 'default', which here only ever names the segmentation, its own name
-- (segmentation/segmentations.py, segmentation/bi_definitions.py).
CREATE OR REPLACE VIEW segmentation_bi.current_segment_centroids AS
SELECT c.run_id, (SELECT published_at FROM segmentation_bi.current_run) AS published_at,
       c.segment_id, s.segment_name, c.feature, c.centroid, c.mean, c.stddev, c.min, c.max, c.level
FROM segmentation.segment_centroids AS c
JOIN segmentation.segments AS s ON s.run_id = c.run_id AND s.segment_id = c.segment_id
WHERE c.run_id = (SELECT run_id FROM segmentation_bi.current_run);

COMMENT ON VIEW segmentation_bi.current_segment_centroids IS
    'The current run''s segment profiles: one row per segment and feature, and per level for a category (long format).';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.run_id IS 'The segmentation run (segmentation.runs) these rows come from.';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.published_at IS 'When the run was published: the segments are as of this time.';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.segment_id IS 'Stable segment id: a segment keeps its id from run to run while its centroid stays close.';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.segment_name IS 'Readable name from the segment''s centroid against the population, e.g. "High income · Low spending · Age 30-44".';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.feature IS 'The source column.';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.centroid IS 'The segment''s centre in the column''s own units (gender: share Female; log1p undone; days_since in days; a category level: its share in the segment). A missing-value segment has no centre: the mean.';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.mean IS 'Mean of the column''s values over the segment''s customers, in its own units (a category level: the share of the segment''s customers with it).';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.stddev IS 'Standard deviation of the column over the segment''s customers.';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.min IS 'Smallest value in the segment.';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.max IS 'Largest value in the segment.';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.level IS 'For a category feature, the level this row is about ("(other)": every level outside the most frequent); NULL for a number.';
