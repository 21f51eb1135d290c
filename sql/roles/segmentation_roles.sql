-- Least-privilege roles. `segmentation db upgrade` applies this file after the migrations
-- when the connecting role may create roles; otherwise a DBA runs it (psql -f), after every
-- upgrade that adds objects. Idempotent.
--
-- segmentation_writer: what the nightly flow needs. Owns the segmentation and segmentation_bi
--   schemas and all in them, reads the source table. Grant it to the flow's login role:
--   CREATE ROLE segmentation_flow LOGIN PASSWORD '...' IN ROLE segmentation_writer;
-- segmentation_reader: BI. USAGE on segmentation_bi only, and SELECT and EXECUTE on what it
--   holds (the views and predict); no access to the source table's personal data, nor to the
--   schema segmentation and its tables, which a BI tool then does not list as datasets.
--   CREATE ROLE metabase LOGIN PASSWORD '...' IN ROLE segmentation_reader;

-- Roles belong to the whole cluster: another database's upgrade may be creating them at this
-- moment (the advisory lock around this file is the database's own), and then this CREATE
-- waits for it and finds the role taken, which is as good as created.
DO $roles$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['segmentation_writer', 'segmentation_reader'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$roles$;

-- The writer owns both schemas and every table, view, type and function in them, so it can
-- create, attach, detach and drop a run's partition, and apply later migrations itself.
-- Only what is not the writer's yet: ALTER ... OWNER locks the object against BI readers.
DO $owner$
DECLARE
    object record;
BEGIN
    FOR object IN
        SELECT nspname FROM pg_namespace
        WHERE nspname IN ('segmentation', 'segmentation_bi') AND pg_get_userbyid(nspowner) <> 'segmentation_writer'
    LOOP
        EXECUTE format('ALTER SCHEMA %I OWNER TO segmentation_writer', object.nspname);
    END LOOP;
    FOR object IN
        SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('segmentation', 'segmentation_bi') AND c.relkind IN ('r', 'p', 'v', 'm')
          AND pg_get_userbyid(c.relowner) <> 'segmentation_writer'
    LOOP
        EXECUTE format('ALTER %s %I.%I OWNER TO segmentation_writer',
                       CASE object.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                       object.nspname, object.relname);
    END LOOP;
    FOR object IN
        SELECT t.oid::regtype AS name FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        JOIN pg_class c ON c.oid = t.typrelid AND c.relkind = 'c'
        WHERE n.nspname IN ('segmentation', 'segmentation_bi') AND pg_get_userbyid(t.typowner) <> 'segmentation_writer'
    LOOP
        EXECUTE format('ALTER TYPE %s OWNER TO segmentation_writer', object.name);
    END LOOP;
END
$owner$;

GRANT USAGE ON SCHEMA public TO segmentation_writer;
-- The demo source table, when there is one (`demo`, `generate` and `load-csv` create it); a
-- configured source table is granted by its owner (docs/configuration.md#the-source-table).
DO $source$
BEGIN
    IF to_regclass('public.customers') IS NOT NULL THEN
        GRANT SELECT ON public.customers TO segmentation_writer;
    END IF;
END
$source$;

-- Views run with their owner's (the writer's) privileges, so the reader needs nothing else:
-- everything in segmentation_bi, and not even USAGE on segmentation.
REVOKE ALL ON ALL TABLES IN SCHEMA segmentation FROM segmentation_reader;
REVOKE ALL ON SCHEMA segmentation FROM segmentation_reader;
GRANT USAGE ON SCHEMA segmentation_bi TO segmentation_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA segmentation_bi TO segmentation_reader;

-- Scoring in SQL (sql/006_scoring.sql, sql/bi/predict.sql): the reader may call predict, nobody
-- else by default. predict(customer, run_id) calls the per-run functions with the caller's
-- rights (so that PostgreSQL can inline them): each run grants the reader EXECUTE on its own as
-- it creates it.
DO $functions$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('segmentation', 'segmentation_bi') AND pg_get_userbyid(p.proowner) <> 'segmentation_writer'
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO segmentation_writer', fn);
    END LOOP;
END
$functions$;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA segmentation, segmentation_bi FROM PUBLIC;
-- Global, not per schema: PostgreSQL cannot revoke per schema what is granted globally.
ALTER DEFAULT PRIVILEGES FOR ROLE segmentation_writer REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA segmentation_bi TO segmentation_reader;
GRANT EXECUTE ON FUNCTION segmentation.no_model(bigint) TO segmentation_reader;
GRANT EXECUTE ON FUNCTION segmentation.no_segmentation(text) TO segmentation_reader;
GRANT EXECUTE ON FUNCTION segmentation.current_run_id(text) TO segmentation_reader;
GRANT EXECUTE ON FUNCTION segmentation.predict_current(jsonb, text) TO segmentation_reader;
DO $per_run$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'segmentation' AND p.proname LIKE 'predict\_run\_%'
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO segmentation_reader', fn);
    END LOOP;
END
$per_run$;
