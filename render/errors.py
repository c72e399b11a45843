"""User errors (fixable mistakes: one line and exit code 2 in the CLIs) and safe output paths."""

from __future__ import annotations

import os
from pathlib import Path


class UserError(Exception):
    """A bad option, a missing or foreign file, a wrong format version: say what to do, no traceback."""


def ensure_writable_folder(folder: str | os.PathLike, option: str = "--out") -> None:
    """Create `folder` (and parents) if needed; UserError if it cannot be created or written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"output folder {folder} is not writable; choose another {option}")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to a temporary name beside `path`, then rename: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
