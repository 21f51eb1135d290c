-- Erasure of customers on request (segmentation purge): what was erased is recorded as counts,
-- never as the data or the customer ids.
CREATE TABLE segmentation.purges (
    purge_id          bigserial PRIMARY KEY,
    purged_at         timestamptz NOT NULL DEFAULT now(),
    customers         integer NOT NULL,   -- ids asked for
    assignment_rows   bigint NOT NULL,    -- from customer_segments, every kept run
    spell_rows        bigint NOT NULL,    -- from segment_spells
    quarantine_rows   bigint NOT NULL     -- from quarantine
);
