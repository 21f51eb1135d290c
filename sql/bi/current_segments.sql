-- segmentation_bi.current_segments. This file defines it, as each file in sql/bi/ defines the BI
-- object it is named after: change it here, never in a numbered migration; `segmentation db
-- upgrade` applies the change (segmentation/bi_definitions.py).
--
-- The current run's rows, read with the current run in one statement (see current_run.sql).
--
-- Each segmentation has its own copy of this view: the default's is the one named here; a
-- segmentation NAME's is rendered from this file with its own names and, for the literal
-- 'default', which here only ever names the segmentation, its own name
-- (segmentation/segmentations.py, segmentation/bi_definitions.py).
CREATE OR REPLACE VIEW segmentation_bi.current_segments AS
SELECT s.run_id, (SELECT published_at FROM segmentation_bi.current_run) AS published_at,
       s.segment_id, s.segment_name, s.n_customers, s.share,
       s.share_female, s.share_male, s.share_unknown_gender,
       s.previous_n_customers, s.size_change, s.centroid_shift, s.missing_feature, s.description,
       s.outlier_distance, s.n_outliers
FROM segmentation.segments AS s
WHERE s.run_id = (SELECT run_id FROM segmentation_bi.current_run);

COMMENT ON VIEW segmentation_bi.current_segments IS 'The current run''s segments, one row per segment.';
COMMENT ON COLUMN segmentation_bi.current_segments.run_id IS 'The segmentation run (segmentation.runs) these rows come from.';
COMMENT ON COLUMN segmentation_bi.current_segments.published_at IS 'When the run was published: the segments are as of this time.';
COMMENT ON COLUMN segmentation_bi.current_segments.segment_id IS 'Stable segment id: a segment keeps its id from run to run while its centroid stays close.';
COMMENT ON COLUMN segmentation_bi.current_segments.segment_name IS 'Readable name from the segment''s centroid against the population, e.g. "High income · Low spending · Age 30-44".';
COMMENT ON COLUMN segmentation_bi.current_segments.n_customers IS 'Customers in the segment.';
COMMENT ON COLUMN segmentation_bi.current_segments.share IS 'Share of the run''s customers in the segment, 0 to 1.';
COMMENT ON COLUMN segmentation_bi.current_segments.share_female IS 'Share of the segment''s customers recorded Female (Female or F); NULL when the source has no gender column, or none of its values reads as female or male.';
COMMENT ON COLUMN segmentation_bi.current_segments.share_male IS 'Share recorded Male (Male or M); NULL when the source has no gender column, or none of its values reads as female or male.';
COMMENT ON COLUMN segmentation_bi.current_segments.share_unknown_gender IS 'Share with no gender recorded, or one that reads as neither female nor male; NULL when the source has no gender column.';
COMMENT ON COLUMN segmentation_bi.current_segments.previous_n_customers IS 'Customers in the same segment id in the previous run; NULL for a new segment.';
COMMENT ON COLUMN segmentation_bi.current_segments.size_change IS 'n_customers - previous_n_customers.';
COMMENT ON COLUMN segmentation_bi.current_segments.centroid_shift IS 'How far the centroid moved since the previous run, standardised units; NULL for a new segment.';
COMMENT ON COLUMN segmentation_bi.current_segments.missing_feature IS 'For a missing-value segment (a feature with missing=segment), the feature its customers lack; NULL for a segment KMeans found.';
COMMENT ON COLUMN segmentation_bi.current_segments.description IS 'One sentence from the segment''s two or three most distinguishing traits, in plain words and original units (current_segment_profiles), e.g. "Spend about 3.1 times the average (4,906); mostly pro plan (62%)"; distinct within the run.';
COMMENT ON COLUMN segmentation_bi.current_segments.outlier_distance IS 'The 99th percentile of the distances of the segment''s customers in the run''s training set, standardised units: a customer further than this from the centroid is an outlier (current_customer_segments.outlier). 0 for a missing-value segment; NULL for runs made before migration 020.';
COMMENT ON COLUMN segmentation_bi.current_segments.n_outliers IS 'The segment''s customers that are outliers (further than outlier_distance), out of n_customers; about 1% of a segment whose customers look like its training set. NULL for runs made before migration 020.';
