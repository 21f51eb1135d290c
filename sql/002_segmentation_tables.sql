-- One row per flow run, whatever its outcome.
CREATE TABLE segmentation.runs (
    run_id        bigserial PRIMARY KEY,
    flow_run_id   uuid,
    status        text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'published', 'rejected', 'failed')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    published_at  timestamptz,
    source_table  text NOT NULL,
    features      text[] NOT NULL,
    k             integer,
    n_customers   bigint,
    n_quarantined bigint,
    inertia       double precision,
    silhouette    double precision,
    params        jsonb NOT NULL DEFAULT '{}'::jsonb,
    error         text,
    CHECK ((status = 'published') = (published_at IS NOT NULL))
);
CREATE INDEX runs_published_idx ON segmentation.runs (published_at DESC, run_id DESC)
    WHERE status = 'published';

-- Per-customer assignments, one partition per run: a run loads its own partition with
-- COPY and attaches it, and retention drops whole partitions instead of deleting rows.
CREATE TABLE segmentation.customer_segments (
    run_id      bigint NOT NULL,
    customer_id bigint NOT NULL,
    segment_id  integer NOT NULL,
    distance    double precision NOT NULL,  -- Euclidean, in standardised feature space
    PRIMARY KEY (run_id, customer_id)
) PARTITION BY LIST (run_id);

CREATE TABLE segmentation.segments (
    run_id                bigint NOT NULL REFERENCES segmentation.runs ON DELETE CASCADE,
    segment_id            integer NOT NULL,
    n_customers           bigint NOT NULL,
    share                 double precision NOT NULL,
    share_female          double precision,  -- NULL when the source has no gender column
    share_male            double precision,
    share_unknown_gender  double precision,
    PRIMARY KEY (run_id, segment_id)
);

-- Long format, like BigQuery ML's ML.CENTROIDS: one row per run, segment and feature.
CREATE TABLE segmentation.segment_centroids (
    run_id      bigint NOT NULL REFERENCES segmentation.runs ON DELETE CASCADE,
    segment_id  integer NOT NULL,
    feature     text NOT NULL,
    centroid    double precision NOT NULL,  -- original units (gender: share Female)
    mean        double precision NOT NULL,
    stddev      double precision NOT NULL,
    min         double precision NOT NULL,
    max         double precision NOT NULL,
    PRIMARY KEY (run_id, segment_id, feature)
);

CREATE TABLE segmentation.k_selection (
    run_id      bigint NOT NULL REFERENCES segmentation.runs ON DELETE CASCADE,
    k           integer NOT NULL,
    inertia     double precision NOT NULL,
    silhouette  double precision,
    PRIMARY KEY (run_id, k)
);

CREATE TABLE segmentation.quarantine (
    run_id      bigint NOT NULL REFERENCES segmentation.runs ON DELETE CASCADE,
    customer_id bigint,            -- NULL when the id itself is missing
    reason      text NOT NULL,
    record      jsonb NOT NULL
);
CREATE INDEX quarantine_run_idx ON segmentation.quarantine (run_id);
