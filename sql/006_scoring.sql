-- Scoring in SQL: each complete run keeps its model (the scaler and the centres KMeans works
-- in), and gets a function segmentation.predict_run_<run_id>(customer jsonb) compiled from it
-- and from the rules of a valid row (segmentation.store.scoring writes both). The BI entry
-- points are segmentation.predict(customer jsonb), for the current run, and
-- segmentation.predict(customer jsonb, run_id bigint), for any run whose model is kept.

CREATE TABLE segmentation.run_models (
    run_id        bigint PRIMARY KEY REFERENCES segmentation.runs ON DELETE CASCADE,
    features      text[] NOT NULL,              -- the order the model reads them in
    feature_mean  double precision[] NOT NULL,  -- the run's scaler: z = (x - mean) / scale
    feature_scale double precision[] NOT NULL
);

CREATE TABLE segmentation.model_centers (
    run_id      bigint NOT NULL REFERENCES segmentation.runs ON DELETE CASCADE,
    label       integer NOT NULL,                -- KMeans' label: a tie goes to the lowest, as in the flow
    segment_id  integer NOT NULL,
    center      double precision[] NOT NULL,     -- standardised units, in run_models.features order
    PRIMARY KEY (run_id, label)
);

-- What predict returns: one row per customer, with NULL segment when it cannot be scored.
CREATE TYPE segmentation.prediction AS (
    run_id       bigint,
    segment_id   integer,
    segment_name text,
    distance     double precision   -- to the segment's centre, in the run's standardised units
);

-- A run_id with no model kept: the error predict(customer, run_id) gives.
CREATE FUNCTION segmentation.no_model(run_id bigint)
RETURNS SETOF segmentation.prediction
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
    RAISE EXCEPTION 'run % has no model kept; segmentation.run_models lists the runs that can score', run_id
        USING ERRCODE = 'no_data_found';
END
$$;

-- Any run whose model is kept: rewritten with one branch per kept model as models are kept and
-- dropped (segmentation.store.scoring); until then, every run_id is unknown.
CREATE FUNCTION segmentation.predict(customer jsonb, run_id bigint)
RETURNS SETOF segmentation.prediction
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT * FROM segmentation.no_model(predict.run_id) $$;

-- The current run, read from segmentation.current_run in the query's own snapshot, as the
-- views read it: a query never scores with one run while its views show another. No current
-- run yet: one row, no segment.
CREATE FUNCTION segmentation.predict(customer jsonb)
RETURNS SETOF segmentation.prediction
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT p.* FROM segmentation.current_run AS c CROSS JOIN LATERAL segmentation.predict(customer, c.run_id) AS p
    UNION ALL
    SELECT NULL::bigint, NULL::integer, NULL::text, NULL::double precision
    WHERE NOT EXISTS (SELECT FROM segmentation.current_run)
$$;
