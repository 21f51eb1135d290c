-- segmentation_bi.current_feature_drift. This file defines it, as each file in sql/bi/ defines the
-- BI object it is named after: change it here, never in a numbered migration; `segmentation db
-- upgrade` applies the change (segmentation/bi_definitions.py).
--
-- How the current run's inputs moved against the run published before it
-- (segmentation/core/input_drift.py). The current run's rows, read with the current run in one
-- statement (see current_run.sql).
--
-- Each segmentation has its own copy of this view: the default's is the one named here; a
-- segmentation NAME's is rendered from this file with its own names and, for the literal
-- 'default', which here only ever names the segmentation, its own name
-- (segmentation/segmentations.py, segmentation/bi_definitions.py).
CREATE OR REPLACE VIEW segmentation_bi.current_feature_drift AS
SELECT d.run_id, (SELECT published_at FROM segmentation_bi.current_run) AS published_at,
       d.feature, d.previous_run_id, d.psi,
       CASE WHEN d.psi IS NULL THEN NULL WHEN d.psi > 0.25 THEN 'large' WHEN d.psi > 0.1 THEN 'moderate'
            ELSE 'stable' END AS verdict
FROM segmentation.feature_distributions AS d
WHERE d.run_id = (SELECT run_id FROM segmentation_bi.current_run);

COMMENT ON VIEW segmentation_bi.current_feature_drift IS
    'How each feature of the current run moved against the run published before it: one row per feature.';
COMMENT ON COLUMN segmentation_bi.current_feature_drift.run_id IS 'The segmentation run (segmentation.runs) these rows come from.';
COMMENT ON COLUMN segmentation_bi.current_feature_drift.published_at IS 'When the run was published: the segments are as of this time.';
COMMENT ON COLUMN segmentation_bi.current_feature_drift.feature IS 'The source column.';
COMMENT ON COLUMN segmentation_bi.current_feature_drift.previous_run_id IS 'The published run compared with; NULL when there was none, or it had the feature in other units (another kind or transform).';
COMMENT ON COLUMN segmentation_bi.current_feature_drift.psi IS 'Population stability index against that run: over its deciles for a number, its level shares for a category. Below 0.1 stable, 0.1-0.25 moderate, above 0.25 large.';
COMMENT ON COLUMN segmentation_bi.current_feature_drift.verdict IS 'stable, moderate or large, from psi; NULL when not compared.';
