-- segmentation_bi.predict, all three of them. This file defines them, as each file in sql/bi/ defines
-- the BI object it is named after: change them here, never in a numbered migration;
-- `segmentation db upgrade` applies the change (segmentation/bi_definitions.py).
--
-- Scoring in SQL (segmentation/store/scoring.py): each kept model has its own function,
-- segmentation.predict_run_<run_id>(customer jsonb). All three predict functions return SETOF
-- segmentation.prediction (run_id bigint, segment_id integer, segment_name text, distance double
-- precision, margin double precision, outlier boolean), a type of sql/006_scoring.sql (margin and
-- outlier: sql/020_confidence.sql): one row per customer, with NULL segment when the customer
-- cannot be scored. margin and outlier are those the run's views show for a customer with the
-- same values: NULL margin and false outlier in a missing-value segment, both NULL for runs made
-- before 020. SQL-standard bodies (BEGIN ATOMIC) are resolved when created, so a reader calls the
-- per-run functions in segmentation through them without USAGE on that schema, and PostgreSQL
-- still inlines them.

-- Which run a segmentation's views show now, as they read it (segmentations.sql): the run a
-- query that scores with the current run must use. A function rather than the view itself, so
-- that a query calling predict over a table is costed as reading it once (an InitPlan), not once
-- per customer: costed per customer, a scan of 200,000 customers came out at tens of millions and
-- PostgreSQL spent longer JIT-optimising the query than running it. Its body is a string, read
-- when called, so that segmentations.sql can still drop and create its view (a body resolved
-- when created would depend on it).
CREATE OR REPLACE FUNCTION segmentation.current_run_id(segmentation text) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE COST 1
AS $$SELECT g.run_id FROM segmentation_bi.segmentations AS g WHERE g.segmentation = $1$$;

-- A segmentation's current run, read in the query's own snapshot as that segmentation's views
-- read it, when no branch of predict(customer) or predict(customer, segmentation) was taken: the
-- current run's segment; no current run yet: one row, no segment; a name no segmentation has: an
-- error naming it. Called for one customer at a time (a function in PL/pgSQL is never inlined
-- into its caller's query), with its owner's rights (it calls no_segmentation, in a schema the
-- reader has no access to) and its query planned when first called, not when created, so that it
-- depends on no BI object: predict.sql can drop and create them all.
CREATE OR REPLACE FUNCTION segmentation.predict_current(customer jsonb, segmentation text)
RETURNS SETOF segmentation.prediction
LANGUAGE plpgsql STABLE PARALLEL SAFE ROWS 1 SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $current$
BEGIN
    -- The run id as a scalar subquery: computed once per call, and then predict(customer,
    -- run_id) leaves only that run's branch.
    RETURN QUERY
    SELECT p.* FROM (SELECT (SELECT g.run_id FROM segmentation_bi.segmentations AS g
                             WHERE g.segmentation = predict_current.segmentation) AS run_id) AS c
    CROSS JOIN LATERAL segmentation_bi.predict(customer, c.run_id) AS p
    WHERE c.run_id IS NOT NULL
    UNION ALL
    SELECT NULL::bigint, NULL::integer, NULL::text, NULL::double precision, NULL::double precision, NULL::boolean
    WHERE EXISTS (SELECT FROM segmentation_bi.segmentations AS g
                  WHERE g.segmentation = predict_current.segmentation AND g.run_id IS NULL)
    UNION ALL
    SELECT * FROM segmentation.no_segmentation(predict_current.segmentation)
    WHERE NOT EXISTS (SELECT FROM segmentation_bi.segmentations AS g WHERE g.segmentation = predict_current.segmentation);
END
$current$;

-- predict(customer, run_id), any run whose model is kept, and the two forms that score with a
-- current run, predict(customer) and predict(customer, segmentation), are not written here: their
-- bodies name the kept runs, so route_predict(), the one place that writes them, rewrites them
-- whenever a model is kept or dropped (segmentation.store.scoring calls it) and whenever a run
-- becomes current (segmentation.store.runs.record_switch, in the switch's transaction).
--
-- predict(customer, run_id): one branch per kept model (a constant run_id leaves only its own
-- branch after planning) and no_model() for any other run_id.
--
-- predict(customer) and predict(customer, segmentation): one branch per segmentation whose current
-- run has a model, taken when that run is still current in the query's own snapshot, and
-- predict_current() otherwise (a transaction that began before a switch it does not see, a
-- segmentation with no current run, a name no segmentation has). Not predict(customer, run_id)
-- with the current run's id: its run_id is known only as the query runs, so every kept model's
-- branch stays in the plan, and a scan of many customers JIT-compiles all of them (with five runs
-- kept, 200,000 customers took 9.0 s rather than 2.8 s).
CREATE OR REPLACE FUNCTION segmentation.route_predict() RETURNS void
LANGUAGE plpgsql
AS $route$
DECLARE
    branches text;
    kept bigint[];
    current_branches text;
    taken text;
    default_run bigint;
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
    -- Each segmentation's current run with a kept model: a branch taken while it is current.
    SELECT string_agg(format('SELECT * FROM segmentation.%I(customer) '
                             'WHERE predict.segmentation = %L AND (SELECT segmentation.current_run_id(%L)) = %s UNION ALL ',
                             'predict_run_' || g.run_id, g.segmentation, g.segmentation, g.run_id), '' ORDER BY g.segmentation),
           string_agg(format('coalesce(predict.segmentation = %L AND (SELECT segmentation.current_run_id(%L)) = %s, false)',
                             g.segmentation, g.segmentation, g.run_id), ' OR ' ORDER BY g.segmentation),
           max(g.run_id) FILTER (WHERE g.segmentation = 'default')
    INTO current_branches, taken, default_run
    FROM segmentation_bi.segmentations AS g JOIN segmentation.run_models AS m ON m.run_id = g.run_id;
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION segmentation_bi.predict(customer jsonb, segmentation text) '
        'RETURNS SETOF segmentation.prediction LANGUAGE sql STABLE PARALLEL SAFE '
        'BEGIN ATOMIC %s SELECT * FROM segmentation.predict_current(customer, predict.segmentation) '
        'WHERE NOT (%s); END',
        coalesce(current_branches, ''), coalesce(taken, 'false'));
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION segmentation_bi.predict(customer jsonb) '
        'RETURNS SETOF segmentation.prediction LANGUAGE sql STABLE PARALLEL SAFE '
        'BEGIN ATOMIC %s SELECT * FROM segmentation.predict_current(customer, %L) '
        'WHERE %s; END',
        CASE WHEN default_run IS NOT NULL THEN
            format('SELECT * FROM segmentation.%I(customer) WHERE (SELECT segmentation.current_run_id(%L)) = %s UNION ALL ',
                   'predict_run_' || default_run, 'default', default_run) ELSE '' END,
        'default',
        CASE WHEN default_run IS NOT NULL THEN
            format('(SELECT segmentation.current_run_id(%L)) IS DISTINCT FROM %s', 'default', default_run) ELSE 'true' END);
END
$route$;
SELECT segmentation.route_predict();

-- The reader calls these through predict, with its own rights, as the roles file grants (sql/roles/),
-- also when this file is applied by a login that may not apply that file.
DO $grants$
BEGIN
    IF to_regrole('segmentation_reader') IS NOT NULL THEN
        REVOKE ALL ON FUNCTION segmentation.current_run_id(text) FROM PUBLIC;
        REVOKE ALL ON FUNCTION segmentation.predict_current(jsonb, text) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION segmentation.current_run_id(text) TO segmentation_reader;
        GRANT EXECUTE ON FUNCTION segmentation.predict_current(jsonb, text) TO segmentation_reader;
    END IF;
END
$grants$;

COMMENT ON FUNCTION segmentation_bi.predict(jsonb) IS
    'The current run''s segment for a customer given as jsonb, e.g. predict(to_jsonb(c)) or predict(''{"age": 31, "annual_income": 72, "spending_score": 80}''), with its distance, margin (to the second-nearest centroid, less distance) and outlier flag, as current_customer_segments shows them.';
COMMENT ON FUNCTION segmentation_bi.predict(jsonb, bigint) IS
    'The segment a kept run gives a customer given as jsonb.';
COMMENT ON FUNCTION segmentation_bi.predict(jsonb, text) IS
    'The segment a segmentation''s current run gives a customer given as jsonb, e.g. predict(to_jsonb(c), ''rfm'').';
