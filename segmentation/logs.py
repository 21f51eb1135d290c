"""Keep user errors to one line in Prefect's logs (console and UI)."""

from __future__ import annotations

import logging

from segmentation.errors import SegmentationError


class OneLineUserErrors(logging.Filter):
    """A SegmentationError already says what is wrong and how to fix it; the traceback
    Prefect attaches to it only buries that line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, SegmentationError):
            record.exc_info = None
            record.exc_text = None
        return True


def install() -> None:
    """Attach the filter to every handler of Prefect's loggers (idempotent)."""
    loggers = [logging.getLogger("prefect")] + [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("prefect.") and isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, OneLineUserErrors) for f in handler.filters):
                handler.addFilter(OneLineUserErrors())
