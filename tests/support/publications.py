"""A run's publication made up from its rows, for tests that write runs through the store
without the flow (tests/test_history.py, tests/test_segment_changes.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from segmentation.core.model import KCandidate
from segmentation.store import scoring
from segmentation.store.runs import Publication


def publication(rows: dict[int, int], drift: dict | None) -> Publication:
    """Segments 1..k from {customer: segment}, one feature `age`, a model that scores them."""
    sizes = pd.Series(rows).value_counts().sort_index()
    ids = sizes.index.to_numpy(dtype=np.int64)
    segments = pd.DataFrame(
        {
            "segment_id": ids,
            "n_customers": sizes.to_numpy(dtype=np.int64),
            "share": sizes.to_numpy() / len(rows),
            "segment_name": [f"segment {s}" for s in ids],
        }
    )
    centroids = pd.DataFrame(
        {
            "segment_id": ids,
            "feature": "age",
            "centroid": ids * 10.0,
            "mean": 0.0,
            "stddev": 1.0,
            "min": 0.0,
            "max": 1.0,
        }
    )
    return Publication(
        k=len(ids),
        n_customers=len(rows),
        n_quarantined=0,
        inertia=1.0,
        silhouette=None,
        segments=segments,
        centroids=centroids,
        candidates=[KCandidate(len(ids), 1.0, None)],
        drift=drift,
        quality_issues=[],
        model=scoring.Model(
            ("age",), np.array([40.0]), np.array([10.0]), ids.reshape(-1, 1) * 1.0, ids, [f"s{s}" for s in ids]
        ),
    )
