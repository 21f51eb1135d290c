-- Input drift (segmentation.core.input_drift): each run's distribution of every feature, from
-- its training set, and how far it moved against the previous published run's.
CREATE TABLE segmentation.feature_distributions (
    run_id           bigint NOT NULL REFERENCES segmentation.runs ON DELETE CASCADE,
    feature          text NOT NULL,
    units            text NOT NULL,             -- kind:transform; compared only in the same units
    edges            double precision[],        -- a number: the deciles' cut points, input units
    levels           text[],                    -- a category: its levels ("(other)": the rest)
    shares           double precision[] NOT NULL,
    previous_run_id  bigint,                    -- the run compared with; NULL: none
    psi              double precision,          -- population stability index against it
    PRIMARY KEY (run_id, feature)
);
