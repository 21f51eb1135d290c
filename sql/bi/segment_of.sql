-- segmentation_bi.segment_of, all three. This file defines them, as each file in sql/bi/ defines the
-- BI object it is named after: change them here, never in a numbered migration; `segmentation db
-- upgrade` applies the change (segmentation/bi_definitions.py).
--
-- predict under a name SQL parsers leave alone. Superset's SQL Lab and its virtual datasets parse
-- every query with sqlglot, which reads predict(...) in FROM as BigQuery's ML.PREDICT ("Error
-- parsing near ')'") and rewrites the two-argument form to PREDICT(MODEL ..., TABLE 2), which
-- PostgreSQL refuses. segment_of is the same function (each body is one call of predict, which
-- PostgreSQL inlines as it inlines predict), and the documented queries use it; predict stays for
-- psql and everything written against it. tests/test_docs_sql.py parses every documented query
-- with sqlglot's PostgreSQL dialect.
CREATE OR REPLACE FUNCTION segmentation_bi.segment_of(customer jsonb)
RETURNS SETOF segmentation.prediction
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT * FROM segmentation_bi.predict(customer);
END;

CREATE OR REPLACE FUNCTION segmentation_bi.segment_of(customer jsonb, run_id bigint)
RETURNS SETOF segmentation.prediction
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT * FROM segmentation_bi.predict(customer, segment_of.run_id);
END;

CREATE OR REPLACE FUNCTION segmentation_bi.segment_of(customer jsonb, segmentation text)
RETURNS SETOF segmentation.prediction
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT * FROM segmentation_bi.predict(customer, segment_of.segmentation);
END;

COMMENT ON FUNCTION segmentation_bi.segment_of(jsonb) IS
    'predict(customer) under a name SQL parsers (Superset''s sqlglot) leave alone: the current run''s segment for a customer given as jsonb, e.g. segment_of(to_jsonb(c)), with its distance, margin and outlier flag.';
COMMENT ON FUNCTION segmentation_bi.segment_of(jsonb, bigint) IS
    'predict(customer, run_id) under a name SQL parsers leave alone: the segment a kept run gives a customer.';
COMMENT ON FUNCTION segmentation_bi.segment_of(jsonb, text) IS
    'predict(customer, segmentation) under a name SQL parsers leave alone: a segmentation''s current run''s segment for a customer.';
