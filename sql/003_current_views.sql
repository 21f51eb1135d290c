-- The BI contract: every current_ view shows the latest published run and nothing else.
-- Each view reads the pointer and the rows in one statement, so one snapshot: a query
-- never sees half a run or two runs mixed, however a publish interleaves with it.
CREATE VIEW segmentation.current_run AS
SELECT run_id, flow_run_id, published_at, source_table, features, k,
       n_customers, n_quarantined, inertia, silhouette, params
FROM segmentation.runs
WHERE status = 'published'
ORDER BY published_at DESC, run_id DESC
LIMIT 1;

CREATE VIEW segmentation.current_customer_segments AS
SELECT cs.run_id, cs.customer_id, cs.segment_id, cs.distance
FROM segmentation.customer_segments AS cs
WHERE cs.run_id = (SELECT run_id FROM segmentation.current_run);

CREATE VIEW segmentation.current_segments AS
SELECT s.run_id, s.segment_id, s.n_customers, s.share,
       s.share_female, s.share_male, s.share_unknown_gender
FROM segmentation.segments AS s
WHERE s.run_id = (SELECT run_id FROM segmentation.current_run);

CREATE VIEW segmentation.current_segment_centroids AS
SELECT c.run_id, c.segment_id, c.feature, c.centroid, c.mean, c.stddev, c.min, c.max
FROM segmentation.segment_centroids AS c
WHERE c.run_id = (SELECT run_id FROM segmentation.current_run);
