"""The one exception type the CLI turns into a single error line and exit status 2."""


class ZctraceError(Exception):
    """A user-facing problem: bad input, missing privileges, a kernel lacking a feature."""
