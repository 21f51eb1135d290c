"""Process-wide settings for a run's process."""

from __future__ import annotations

import gc

_frozen = False


def freeze_startup_objects() -> None:
    """Once per process, before the run's own work: what start-up built (Prefect's client
    and engine, pandas, scikit-learn, matplotlib: some 300,000 objects) lives as long as
    the process, so it is left out of garbage collection. Otherwise the run's first full
    collection walks all of it: 0.1 to 0.2 s of a 1M-customer run. Only once, so a process
    that runs the flow many times (the tests) does not freeze each run's leftovers."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()
