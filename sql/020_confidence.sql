-- Confidence (docs/bi.md#how-sure-is-a-segment): how clearly each customer belongs to its segment.
--
-- segmentation.customer_segments.margin: the distance to the second-nearest centroid minus the
-- distance to the nearest, in the run's standardised units (those of distance), written by the
-- scoring pass in the same binary COPY as distance. NULL for a customer in a missing-value segment
-- (no second segment to compare with), in a run restored from the history (no distances), and in
-- every run made before this migration.
--
-- segmentation.segments.outlier_distance: the 99th percentile of the distances of the segment's
-- customers in the training set, computed once per run after the fit; a customer further from its
-- centroid than that is an outlier (the views and predict compare distance with it). 0 for a
-- missing-value segment (its customers meet its rule exactly: distance 0, never an outlier); NULL
-- for the segments of a run made before this migration.
-- segmentation.segments.n_outliers: the segment's customers (all of them, not the training set's)
-- further than outlier_distance, counted by the scoring pass; NULL before this migration.
--
-- segmentation.prediction, what predict returns, gains margin and outlier, computed as the run
-- computes them. The scoring functions of the runs kept before this migration return NULL for both:
-- their runs have no outlier_distance and no stored margins, and predict agrees with the views.

ALTER TABLE segmentation.customer_segments ADD COLUMN margin double precision;

-- A run's table not attached (a run still scoring while this migration runs) gets the column too,
-- so that it can be attached; waits for that run's load to commit.
DO $unattached$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT c.relname FROM pg_class c
             WHERE c.relnamespace = 'segmentation'::regnamespace AND c.relkind = 'r' AND NOT c.relispartition
               AND c.relname ~ '^customer_segments_run_[0-9]+$'
    LOOP
        EXECUTE format('ALTER TABLE segmentation.%I ADD COLUMN IF NOT EXISTS margin double precision', t.relname);
    END LOOP;
END
$unattached$;

ALTER TABLE segmentation.segments
    ADD COLUMN outlier_distance double precision,
    ADD COLUMN n_outliers bigint;

ALTER TYPE segmentation.prediction
    ADD ATTRIBUTE margin double precision,   -- second-nearest distance minus the distance, standardised units
    ADD ATTRIBUTE outlier boolean;           -- distance above the segment's outlier_distance

-- Each kept run's scoring function returns the two new columns, NULL: its body as it was, wrapped.
-- CREATE OR REPLACE keeps the function's owner and grants.
DO $wrap$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT p.proname, p.prosrc FROM pg_proc p
             WHERE p.pronamespace = 'segmentation'::regnamespace AND p.proname ~ '^predict_run_[0-9]+$'
    LOOP
        EXECUTE format(
            'CREATE OR REPLACE FUNCTION segmentation.%I(customer jsonb) RETURNS SETOF segmentation.prediction '
            'LANGUAGE sql STABLE PARALLEL SAFE AS %L',
            f.proname,
            'SELECT b.*, NULL::double precision, NULL::boolean FROM (' || f.prosrc || ') AS b');
    END LOOP;
END
$wrap$;
