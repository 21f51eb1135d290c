-- segmentation_bi.current_segment_changes. This file defines it, as each file in sql/bi/ defines
-- the BI object it is named after: change it here, never in a numbered migration; `segmentation
-- db upgrade` applies the change (segmentation/bi_definitions.py).
--
-- Who moved with the latest switch of the current run (a publish, a rollback or a promotion):
-- the customers whose segment differs between the run current before it and the current run,
-- kept when the switch was made (segmentation.customer_changes, sql/019), read by their key.
-- The switch, its rows and the current run in one statement (see current_run.sql): never the
-- changes of one run with the segments of another. No rows while the switch's changes are not
-- known (segmentation.change_feeds has no row for it). A first switch (no run current before)
-- keeps no rows: every customer of the run entered, read from the run's own rows.
--
-- Each segmentation has its own copy of this view: the default's is the one named here; a
-- segmentation NAME's is rendered from this file with its own names and, for the literal
-- 'default', which here only ever names the segmentation, its own name
-- (segmentation/segmentations.py, segmentation/bi_definitions.py).
CREATE OR REPLACE VIEW segmentation_bi.current_segment_changes AS
WITH feed AS (
    SELECT f.switch_id, f.run_id, f.from_run_id
    FROM segmentation.change_feeds AS f
    WHERE f.switch_id = (SELECT l.switch_id FROM segmentation.current_run_log AS l
                         WHERE l.segmentation = 'default' ORDER BY l.switch_id DESC LIMIT 1)
      AND f.run_id = (SELECT run_id FROM segmentation_bi.current_run)
)
-- The switch id and run id as scalar subqueries: PostgreSQL then reads the switch's rows by the
-- key, and for a first switch only the run's partition.
SELECT (SELECT feed.run_id FROM feed) AS run_id,
       (SELECT published_at FROM segmentation_bi.current_run) AS published_at,
       (SELECT feed.from_run_id FROM feed) AS from_run_id,
       c.customer_id, c.from_segment_id, c.to_segment_id,
       CASE WHEN c.from_segment_id IS NULL THEN 'entered' WHEN c.to_segment_id IS NULL THEN 'left'
            ELSE 'moved' END AS change
FROM segmentation.customer_changes AS c
WHERE c.switch_id = (SELECT feed.switch_id FROM feed)
UNION ALL
SELECT cs.run_id, (SELECT published_at FROM segmentation_bi.current_run), NULL::bigint,
       cs.customer_id, NULL::integer, cs.segment_id, 'entered'
FROM segmentation.customer_segments AS cs
-- A condition on no column of the rows: PostgreSQL checks it once, before reading any row, and
-- reads no row of the run unless the switch is a first one.
WHERE (SELECT feed.from_run_id IS NULL FROM feed)
  AND cs.run_id = (SELECT feed.run_id FROM feed);

COMMENT ON VIEW segmentation_bi.current_segment_changes IS
    'Who moved with the latest switch of the current run (publish, rollback or promotion): one row per customer whose segment differs between the run current before it and the current run (moved, entered or left); customers who stayed have none. What a CRM sync reads each night instead of every customer.';
COMMENT ON COLUMN segmentation_bi.current_segment_changes.run_id IS 'The current run (segmentation.runs): the customers'' segments now.';
COMMENT ON COLUMN segmentation_bi.current_segment_changes.published_at IS 'When the run was published: the segments are as of this time.';
COMMENT ON COLUMN segmentation_bi.current_segment_changes.from_run_id IS 'The run current before the latest switch, compared with; NULL when there was none (every customer entered).';
COMMENT ON COLUMN segmentation_bi.current_segment_changes.customer_id IS 'The customer''s id in the source table.';
COMMENT ON COLUMN segmentation_bi.current_segment_changes.from_segment_id IS 'The customer''s segment in the run current before; NULL when the customer was not in it (entered).';
COMMENT ON COLUMN segmentation_bi.current_segment_changes.to_segment_id IS 'The customer''s segment in the current run (current_customer_segments.segment_id); NULL when the customer is no longer in it (left).';
COMMENT ON COLUMN segmentation_bi.current_segment_changes.change IS 'entered (new in the current run), moved (to another segment) or left (in the previous run, not in the current one).';
