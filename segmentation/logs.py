"""Keep user errors to one line in Prefect's logs (console and UI)."""

from __future__ import annotations

import logging

from segmentation.errors import SegmentationError

# What Prefect's engine logs, with a traceback, when a deployment's flow run ends Failed: the
# runner asks for the run's result, and a failed state's result raises.
_ENGINE_EXIT = "Engine execution exited with unexpected exception"


class OneLineUserErrors(logging.Filter):
    """A SegmentationError already says what is wrong and how to fix it; the traceback
    Prefect attaches to it only buries that line. And a run the flow ended Failed on purpose
    (it returns Failed with the reason, after recording the failure) is not a crash: the
    engine's traceback for it is dropped, so the reason stays the last thing in the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.exceptions import FailedRun

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, FailedRun) and record.getMessage() == _ENGINE_EXIT:
            return False
        if isinstance(exc, SegmentationError):
            record.exc_info = None
            record.exc_text = None
        return True


def install() -> None:
    """Attach the filter to every handler of Prefect's loggers, and of the root logger, whose
    console handler is what a served run's process prints (idempotent)."""
    loggers = [logging.getLogger(), logging.getLogger("prefect")] + [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("prefect.") and isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, OneLineUserErrors) for f in handler.filters):
                handler.addFilter(OneLineUserErrors())
