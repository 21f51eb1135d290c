-- segmentation_bi.predict, all three of them. This file defines them, as each file in sql/bi/ defines
-- the BI object it is named after: change them here, never in a numbered migration;
-- `segmentation db upgrade` applies the change (segmentation/bi_definitions.py).
--
-- Scoring in SQL (segmentation/store/scoring.py): each kept model has its own function,
-- segmentation.predict_run_<run_id>(customer jsonb). Both predict functions return SETOF
-- segmentation.prediction (run_id bigint, segment_id integer, segment_name text, distance double
-- precision, margin double precision, outlier boolean), a type of sql/006_scoring.sql (margin and
-- outlier: sql/020_confidence.sql): one row per customer, with NULL segment when the customer
-- cannot be scored. margin and outlier are those the run's views show for a customer with the
-- same values: NULL margin and false outlier in a missing-value segment, both NULL for runs made
-- before 020. SQL-standard bodies (BEGIN ATOMIC) are resolved when created, so a reader calls the
-- per-run functions in segmentation through them without USAGE on that schema, and PostgreSQL
-- still inlines them.

-- predict(customer, run_id), any run whose model is kept, is not written here: its body is one
-- branch per kept model (a constant run_id leaves only its own branch after planning) and
-- no_model() for any other run_id, so it is rewritten whenever a model is kept or dropped, by
-- route_predict(), the one place that writes it (segmentation.store.scoring calls it).
CREATE OR REPLACE FUNCTION segmentation.route_predict() RETURNS void
LANGUAGE plpgsql
AS $route$
DECLARE
    branches text;
    kept bigint[];
BEGIN
    -- Runs of different segmentations may keep or drop models at the same time: one rewrite at a
    -- time (two at once fail with "tuple concurrently updated"), each reading the models kept by
    -- then. The key is any fixed number other than the migration and run locks (0x5E60003).
    PERFORM pg_advisory_xact_lock(98959363);
    SELECT string_agg(format('SELECT * FROM segmentation.%I(customer) WHERE predict.run_id = %s UNION ALL ',
                             'predict_run_' || run_id, run_id), '' ORDER BY run_id),
           coalesce(array_agg(run_id ORDER BY run_id), '{}')
    INTO branches, kept
    FROM segmentation.run_models;
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION segmentation_bi.predict(customer jsonb, run_id bigint) '
        'RETURNS SETOF segmentation.prediction LANGUAGE sql STABLE PARALLEL SAFE '
        'BEGIN ATOMIC %s SELECT * FROM segmentation.no_model(predict.run_id) '
        'WHERE predict.run_id IS NULL OR predict.run_id <> ALL (%L::bigint[]); END',
        coalesce(branches, ''), kept);
END
$route$;
SELECT segmentation.route_predict();

-- predict(customer), the current run: read from current_run in the query's own snapshot, as the
-- views read it, so a query never scores with one run while its views show another. No current
-- run yet: one row, no segment.
CREATE OR REPLACE FUNCTION segmentation_bi.predict(customer jsonb)
RETURNS SETOF segmentation.prediction
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    -- The run id as a scalar subquery, as in predict(customer, segmentation): read once per query
    -- (an InitPlan), not once per customer.
    SELECT p.* FROM (SELECT (SELECT r.run_id FROM segmentation_bi.current_run AS r) AS run_id) AS c
    CROSS JOIN LATERAL segmentation_bi.predict(customer, c.run_id) AS p
    WHERE c.run_id IS NOT NULL
    UNION ALL
    SELECT NULL::bigint, NULL::integer, NULL::text, NULL::double precision, NULL::double precision, NULL::boolean
    WHERE NOT EXISTS (SELECT FROM segmentation_bi.current_run);
END;

-- predict(customer, segmentation), a segmentation's current run (sql/014), read from
-- segmentations in the query's own snapshot, as that segmentation's views read it. No current run
-- yet: one row, no segment; a name no segmentation has: an error naming it.
CREATE OR REPLACE FUNCTION segmentation_bi.predict(customer jsonb, segmentation text)
RETURNS SETOF segmentation.prediction
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    -- The run id as a scalar subquery: computed once per query, not once per customer, and then
    -- predict(customer, run_id) leaves only that run's branch to each customer.
    SELECT p.* FROM (SELECT (SELECT g.run_id FROM segmentation_bi.segmentations AS g
                             WHERE g.segmentation = predict.segmentation) AS run_id) AS c
    CROSS JOIN LATERAL segmentation_bi.predict(customer, c.run_id) AS p
    WHERE c.run_id IS NOT NULL
    UNION ALL
    SELECT NULL::bigint, NULL::integer, NULL::text, NULL::double precision, NULL::double precision, NULL::boolean
    WHERE EXISTS (SELECT FROM segmentation_bi.segmentations AS g
                  WHERE g.segmentation = predict.segmentation AND g.run_id IS NULL)
    UNION ALL
    SELECT * FROM segmentation.no_segmentation(predict.segmentation)
    WHERE NOT EXISTS (SELECT FROM segmentation_bi.segmentations AS g WHERE g.segmentation = predict.segmentation);
END;

COMMENT ON FUNCTION segmentation_bi.predict(jsonb) IS
    'The current run''s segment for a customer given as jsonb, e.g. predict(to_jsonb(c)) or predict(''{"age": 31, "annual_income": 72, "spending_score": 80}''), with its distance, margin (to the second-nearest centroid, less distance) and outlier flag, as current_customer_segments shows them.';
COMMENT ON FUNCTION segmentation_bi.predict(jsonb, bigint) IS
    'The segment a kept run gives a customer given as jsonb.';
COMMENT ON FUNCTION segmentation_bi.predict(jsonb, text) IS
    'The segment a segmentation''s current run gives a customer given as jsonb, e.g. predict(to_jsonb(c), ''rfm'').';
