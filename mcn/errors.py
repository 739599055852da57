"""The error type for problems a user can cause and fix (bad paths, bad arguments, bad files)."""


class MCNError(ValueError):
    """A user-facing error: the CLI prints its message as one line, without a traceback."""
