"""User errors: fixable mistakes, reported as one line and exit code 2 by the CLIs."""


class UserError(Exception):
    """A bad option, a missing or foreign file, a wrong format version: say what to do, no traceback."""
