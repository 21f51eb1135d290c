-- segmentation_bi.current_customer_segments. This file defines it, as each file in sql/bi/ defines
-- the BI object it is named after: change it here, never in a numbered migration; `segmentation
-- db upgrade` applies the change (segmentation/bi_definitions.py).
--
-- The current run's rows, read with the current run in one statement (see current_run.sql). The
-- run id as a scalar subquery, not a join: PostgreSQL then reads only the run's partition.
--
-- Confidence (sql/020_confidence.sql): margin is stored with each row by the scoring pass; outlier
-- compares the row's distance with its segment's outlier_distance, so it is NULL where either is
-- (a run restored from the history has no distances, a run made before 020 no outlier_distance),
-- and false in a missing-value segment (distance 0, outlier_distance 0).
--
-- Each segmentation has its own copy of this view: the default's is the one named here; a
-- segmentation NAME's is rendered from this file with its own names and, for the literal
-- 'default', which here only ever names the segmentation, its own name
-- (segmentation/segmentations.py, segmentation/bi_definitions.py).
CREATE OR REPLACE VIEW segmentation_bi.current_customer_segments AS
SELECT cs.run_id, (SELECT published_at FROM segmentation_bi.current_run) AS published_at,
       cs.customer_id, cs.segment_id, s.segment_name, cs.distance,
       cs.margin, cs.distance > s.outlier_distance AS outlier
FROM segmentation.customer_segments AS cs
JOIN segmentation.segments AS s ON s.run_id = cs.run_id AND s.segment_id = cs.segment_id
WHERE cs.run_id = (SELECT run_id FROM segmentation_bi.current_run);

COMMENT ON VIEW segmentation_bi.current_customer_segments IS
    'Each customer''s segment in the current run, one row per customer.';
COMMENT ON COLUMN segmentation_bi.current_customer_segments.run_id IS 'The segmentation run (segmentation.runs) these rows come from.';
COMMENT ON COLUMN segmentation_bi.current_customer_segments.published_at IS 'When the run was published: the segments are as of this time.';
COMMENT ON COLUMN segmentation_bi.current_customer_segments.customer_id IS 'The customer''s id in the source table.';
COMMENT ON COLUMN segmentation_bi.current_customer_segments.segment_id IS 'Stable segment id: a segment keeps its id from run to run while its centroid stays close.';
COMMENT ON COLUMN segmentation_bi.current_customer_segments.segment_name IS 'Readable name from the segment''s centroid against the population, e.g. "High income · Low spending · Age 30-44".';
COMMENT ON COLUMN segmentation_bi.current_customer_segments.distance IS 'Distance to the segment''s centroid, in the run''s standardised feature units; NULL in a run restored from the history.';
COMMENT ON COLUMN segmentation_bi.current_customer_segments.margin IS 'How clearly the customer belongs to its segment: the distance to the second-nearest centroid minus distance, in the same standardised units (0: on the border between two segments). NULL in a missing-value segment (its rule, not a centroid, places the customer), in a run restored from the history, and in runs made before migration 020.';
COMMENT ON COLUMN segmentation_bi.current_customer_segments.outlier IS 'True when distance is above the 99th percentile of the distances of the segment''s customers in the run''s training set (current_segments.outlier_distance): the customer is far out for its segment. Always false in a missing-value segment; NULL in a run restored from the history and in runs made before migration 020.';
