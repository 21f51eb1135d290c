-- The BI contract gets a schema of its own, segmentation_bi: the views and the scoring
-- functions, and nothing a reader may not read, so a BI tool lists only what it can chart.
-- The reader role has USAGE on this schema only (sql/roles/segmentation_roles.sql); the tables
-- stay in segmentation. The views and predict move here under the same names; the snapshot
-- views gain the run's published_at, and every view and column carries a COMMENT, which BI
-- tools show as descriptions.

-- CREATE SCHEMA needs CREATE on the database, which the writer role does not have.
DO $schema$
BEGIN
    IF to_regnamespace('segmentation_bi') IS NULL THEN
        IF NOT has_database_privilege(current_database(), 'CREATE') THEN
            RAISE EXCEPTION 'migration 009 creates the schema segmentation_bi, which % may not: ask a DBA to run '
                            '"CREATE SCHEMA segmentation_bi AUTHORIZATION segmentation_writer", then upgrade again',
                            current_user;
        END IF;
        CREATE SCHEMA segmentation_bi;
    END IF;
END
$schema$;
COMMENT ON SCHEMA segmentation_bi IS
    'Customer segments for BI: the current run, its segments and centroids, each customer''s segment and '
    'history, and scoring in SQL (predict). Everything here is readable by segmentation_reader.';

DROP FUNCTION segmentation.predict(jsonb);
DROP FUNCTION segmentation.predict(jsonb, bigint);
DROP VIEW segmentation.current_customer_segments, segmentation.current_segments,
          segmentation.current_segment_centroids, segmentation.current_run;
-- The history views (007) move as they are.
ALTER VIEW segmentation.customer_segment_history SET SCHEMA segmentation_bi;
ALTER VIEW segmentation.customer_segment_spells SET SCHEMA segmentation_bi;

-- Every current_ view reads the current run and its rows in one statement: one snapshot, so a
-- query never sees half a run or two runs mixed, however a publish or a rollback interleaves.
CREATE VIEW segmentation_bi.current_run AS
SELECT run_id, published_at, flow_run_id, source_table, features, k,
       n_customers, n_quarantined, inertia, silhouette, params,
       previous_run_id, customers_compared, customers_changed, churn, adjusted_rand_index,
       customers_added, customers_removed, forced, quality_issues
FROM segmentation.runs
WHERE run_id = (SELECT run_id FROM segmentation.current_run_log ORDER BY switch_id DESC LIMIT 1);

-- The run id as a scalar subquery, not a join: PostgreSQL then reads only its partition.
CREATE VIEW segmentation_bi.current_customer_segments AS
SELECT cs.run_id, (SELECT published_at FROM segmentation_bi.current_run) AS published_at,
       cs.customer_id, cs.segment_id, s.segment_name, cs.distance
FROM segmentation.customer_segments AS cs
JOIN segmentation.segments AS s ON s.run_id = cs.run_id AND s.segment_id = cs.segment_id
WHERE cs.run_id = (SELECT run_id FROM segmentation_bi.current_run);

CREATE VIEW segmentation_bi.current_segments AS
SELECT s.run_id, (SELECT published_at FROM segmentation_bi.current_run) AS published_at,
       s.segment_id, s.segment_name, s.n_customers, s.share,
       s.share_female, s.share_male, s.share_unknown_gender,
       s.previous_n_customers, s.size_change, s.centroid_shift
FROM segmentation.segments AS s
WHERE s.run_id = (SELECT run_id FROM segmentation_bi.current_run);

CREATE VIEW segmentation_bi.current_segment_centroids AS
SELECT c.run_id, (SELECT published_at FROM segmentation_bi.current_run) AS published_at,
       c.segment_id, s.segment_name, c.feature, c.centroid, c.mean, c.stddev, c.min, c.max
FROM segmentation.segment_centroids AS c
JOIN segmentation.segments AS s ON s.run_id = c.run_id AND s.segment_id = c.segment_id
WHERE c.run_id = (SELECT run_id FROM segmentation_bi.current_run);

-- Scoring in SQL (006). SQL-standard bodies (BEGIN ATOMIC) are resolved when created, so a
-- reader calls the per-run functions in segmentation through them without USAGE on that
-- schema, and PostgreSQL still inlines them. route_predict() is the one place that writes
-- predict(customer, run_id): one branch per kept model (a constant run_id leaves only its own
-- branch after planning) and no_model() for any other run_id. segmentation.store.scoring calls
-- it whenever a model is kept or dropped.
CREATE FUNCTION segmentation.route_predict() RETURNS void
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

-- The current run, read from current_run in the query's own snapshot, as the views read it.
-- No current run yet: one row, no segment.
CREATE FUNCTION segmentation_bi.predict(customer jsonb)
RETURNS SETOF segmentation.prediction
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT p.* FROM segmentation_bi.current_run AS c CROSS JOIN LATERAL segmentation_bi.predict(customer, c.run_id) AS p
    UNION ALL
    SELECT NULL::bigint, NULL::integer, NULL::text, NULL::double precision
    WHERE NOT EXISTS (SELECT FROM segmentation_bi.current_run);
END;

-- Descriptions. A column that means the same in every view is described once, here; the rest
-- below, view by view.
DO $described$
DECLARE
    shared CONSTANT jsonb := jsonb_build_object(
        'run_id', 'The segmentation run (segmentation.runs) these rows come from.',
        'published_at', 'When the run was published: the segments are as of this time.',
        'customer_id', 'The customer''s id in the source table.',
        'segment_id', 'Stable segment id: a segment keeps its id from run to run while its centroid stays close.',
        'segment_name', 'Readable name from the segment''s centroid against the population, e.g. "High income · Low spending · Age 30-44".',
        'n_customers', 'Customers in this run (valid rows that were segmented).',
        'distance', 'Distance to the segment''s centroid, in the run''s standardised feature units; NULL in a run restored from the history.');
    col record;
BEGIN
    FOR col IN
        SELECT c.relname, a.attname FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'segmentation_bi' AND c.relkind = 'v' AND a.attnum > 0 AND NOT a.attisdropped
          AND shared ? a.attname
    LOOP
        EXECUTE format('COMMENT ON COLUMN segmentation_bi.%I.%I IS %L', col.relname, col.attname, shared ->> col.attname::text);
    END LOOP;
END
$described$;

COMMENT ON VIEW segmentation_bi.current_run IS
    'The current segmentation run, one row: the latest published run, unless an earlier one was made current again (rollback).';
COMMENT ON COLUMN segmentation_bi.current_run.flow_run_id IS 'The Prefect flow run that made it.';
COMMENT ON COLUMN segmentation_bi.current_run.source_table IS 'The table the customers were read from.';
COMMENT ON COLUMN segmentation_bi.current_run.features IS 'The columns the segments are built on.';
COMMENT ON COLUMN segmentation_bi.current_run.k IS 'Number of segments.';
COMMENT ON COLUMN segmentation_bi.current_run.n_quarantined IS 'Source rows left out as invalid (missing, out of range, repeated id).';
COMMENT ON COLUMN segmentation_bi.current_run.inertia IS 'KMeans inertia: sum of squared distances to the centroids, standardised units.';
COMMENT ON COLUMN segmentation_bi.current_run.silhouette IS 'Silhouette score on a sample, -1 to 1: how well separated the segments are.';
COMMENT ON COLUMN segmentation_bi.current_run.params IS 'The run''s settings and flow parameters (JSON).';
COMMENT ON COLUMN segmentation_bi.current_run.previous_run_id IS 'The run it was compared with for drift.';
COMMENT ON COLUMN segmentation_bi.current_run.customers_compared IS 'Customers in both this run and the previous one.';
COMMENT ON COLUMN segmentation_bi.current_run.customers_changed IS 'Of those, customers now in another segment.';
COMMENT ON COLUMN segmentation_bi.current_run.churn IS 'customers_changed / customers_compared.';
COMMENT ON COLUMN segmentation_bi.current_run.adjusted_rand_index IS 'Agreement of the two runs'' assignments, 1 = identical, about 0 = unrelated.';
COMMENT ON COLUMN segmentation_bi.current_run.customers_added IS 'Customers only in this run.';
COMMENT ON COLUMN segmentation_bi.current_run.customers_removed IS 'Customers only in the previous run.';
COMMENT ON COLUMN segmentation_bi.current_run.forced IS 'Published although the quality gate failed (force_publish, approval or promotion).';
COMMENT ON COLUMN segmentation_bi.current_run.quality_issues IS 'The quality gate''s reasons, when it failed.';

COMMENT ON VIEW segmentation_bi.current_customer_segments IS
    'Each customer''s segment in the current run, one row per customer.';

COMMENT ON VIEW segmentation_bi.current_segments IS 'The current run''s segments, one row per segment.';
COMMENT ON COLUMN segmentation_bi.current_segments.n_customers IS 'Customers in the segment.';
COMMENT ON COLUMN segmentation_bi.current_segments.share IS 'Share of the run''s customers in the segment, 0 to 1.';
COMMENT ON COLUMN segmentation_bi.current_segments.share_female IS 'Share of the segment''s customers recorded Female; NULL when the source has no gender.';
COMMENT ON COLUMN segmentation_bi.current_segments.share_male IS 'Share recorded Male; NULL when the source has no gender.';
COMMENT ON COLUMN segmentation_bi.current_segments.share_unknown_gender IS 'Share with no gender recorded; NULL when the source has no gender.';
COMMENT ON COLUMN segmentation_bi.current_segments.previous_n_customers IS 'Customers in the same segment id in the previous run; NULL for a new segment.';
COMMENT ON COLUMN segmentation_bi.current_segments.size_change IS 'n_customers - previous_n_customers.';
COMMENT ON COLUMN segmentation_bi.current_segments.centroid_shift IS 'How far the centroid moved since the previous run, standardised units; NULL for a new segment.';

COMMENT ON VIEW segmentation_bi.current_segment_centroids IS
    'The current run''s segment profiles: one row per segment and feature (long format).';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.feature IS 'The source column.';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.centroid IS 'The segment''s centre in the column''s own units (gender: share Female).';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.mean IS 'Mean of the column over the segment''s customers.';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.stddev IS 'Standard deviation of the column over the segment''s customers.';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.min IS 'Smallest value in the segment.';
COMMENT ON COLUMN segmentation_bi.current_segment_centroids.max IS 'Largest value in the segment.';

COMMENT ON VIEW segmentation_bi.customer_segment_history IS
    'Each customer''s segment in every published run whose assignments are kept, one row per customer and run.';

COMMENT ON VIEW segmentation_bi.customer_segment_spells IS
    'Each customer''s spells in a segment (like a dbt snapshot): one row per customer and spell.';
COMMENT ON COLUMN segmentation_bi.customer_segment_spells.valid_from_run_id IS 'The run the customer entered the segment in (or the oldest run kept, when earlier).';
COMMENT ON COLUMN segmentation_bi.customer_segment_spells.valid_from IS 'That run''s published_at.';
COMMENT ON COLUMN segmentation_bi.customer_segment_spells.valid_to_run_id IS 'The run the customer left the segment in; NULL while still in it.';
COMMENT ON COLUMN segmentation_bi.customer_segment_spells.valid_to IS 'That run''s published_at; NULL while still in the segment.';

COMMENT ON FUNCTION segmentation_bi.predict(jsonb) IS
    'The current run''s segment for a customer given as jsonb, e.g. predict(to_jsonb(c)) or predict(''{"age": 31, "annual_income": 72, "spending_score": 80}'').';
COMMENT ON FUNCTION segmentation_bi.predict(jsonb, bigint) IS
    'The segment a kept run gives a customer given as jsonb.';
