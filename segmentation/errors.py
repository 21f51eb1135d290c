class SegmentationError(Exception):
    """A problem the user can fix. The message names the problem and the fix; callers
    print it as one line instead of a traceback."""
