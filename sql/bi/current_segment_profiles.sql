-- segmentation_bi.current_segment_profiles. This file defines it, as each file in sql/bi/ defines
-- the BI object it is named after: change it here, never in a numbered migration; `segmentation
-- db upgrade` applies the change (segmentation/bi_definitions.py).
--
-- What makes each segment different (segmentation/core/profiles.py), computed in the run's
-- scoring pass. The current run's rows, read with the current run in one statement (see
-- current_run.sql).
--
-- Each segmentation has its own copy of this view: the default's is the one named here; a
-- segmentation NAME's is rendered from this file with its own names and, for the literal
-- 'default', which here only ever names the segmentation, its own name
-- (segmentation/segmentations.py, segmentation/bi_definitions.py).
CREATE OR REPLACE VIEW segmentation_bi.current_segment_profiles AS
SELECT p.run_id, (SELECT published_at FROM segmentation_bi.current_run) AS published_at,
       p.segment_id, s.segment_name, p.feature, p.level, p.value, p.population, p.z, p.share, p.lift, p.rank
FROM segmentation.segment_profiles AS p
JOIN segmentation.segments AS s ON s.run_id = p.run_id AND s.segment_id = p.segment_id
WHERE p.run_id = (SELECT run_id FROM segmentation_bi.current_run);

COMMENT ON VIEW segmentation_bi.current_segment_profiles IS
    'What makes each segment of the current run different: one row per segment and feature (and level, for a category), against the population, ranked.';
COMMENT ON COLUMN segmentation_bi.current_segment_profiles.run_id IS 'The segmentation run (segmentation.runs) these rows come from.';
COMMENT ON COLUMN segmentation_bi.current_segment_profiles.published_at IS 'When the run was published: the segments are as of this time.';
COMMENT ON COLUMN segmentation_bi.current_segment_profiles.segment_id IS 'Stable segment id: a segment keeps its id from run to run while its centroid stays close.';
COMMENT ON COLUMN segmentation_bi.current_segment_profiles.segment_name IS 'Readable name from the segment''s centroid against the population.';
COMMENT ON COLUMN segmentation_bi.current_segment_profiles.feature IS 'The source column.';
COMMENT ON COLUMN segmentation_bi.current_segment_profiles.level IS 'For a category feature, the level ("(other)": the levels not kept); NULL for a number.';
COMMENT ON COLUMN segmentation_bi.current_segment_profiles.value IS 'The segment''s mean in the feature''s own units (days_since in days); for a level, its share of the segment''s customers. For a log1p feature of a segment KMeans found: its centroid, the mean of ln(1 + x) taken back to the feature''s units (a typical customer of the segment).';
COMMENT ON COLUMN segmentation_bi.current_segment_profiles.population IS 'The same over every customer of the run (for a feature with missing=segment, those who have it); for a log1p feature of a segment KMeans found, the training mean of ln(1 + x) taken back to the feature''s units.';
COMMENT ON COLUMN segmentation_bi.current_segment_profiles.z IS 'Standardised difference: (value - population) / the population''s standard deviation (for a level, of its 0/1 indicator; for a log1p feature of a segment KMeans found, measured on ln(1 + x), as the model and the segment''s name read it).';
COMMENT ON COLUMN segmentation_bi.current_segment_profiles.share IS 'For a level, its share of the segment''s customers; NULL for a number.';
COMMENT ON COLUMN segmentation_bi.current_segment_profiles.lift IS 'For a level, share / the population''s share (2: twice as common in the segment); NULL for a number.';
COMMENT ON COLUMN segmentation_bi.current_segment_profiles.rank IS 'The row''s rank among the segment''s most distinguishing traits, by |z| (1: the most).';
