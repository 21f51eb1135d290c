-- The key of segmentation.customer_segments led by the customer: (customer_id, run_id), not
-- (run_id, customer_id). Within a run's partition run_id is one value, so a key led by it
-- compares every pair of rows on its second column as well; led by the customer, a run's key
-- (partitions.add_key) builds in less than half the time on ids in no order, which hashed ids
-- (sql/018) always are (docs/performance.md#customer-ids-of-any-type). A customer's rows across
-- runs (the history, an erasure) are found by the key too.
--
-- Every kept run's key is built again here, once: BI readers of customer_segments wait for it
-- (docs/operations.md#upgrading).

SET LOCAL maintenance_work_mem = '256MB';

ALTER TABLE segmentation.customer_segments DROP CONSTRAINT customer_segments_pkey;
ALTER TABLE segmentation.customer_segments ADD PRIMARY KEY (customer_id, run_id);

-- A run's table not attached (a run still scoring while this migration runs, keyed already) gets
-- the new key too, so that it can be attached; waits for that run's load to commit.
DO $unattached$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT c.relname, k.conname FROM pg_class c
             JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'
             WHERE c.relnamespace = 'segmentation'::regnamespace AND c.relkind = 'r' AND NOT c.relispartition
               AND c.relname ~ '^customer_segments_run_[0-9]+$'
    LOOP
        EXECUTE format('ALTER TABLE segmentation.%I DROP CONSTRAINT %I, ADD PRIMARY KEY (customer_id, run_id)',
                       t.relname, t.conname);
    END LOOP;
END
$unattached$;
