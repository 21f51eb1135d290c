-- Any id type (docs/design.md#customer-ids). A source whose id column is text, varchar, char or
-- uuid is read by a 64-bit key, hashtextextended(id::text, 0), computed in the row as the source
-- is read (segmentation/source/customer_keys.py declares that rule once). The runs' tables keep
-- bigint keys, so history, drift, stable segment ids and the in-memory comparison work as they
-- did; this table maps each key back to its id, so that every BI view of the segmentation
-- speaks the source's own id, in its own type. An integer id is its own key, and has no rows here.
--
-- One partition per segmentation, segmentation.customer_ids_<name>, created by its first run with
-- text or uuid ids (segmentation.source.customer_keys.record_ids): filled with no index, then
-- given its unique index on customer_key, then attached, which is three to four times faster at
-- 10 million ids than inserting into an index (docs/performance.md). The key is unique within a
-- segmentation, in each partition's own index.
CREATE TABLE segmentation.customer_ids (
    segmentation text   NOT NULL,
    customer_key bigint NOT NULL,
    customer_id  text   NOT NULL  -- the id as text; the views cast it back to the source's type
) PARTITION BY LIST (segmentation);

-- The id type a run read its source's ids as: NULL for an integer id (the key is the id), else
-- the column's type as format_type() prints it (text, uuid, character varying(32), ...).
ALTER TABLE segmentation.runs ADD COLUMN id_type text;
-- The id type the segmentation's BI views speak now: its current run's, followed at every switch
-- (publish, rollback, promote) in the switch's own transaction.
ALTER TABLE segmentation.segmentations ADD COLUMN id_type text;
