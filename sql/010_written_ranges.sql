-- The ranges of ids of a run's scoring pass already written, while the pass is split over
-- Dask workers (segmentation.store.range_pass). A range written a second time (its task run
-- again after a worker died) finds its row here and replaces what the first write left; a first
-- write finds none and deletes nothing, so no range scans the rows the others have written.
-- A range is its number in the run's list of ranges, not its ids: no customer id is kept here.
-- The rows go when the run's table is keyed or dropped.
CREATE TABLE segmentation.written_ranges (
    run_id        bigint NOT NULL REFERENCES segmentation.runs (run_id) ON DELETE CASCADE,
    range_number  integer NOT NULL,
    PRIMARY KEY (run_id, range_number)
);
