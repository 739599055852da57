"""The error type for problems a user can cause and fix (bad paths, bad arguments, bad files, bad configs)."""


class MCNError(ValueError):
    """A user-facing error: the CLI prints its message as one line, without a traceback.

    It is a ``ValueError`` so that library callers that catch ``ValueError`` for bad arguments keep working; the
    CLI catches ``MCNError`` only, so any other ``ValueError`` (a bug) keeps its traceback.
    """
