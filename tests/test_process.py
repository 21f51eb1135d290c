"""The run's process settings are applied once per process."""

import gc

from segmentation import process


def test_start_up_objects_are_frozen_once_and_later_objects_are_not():
    process.prepare_for_run()
    frozen = gc.get_freeze_count()
    assert frozen > 10_000  # the imports of pandas, scikit-learn and Prefect at least
    later = [[i] for i in range(20_000)]  # tracked objects made after the first call
    process.prepare_for_run()
    assert gc.get_freeze_count() <= frozen  # a second freeze would have taken these too
    assert len(later) == 20_000
