-- What makes a segment different (segmentation.core.profiles): per run, segment, feature and
-- level, the segment against the population, and a sentence per segment that says it.

ALTER TABLE segmentation.segments ADD COLUMN description text;

CREATE TABLE segmentation.segment_profiles (
    run_id      bigint NOT NULL REFERENCES segmentation.runs ON DELETE CASCADE,
    segment_id  integer NOT NULL,
    feature     text NOT NULL,
    level       text,                        -- a category's level; NULL for a number
    value       double precision NOT NULL,   -- the segment's mean (a level: its share), own units
    population  double precision NOT NULL,   -- the same over the population
    z           double precision NOT NULL,   -- standardised difference (a level: of its 0/1 indicator)
    share       double precision,            -- a level's share of the segment
    lift        double precision,            -- share / the population's share
    rank        integer NOT NULL,            -- 1: the segment's most distinguishing trait (by |z|)
    CONSTRAINT segment_profiles_key UNIQUE NULLS NOT DISTINCT (run_id, segment_id, feature, level)
);
