"""A run's report as Prefect keeps it: its artifacts read back through the API, and the
picture's PNG checked without an image library."""

from __future__ import annotations

import base64
import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def artifacts_of(flow_run_id) -> dict:
    """The flow run's artifacts by key, read back through Prefect's API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a valid PNG always has first."""
    assert data[:8] == PNG_SIGNATURE
    length, chunk = struct.unpack(">I4s", data[8:16])
    assert chunk == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def decode_png(url: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return base64.b64decode(url[len(prefix) :], validate=True)


def picture_size(segments: int, lines_each: int = 2) -> tuple[int, int]:
    """The run picture's size in pixels: its legend under the plots, a line or two per segment
    (its name, and its description when it has one) and one for the outliers."""
    from segmentation.core import plots

    lines = segments * lines_each + 1
    return int(plots.FIGSIZE[0] * plots.DPI), int((plots.FIGSIZE[1] + lines * plots.LEGEND_LINE + 0.15) * plots.DPI)
