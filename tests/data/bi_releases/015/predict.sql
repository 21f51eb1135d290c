-- segmentation_bi.predict, both of them. This file defines them, as each file in sql/bi/ defines
-- the BI object it is named after: change them here, never in a numbered migration;
-- `segmentation db upgrade` applies the change (segmentation/bi_definitions.py).
--
-- Scoring in SQL (segmentation/store/scoring.py): each kept model has its own function,
-- segmentation.predict_run_<run_id>(customer jsonb). Both predict functions return SETOF
-- segmentation.prediction (run_id bigint, segment_id integer, segment_name text, distance double
-- precision), a type of sql/006_scoring.sql: one row per customer, with NULL segment when the
-- customer cannot be scored. SQL-standard bodies (BEGIN ATOMIC) are resolved when created, so a
-- reader calls the per-run functions in segmentation through them without USAGE on that schema,
-- and PostgreSQL still inlines them.

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
    SELECT p.* FROM segmentation_bi.current_run AS c CROSS JOIN LATERAL segmentation_bi.predict(customer, c.run_id) AS p
    UNION ALL
    SELECT NULL::bigint, NULL::integer, NULL::text, NULL::double precision
    WHERE NOT EXISTS (SELECT FROM segmentation_bi.current_run);
END;

COMMENT ON FUNCTION segmentation_bi.predict(jsonb) IS
    'The current run''s segment for a customer given as jsonb, e.g. predict(to_jsonb(c)) or predict(''{"age": 31, "annual_income": 72, "spending_score": 80}'').';
COMMENT ON FUNCTION segmentation_bi.predict(jsonb, bigint) IS
    'The segment a kept run gives a customer given as jsonb.';
