-- segmentation_bi.current_segment_transitions. This file defines it, as each file in sql/bi/
-- defines the BI object it is named after: change it here, never in a numbered migration;
-- `segmentation db upgrade` applies the change (segmentation/bi_definitions.py).
--
-- The transition matrix of the latest switch of the current run (a publish, a rollback or a
-- promotion): customers per (segment before, segment now), those who stayed included, so that
-- its rows add up to each run's segment sizes. From the switch's changes
-- (segmentation.customer_changes, sql/019) and the current run's segment sizes: who stayed in a
-- segment is its size less those who entered it, so no customer row of either run is read. The
-- switch, its rows and the current run in one statement (see current_run.sql). No rows while the
-- switch's changes are not known (segmentation.change_feeds has no row for it).
--
-- Each segmentation has its own copy of this view: the default's is the one named here; a
-- segmentation NAME's is rendered from this file with its own names and, for the literal
-- 'default', which here only ever names the segmentation, its own name
-- (segmentation/segmentations.py, segmentation/bi_definitions.py).
CREATE OR REPLACE VIEW segmentation_bi.current_segment_transitions AS
WITH feed AS (
    SELECT f.switch_id, f.run_id, f.from_run_id
    FROM segmentation.change_feeds AS f
    WHERE f.switch_id = (SELECT l.switch_id FROM segmentation.current_run_log AS l
                         WHERE l.segmentation = 'default' ORDER BY l.switch_id DESC LIMIT 1)
      AND f.run_id = (SELECT run_id FROM segmentation_bi.current_run)
), moves AS (
    SELECT c.from_segment_id, c.to_segment_id, count(*) AS n_customers
    FROM segmentation.customer_changes AS c
    WHERE c.switch_id = (SELECT feed.switch_id FROM feed)
    GROUP BY c.from_segment_id, c.to_segment_id
), cells AS (
    SELECT m.from_segment_id, m.to_segment_id, m.n_customers::bigint AS n_customers
    FROM moves AS m
    UNION ALL
    -- Each segment of the current run: those who stayed in it (its size less those who entered
    -- it); after a first switch, all of it entered.
    SELECT CASE WHEN feed.from_run_id IS NOT NULL THEN s.segment_id END, s.segment_id,
           s.n_customers - coalesce((SELECT sum(m.n_customers) FROM moves AS m
                                     WHERE m.to_segment_id = s.segment_id), 0)::bigint
    FROM feed
    JOIN segmentation.segments AS s ON s.run_id = feed.run_id
)
SELECT feed.run_id, (SELECT published_at FROM segmentation_bi.current_run) AS published_at, feed.from_run_id,
       cells.from_segment_id, b.segment_name AS from_segment_name,
       cells.to_segment_id, a.segment_name AS to_segment_name, cells.n_customers
FROM cells
CROSS JOIN feed
LEFT JOIN segmentation.segments AS b ON b.run_id = feed.from_run_id AND b.segment_id = cells.from_segment_id
LEFT JOIN segmentation.segments AS a ON a.run_id = feed.run_id AND a.segment_id = cells.to_segment_id
WHERE cells.n_customers > 0;

COMMENT ON VIEW segmentation_bi.current_segment_transitions IS
    'How customers moved between segments with the latest switch of the current run (publish, rollback or promotion): one row per (segment before, segment now) with customers in it, those who stayed in a segment included (from_segment_id = to_segment_id), so it is the full transition matrix: its n_customers add up to the previous run''s segment sizes by from_segment_id and to the current run''s by to_segment_id. For a Sankey chart.';
COMMENT ON COLUMN segmentation_bi.current_segment_transitions.run_id IS 'The current run (segmentation.runs): the customers'' segments now.';
COMMENT ON COLUMN segmentation_bi.current_segment_transitions.published_at IS 'When the run was published: the segments are as of this time.';
COMMENT ON COLUMN segmentation_bi.current_segment_transitions.from_run_id IS 'The run current before the latest switch, compared with; NULL when there was none (every customer entered).';
COMMENT ON COLUMN segmentation_bi.current_segment_transitions.from_segment_id IS 'The segment in the run current before; NULL for customers new in the current run (entered).';
COMMENT ON COLUMN segmentation_bi.current_segment_transitions.from_segment_name IS 'That segment''s name in the run current before; NULL with from_segment_id.';
COMMENT ON COLUMN segmentation_bi.current_segment_transitions.to_segment_id IS 'The segment in the current run; NULL for customers no longer in it (left). Equal to from_segment_id for those who stayed.';
COMMENT ON COLUMN segmentation_bi.current_segment_transitions.to_segment_name IS 'That segment''s name in the current run; NULL with to_segment_id.';
COMMENT ON COLUMN segmentation_bi.current_segment_transitions.n_customers IS 'Customers who went from from_segment_id to to_segment_id (never 0: empty cells have no row).';
