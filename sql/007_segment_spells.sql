-- History as validity ranges (a type 2 slowly changing dimension, as a dbt snapshot keeps
-- one), so that history grows with change, not with runs.
--
-- A run enters the history when it becomes published (publish or promote) and gets the next
-- history_version (1, 2, 3, ...). segmentation.segment_spells holds one row per ended spell:
-- the customer, the segment it was in (NULL: the customer was in none of the spell's runs),
-- and the version of the run in which that ended. A spell began where the customer's previous
-- row ended, or before the oldest run the history keeps. The spells still running are the
-- rows of the newest history run in customer_segments, which retention never drops; every
-- other history run's rows can be dropped and rebuilt from these (segmentation.store.spells).

ALTER TABLE segmentation.runs ADD COLUMN history_version integer UNIQUE;

-- A run made current again from the history has no distances: they are not kept there.
ALTER TABLE segmentation.customer_segments ALTER COLUMN distance DROP NOT NULL;

CREATE TABLE segmentation.segment_spells (
    customer_id    bigint NOT NULL,
    ended_version  integer NOT NULL,   -- runs.history_version of the run in which the spell ended
    segment_id     integer,            -- NULL: not in any run of the spell (before it was added, or removed)
    PRIMARY KEY (customer_id, ended_version)
);

-- The published runs whose rows are still here, in the order they were published, become the
-- history; each one's spells ended are its changes against the one before.
DO $history$
DECLARE
    run record;
    before bigint;
    version integer := 0;
BEGIN
    FOR run IN
        SELECT run_id FROM segmentation.runs
        WHERE status = 'published' AND assignments_pruned_at IS NULL
          AND to_regclass(format('segmentation.customer_segments_run_%s', run_id)) IS NOT NULL
        ORDER BY published_at, run_id
    LOOP
        version := version + 1;
        UPDATE segmentation.runs SET history_version = version WHERE run_id = run.run_id;
        IF before IS NOT NULL THEN
            EXECUTE format(
                'INSERT INTO segmentation.segment_spells (customer_id, ended_version, segment_id)
                 SELECT coalesce(o.customer_id, n.customer_id), %s, o.segment_id
                 FROM segmentation.%I AS o FULL JOIN segmentation.%I AS n USING (customer_id)
                 WHERE o.segment_id IS DISTINCT FROM n.segment_id',
                version, 'customer_segments_run_' || before, 'customer_segments_run_' || run.run_id);
        END IF;
        before := run.run_id;
    END LOOP;
END
$history$;

-- Every spell with where it began: the ended ones, and the running ones (the newest history
-- run's rows, since the customer's last ended spell). Versions, not run ids: history order.
CREATE VIEW segmentation.segment_spell_versions AS
SELECT sp.customer_id, sp.segment_id,
       lag(sp.ended_version) OVER (PARTITION BY sp.customer_id ORDER BY sp.ended_version) AS began_version,
       sp.ended_version
FROM segmentation.segment_spells AS sp
UNION ALL
SELECT cs.customer_id, cs.segment_id, ended.last_version, NULL
FROM segmentation.customer_segments AS cs
LEFT JOIN (SELECT customer_id, max(ended_version) AS last_version
           FROM segmentation.segment_spells GROUP BY customer_id) AS ended USING (customer_id)
WHERE cs.run_id = (SELECT run_id FROM segmentation.runs
                   WHERE history_version = (SELECT max(history_version) FROM segmentation.runs));

-- Same name and columns as before: one row per customer and published run whose assignments
-- are kept, now read from the spells.
CREATE OR REPLACE VIEW segmentation.customer_segment_history AS
SELECT sp.customer_id, r.run_id, r.published_at, sp.segment_id, s.segment_name
FROM segmentation.segment_spell_versions AS sp
JOIN segmentation.runs AS r
  ON r.history_version >= coalesce(sp.began_version, 1)
 AND (sp.ended_version IS NULL OR r.history_version < sp.ended_version)
 AND r.assignments_pruned_at IS NULL
JOIN segmentation.segments AS s ON s.run_id = r.run_id AND s.segment_id = sp.segment_id;

-- The spells themselves, as a dbt snapshot shows them: valid from the run the customer entered
-- the segment in (or the oldest run kept, when earlier) to the run it left in (NULL: still).
CREATE VIEW segmentation.customer_segment_spells AS
WITH kept AS (
    SELECT min(history_version) AS oldest, max(history_version) AS newest
    FROM segmentation.runs WHERE history_version IS NOT NULL AND assignments_pruned_at IS NULL
)
SELECT sp.customer_id, sp.segment_id, s.segment_name,
       f.run_id AS valid_from_run_id, f.published_at AS valid_from,
       t.run_id AS valid_to_run_id, t.published_at AS valid_to
FROM segmentation.segment_spell_versions AS sp
CROSS JOIN kept
JOIN segmentation.runs AS f ON f.history_version = greatest(sp.began_version, kept.oldest)
JOIN segmentation.runs AS l ON l.history_version = coalesce(sp.ended_version - 1, kept.newest)
LEFT JOIN segmentation.runs AS t ON t.history_version = sp.ended_version
JOIN segmentation.segments AS s ON s.run_id = l.run_id AND s.segment_id = sp.segment_id
WHERE sp.ended_version IS NULL OR sp.ended_version > kept.oldest;
