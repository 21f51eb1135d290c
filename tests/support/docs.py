"""The documentation's own queries, read from docs/ as a reader copies them, so a test runs what
the docs say and the two cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def documented_sql(page: str, heading: str) -> str:
    """The one ```sql block of the section `## heading` of docs/<page>."""
    text = (DOCS / page).read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"^```sql\n(.*?)^```", text[start : end if end != -1 else None], re.M | re.S)
    if len(blocks) != 1:
        raise ValueError(f"docs/{page}, section {heading}: {len(blocks)} SQL blocks, expected one")
    return blocks[0].strip()
