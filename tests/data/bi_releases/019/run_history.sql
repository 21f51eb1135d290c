-- segmentation_bi.run_history. This file defines it, as each file in sql/bi/ defines the BI object
-- it is named after: change it here, never in a numbered migration; `segmentation db upgrade`
-- applies the change (segmentation/bi_definitions.py).
--
-- One row per time a run became current (a publish, a rollback, a promotion: a row of
-- segmentation.current_run_log), with the period it was current: a chart of quality over time is
-- one query, right at any time grain, without reading a customer row. A run made current twice has
-- two rows, one per period.
--
-- Each segmentation has its own copy of this view: the default's is the one named here; a
-- segmentation NAME's is rendered from this file with its own names and, for the literal
-- 'default', which here only ever names the segmentation, its own name
-- (segmentation/segmentations.py, segmentation/bi_definitions.py).
CREATE OR REPLACE VIEW segmentation_bi.run_history AS
SELECT l.run_id, l.switched_at AS current_from,
       lead(l.switched_at) OVER (ORDER BY l.switch_id) AS current_to,
       l.action, r.k, r.n_customers, r.n_quarantined, r.silhouette, r.inertia, r.churn,
       r.customers_changed, r.customers_added, r.customers_removed, r.forced
FROM segmentation.current_run_log AS l
JOIN segmentation.runs AS r ON r.run_id = l.run_id
WHERE l.segmentation = 'default';

COMMENT ON VIEW segmentation_bi.run_history IS
    'One row per time a run became current (publish, rollback, promotion), with the period it was current and its figures.';
COMMENT ON COLUMN segmentation_bi.run_history.run_id IS 'The segmentation run (segmentation.runs).';
COMMENT ON COLUMN segmentation_bi.run_history.current_from IS 'When it became current.';
COMMENT ON COLUMN segmentation_bi.run_history.current_to IS 'When the next run became current; NULL while it is current.';
COMMENT ON COLUMN segmentation_bi.run_history.action IS 'How it became current: publish, rollback or promote.';
COMMENT ON COLUMN segmentation_bi.run_history.k IS 'Number of segments.';
COMMENT ON COLUMN segmentation_bi.run_history.n_customers IS 'Customers in the run.';
COMMENT ON COLUMN segmentation_bi.run_history.n_quarantined IS 'Source rows left out as invalid.';
COMMENT ON COLUMN segmentation_bi.run_history.silhouette IS 'Silhouette score on a sample, -1 to 1.';
COMMENT ON COLUMN segmentation_bi.run_history.inertia IS 'KMeans inertia, standardised units.';
COMMENT ON COLUMN segmentation_bi.run_history.churn IS 'Share of customers in both runs whose segment changed against the run it was compared with.';
COMMENT ON COLUMN segmentation_bi.run_history.customers_changed IS 'Customers in another segment than in the run it was compared with.';
COMMENT ON COLUMN segmentation_bi.run_history.customers_added IS 'Customers only in this run.';
COMMENT ON COLUMN segmentation_bi.run_history.customers_removed IS 'Customers only in the run it was compared with.';
COMMENT ON COLUMN segmentation_bi.run_history.forced IS 'Published although the quality gate failed.';
