class SegmentationError(Exception):
    """A problem the user can fix. The message names the problem and the fix; callers
    print it as one line instead of a traceback."""


def lost_connection(exc: BaseException) -> bool:
    """The connection went away (SQLSTATE class 08, or 57: the server shut down or restarted,
    a failover): what was in flight, a commit included, may or may not have been done."""
    import psycopg

    return isinstance(exc, psycopg.OperationalError) and (exc.sqlstate is None or exc.sqlstate[:2] in ("08", "57"))


def describe(exc: BaseException) -> str:
    """One line for a failed run: a user error's own message, otherwise what went wrong."""
    import psycopg

    if isinstance(exc, SegmentationError):
        text = str(exc)
    elif isinstance(exc, psycopg.errors.RaiseException):
        # RAISE EXCEPTION in this project's own SQL (a migration's precondition): written for
        # the user, without PL/pgSQL's CONTEXT lines.
        text = exc.diag.message_primary or str(exc)
    elif isinstance(exc, psycopg.errors.InsufficientPrivilege):
        text = (
            f"the database role lacks a privilege ({exc}); the flow's login needs the segmentation_writer "
            "role and SELECT on the source table (see sql/roles/segmentation_roles.sql)"
        )
    elif lost_connection(exc):
        # Not what became of the run: that is the database's to say once reached again (tasks.run.fail_run).
        text = f"lost the connection to PostgreSQL ({exc})"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__
