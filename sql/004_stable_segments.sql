-- Stable segment ids, names, drift figures, the quality gate and retention.

ALTER TABLE segmentation.runs
    ADD COLUMN previous_run_id       bigint REFERENCES segmentation.runs,  -- compared with
    ADD COLUMN customers_compared    bigint,            -- in both runs
    ADD COLUMN customers_changed     bigint,            -- of those, now in another segment
    ADD COLUMN churn                 double precision,  -- customers_changed / customers_compared
    ADD COLUMN adjusted_rand_index   double precision,
    ADD COLUMN customers_added       bigint,            -- only in this run
    ADD COLUMN customers_removed     bigint,            -- only in the previous run
    ADD COLUMN forced                boolean NOT NULL DEFAULT false,  -- published despite quality_issues
    ADD COLUMN quality_issues        text[],
    ADD COLUMN assignments_pruned_at timestamptz;       -- per-customer rows dropped by retention

ALTER TABLE segmentation.segments
    ADD COLUMN segment_name          text,
    ADD COLUMN previous_n_customers  bigint,            -- same segment id in the previous run
    ADD COLUMN size_change           bigint,
    ADD COLUMN centroid_shift        double precision;  -- standardised units; NULL for a new segment

CREATE OR REPLACE VIEW segmentation.current_run AS
SELECT run_id, flow_run_id, published_at, source_table, features, k,
       n_customers, n_quarantined, inertia, silhouette, params,
       previous_run_id, customers_compared, customers_changed, churn, adjusted_rand_index,
       customers_added, customers_removed, forced, quality_issues
FROM segmentation.runs
WHERE status = 'published'
ORDER BY published_at DESC, run_id DESC
LIMIT 1;

CREATE OR REPLACE VIEW segmentation.current_customer_segments AS
SELECT cs.run_id, cs.customer_id, cs.segment_id, cs.distance, s.segment_name
FROM segmentation.customer_segments AS cs
JOIN segmentation.segments AS s ON s.run_id = cs.run_id AND s.segment_id = cs.segment_id
WHERE cs.run_id = (SELECT run_id FROM segmentation.current_run);

CREATE OR REPLACE VIEW segmentation.current_segments AS
SELECT s.run_id, s.segment_id, s.n_customers, s.share,
       s.share_female, s.share_male, s.share_unknown_gender,
       s.segment_name, s.previous_n_customers, s.size_change, s.centroid_shift
FROM segmentation.segments AS s
WHERE s.run_id = (SELECT run_id FROM segmentation.current_run);

CREATE OR REPLACE VIEW segmentation.current_segment_centroids AS
SELECT c.run_id, c.segment_id, c.feature, c.centroid, c.mean, c.stddev, c.min, c.max, s.segment_name
FROM segmentation.segment_centroids AS c
JOIN segmentation.segments AS s ON s.run_id = c.run_id AND s.segment_id = c.segment_id
WHERE c.run_id = (SELECT run_id FROM segmentation.current_run);

-- How each customer moved, over the published runs whose per-customer rows are retained.
CREATE VIEW segmentation.customer_segment_history AS
SELECT cs.customer_id, cs.run_id, r.published_at, cs.segment_id, s.segment_name
FROM segmentation.customer_segments AS cs
JOIN segmentation.runs AS r ON r.run_id = cs.run_id AND r.status = 'published'
JOIN segmentation.segments AS s ON s.run_id = cs.run_id AND s.segment_id = cs.segment_id;
