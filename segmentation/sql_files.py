"""A versioned SQL file of the package (segmentation/sql): its text and the checksum recorded
when it is applied. Shared by the numbered migrations and the BI definitions."""

from __future__ import annotations

import hashlib
from importlib.abc import Traversable


class SqlFile:
    path: Traversable

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()
