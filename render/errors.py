"""User errors: mistakes the user can fix, reported as one line and exit code 2 by the CLIs."""

from __future__ import annotations


class UserError(Exception):
    """A bad option, a missing or foreign file, a wrong format version: say what to do, no traceback."""
