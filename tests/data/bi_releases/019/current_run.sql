-- segmentation_bi.current_run. This file defines it, as each file in sql/bi/ defines the BI object
-- it is named after: change it here, never in a numbered migration; `segmentation db upgrade`
-- applies the change (segmentation/bi_definitions.py).
--
-- Which run is current is the newest row of segmentation.current_run_log (sql/005): a run can be
-- made current again (rollback) and a run can be kept without being made current (staged). Every
-- current_ view reads it and its rows in one statement: one snapshot, so a query never sees half
-- a run or two runs mixed, however a publish or a rollback interleaves.
--
-- Each segmentation has its own copy of this view: the default's is the one named here; a
-- segmentation NAME's is rendered from this file with its own names and, for the literal
-- 'default', which here only ever names the segmentation, its own name
-- (segmentation/segmentations.py, segmentation/bi_definitions.py).
CREATE OR REPLACE VIEW segmentation_bi.current_run AS
SELECT run_id, published_at, flow_run_id, source_table, features, k,
       n_customers, n_quarantined, inertia, silhouette, params,
       previous_run_id, customers_compared, customers_changed, churn, adjusted_rand_index,
       customers_added, customers_removed, forced, quality_issues
FROM segmentation.runs
WHERE run_id = (SELECT run_id FROM segmentation.current_run_log WHERE segmentation = 'default'
                ORDER BY switch_id DESC LIMIT 1);

COMMENT ON VIEW segmentation_bi.current_run IS
    'The current segmentation run, one row: the latest published run, unless an earlier one was made current again (rollback).';
COMMENT ON COLUMN segmentation_bi.current_run.run_id IS 'The segmentation run (segmentation.runs) these rows come from.';
COMMENT ON COLUMN segmentation_bi.current_run.published_at IS 'When the run was published: the segments are as of this time.';
COMMENT ON COLUMN segmentation_bi.current_run.flow_run_id IS 'The Prefect flow run that made it.';
COMMENT ON COLUMN segmentation_bi.current_run.source_table IS 'The table the customers were read from.';
COMMENT ON COLUMN segmentation_bi.current_run.features IS 'The columns the segments are built on.';
COMMENT ON COLUMN segmentation_bi.current_run.k IS 'Number of segments.';
COMMENT ON COLUMN segmentation_bi.current_run.n_customers IS 'Customers in this run (valid rows that were segmented).';
COMMENT ON COLUMN segmentation_bi.current_run.n_quarantined IS 'Source rows left out as invalid (missing, out of range, repeated id).';
COMMENT ON COLUMN segmentation_bi.current_run.inertia IS 'KMeans inertia: sum of squared distances to the centroids, standardised units.';
COMMENT ON COLUMN segmentation_bi.current_run.silhouette IS 'Silhouette score on a sample, -1 to 1: how well separated the segments are.';
COMMENT ON COLUMN segmentation_bi.current_run.params IS 'The run''s settings and flow parameters (JSON).';
COMMENT ON COLUMN segmentation_bi.current_run.previous_run_id IS 'The run it was compared with for drift.';
COMMENT ON COLUMN segmentation_bi.current_run.customers_compared IS 'Customers in both this run and the previous one.';
COMMENT ON COLUMN segmentation_bi.current_run.customers_changed IS 'Of those, customers now in another segment.';
COMMENT ON COLUMN segmentation_bi.current_run.churn IS 'customers_changed / customers_compared.';
COMMENT ON COLUMN segmentation_bi.current_run.adjusted_rand_index IS 'Agreement of the two runs'' assignments, 1 = identical, about 0 = unrelated.';
COMMENT ON COLUMN segmentation_bi.current_run.customers_added IS 'Customers only in this run.';
COMMENT ON COLUMN segmentation_bi.current_run.customers_removed IS 'Customers only in the previous run.';
COMMENT ON COLUMN segmentation_bi.current_run.forced IS 'Published although the quality gate failed (force_publish, approval or promotion).';
COMMENT ON COLUMN segmentation_bi.current_run.quality_issues IS 'The quality gate''s reasons, when it failed.';
