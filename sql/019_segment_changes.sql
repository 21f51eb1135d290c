-- Who moved (docs/bi.md#who-moved): the customers whose segment changed with a switch of the
-- current run (a publish, a rollback or a promotion), kept when the switch is made, so that the
-- change feed of a 10-million-customer run is read by its key, never by joining two runs.
--
-- segmentation.change_feeds: one row per switch whose changes are kept. The BI views
-- (sql/bi/current_segment_changes.sql, current_segment_transitions.sql) show a switch's changes
-- only when it has one, so a switch whose changes are not known (one made before this migration
-- that the block at the end cannot recover) shows none rather than "nobody moved".
-- segmentation.customer_changes: one row per customer whose segment differs between the run
-- current before the switch (from_run_id) and the run current after it (run_id): moved, entered
-- (from_segment_id NULL: not in the previous run) or left (to_segment_id NULL: not in the new
-- one). Customers who stayed have no row. A first switch (from_run_id NULL) keeps none: every
-- customer of the run entered, and the views read the run's own rows for it.
--
-- Written in the switch's transaction (segmentation.store.change_feed); retention deletes the feeds
-- of switches other than the current one whose run or previous run it let go; an erasure
-- (segmentation purge) deletes the customer's rows.

CREATE TABLE segmentation.change_feeds (
    switch_id     bigint PRIMARY KEY REFERENCES segmentation.current_run_log ON DELETE CASCADE,
    segmentation  text NOT NULL REFERENCES segmentation.segmentations,
    run_id        bigint NOT NULL REFERENCES segmentation.runs,   -- current from the switch on
    from_run_id   bigint REFERENCES segmentation.runs,            -- current before; NULL for the first
    recorded_at   timestamptz NOT NULL DEFAULT now()
);

-- No foreign key to change_feeds: a publish writes some 100,000 rows here, which a per-row check
-- would slow down; the feed's row is written in the same transaction, and deleted with them.
CREATE TABLE segmentation.customer_changes (
    switch_id        bigint NOT NULL,
    customer_id      bigint NOT NULL,
    from_segment_id  integer,   -- NULL: not in the previous run (entered)
    to_segment_id    integer,   -- NULL: not in the new run (left)
    PRIMARY KEY (switch_id, customer_id),
    CHECK (from_segment_id IS DISTINCT FROM to_segment_id)
);
-- An erasure finds a customer's rows by the id alone.
CREATE INDEX customer_changes_customer_idx ON segmentation.customer_changes (customer_id);

-- The current switch of every segmentation, when its changes can still be known: now, so the
-- views answer from the first day. From the two runs' rows when both are still here; else, the
-- usual night (a publish: the run is the newest in the history and the previous one the history
-- run before it, still kept), from the history: the spells that ended with the run are exactly
-- its changes (sql/007), each with the segment before, and the run's own rows give the segment
-- now. Otherwise not at all: the views show nothing for that switch until the next one.
DO $feeds$
DECLARE
    switch record;
    newest integer;
BEGIN
    FOR switch IN
        SELECT DISTINCT ON (l.segmentation) l.switch_id, l.segmentation, l.run_id, l.from_run_id,
               r.history_version AS version, f.history_version AS from_version,
               f.assignments_pruned_at AS from_pruned_at
        FROM segmentation.current_run_log AS l
        JOIN segmentation.runs AS r ON r.run_id = l.run_id
        LEFT JOIN segmentation.runs AS f ON f.run_id = l.from_run_id
        ORDER BY l.segmentation, l.switch_id DESC
    LOOP
        SELECT max(history_version) INTO newest FROM segmentation.runs WHERE segmentation = switch.segmentation;
        IF switch.from_run_id IS NULL THEN
            NULL;  -- a first switch: every customer of the run entered, and keeps no row
        ELSIF to_regclass(format('segmentation.customer_segments_run_%s', switch.run_id)) IS NULL THEN
            CONTINUE;
        ELSIF to_regclass(format('segmentation.customer_segments_run_%s', switch.from_run_id)) IS NOT NULL THEN
            EXECUTE format(
                'INSERT INTO segmentation.customer_changes (switch_id, customer_id, from_segment_id, to_segment_id)
                 SELECT %s, coalesce(o.customer_id, n.customer_id), o.segment_id, n.segment_id
                 FROM segmentation.%I AS o FULL JOIN segmentation.%I AS n USING (customer_id)
                 WHERE o.segment_id IS DISTINCT FROM n.segment_id',
                switch.switch_id, 'customer_segments_run_' || switch.from_run_id,
                'customer_segments_run_' || switch.run_id);
        ELSIF switch.version = newest AND switch.from_version = switch.version - 1
              AND switch.from_pruned_at IS NULL THEN
            EXECUTE format(
                'INSERT INTO segmentation.customer_changes (switch_id, customer_id, from_segment_id, to_segment_id)
                 SELECT %s, sp.customer_id, sp.segment_id, n.segment_id
                 FROM segmentation.segment_spells AS sp LEFT JOIN segmentation.%I AS n USING (customer_id)
                 WHERE sp.segmentation = %L AND sp.ended_version = %s',
                switch.switch_id, 'customer_segments_run_' || switch.run_id, switch.segmentation, switch.version);
        ELSE
            CONTINUE;
        END IF;
        INSERT INTO segmentation.change_feeds (switch_id, segmentation, run_id, from_run_id)
        VALUES (switch.switch_id, switch.segmentation, switch.run_id, switch.from_run_id);
    END LOOP;
END
$feeds$;

-- An erasure deletes a customer's rows here too, and counts them.
ALTER TABLE segmentation.purges ADD COLUMN change_rows bigint NOT NULL DEFAULT 0;   -- from customer_changes
