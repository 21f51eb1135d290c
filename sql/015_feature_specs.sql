-- Feature specs (segmentation.core.feature_spec): what a run's model needs to score a customer
-- given as the source holds it, categories as levels in the long-format centroids, and the
-- missing-value segments.

-- The feature plan (segmentation.core.feature_plan.FeaturePlan.describe): per feature its spec,
-- the source column's type and a category's levels. NULL: bare column names, as before specs.
ALTER TABLE segmentation.run_models ADD COLUMN spec jsonb;
-- The instant days_since counts days before (the run's start).
ALTER TABLE segmentation.run_models ADD COLUMN as_of timestamptz;
-- Per input, the value it is capped at (clip), 'Infinity' for none; NULL when nothing is capped.
ALTER TABLE segmentation.run_models ADD COLUMN feature_cap double precision[];

-- A missing-value segment: the feature its customers lack (missing=segment); NULL for a cluster.
ALTER TABLE segmentation.segments ADD COLUMN missing_feature text;

-- A category's rows: one per level kept, and "(other)" for the rest; NULL for a number.
ALTER TABLE segmentation.segment_centroids ADD COLUMN level text;
ALTER TABLE segmentation.segment_centroids DROP CONSTRAINT segment_centroids_pkey;
ALTER TABLE segmentation.segment_centroids
    ADD CONSTRAINT segment_centroids_key UNIQUE NULLS NOT DISTINCT (run_id, segment_id, feature, level);
