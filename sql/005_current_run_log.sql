-- Which run is current is an explicit record, not "the latest published run": a run can be
-- made current again (rollback), and a run can be kept without being made current (staged).
-- One row each time the current run changes; the newest row names the current run. Every
-- current_ view reads it and its rows in one statement, so a switch, like a publish, is seen
-- by BI readers all at once.

ALTER TABLE segmentation.runs DROP CONSTRAINT runs_status_check;
ALTER TABLE segmentation.runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('running', 'published', 'staged', 'rejected', 'failed'));

CREATE TABLE segmentation.current_run_log (
    switch_id    bigserial PRIMARY KEY,
    switched_at  timestamptz NOT NULL DEFAULT now(),
    run_id       bigint NOT NULL REFERENCES segmentation.runs,
    from_run_id  bigint REFERENCES segmentation.runs,   -- current before; NULL for the first
    action       text NOT NULL CHECK (action IN ('publish', 'rollback', 'promote')),
    reason       text                                    -- given for a rollback or a promotion
);

-- The runs published so far, in the order they became current.
INSERT INTO segmentation.current_run_log (switched_at, run_id, from_run_id, action)
SELECT published_at, run_id, lag(run_id) OVER (ORDER BY published_at, run_id), 'publish'
FROM segmentation.runs
WHERE status = 'published'
ORDER BY published_at, run_id;

CREATE OR REPLACE VIEW segmentation.current_run AS
SELECT run_id, flow_run_id, published_at, source_table, features, k,
       n_customers, n_quarantined, inertia, silhouette, params,
       previous_run_id, customers_compared, customers_changed, churn, adjusted_rand_index,
       customers_added, customers_removed, forced, quality_issues
FROM segmentation.runs
WHERE run_id = (SELECT run_id FROM segmentation.current_run_log ORDER BY switch_id DESC LIMIT 1);

-- Runs rejected before this migration had their assignments dropped at once: say so.
UPDATE segmentation.runs SET assignments_pruned_at = coalesce(finished_at, now())
WHERE status IN ('published', 'rejected') AND assignments_pruned_at IS NULL
  AND to_regclass(format('segmentation.customer_segments_run_%s', run_id)) IS NULL;
