"""Safe output paths: writable folders, atomic files and folders, and one checkpoint reader."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ibutil.errors import UserError


def ensure_writable_folder(folder: str | os.PathLike, option: str = "--out") -> None:
    """Create `folder` (and parents) if needed; UserError if it cannot be created or written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"output folder {folder} is not writable; choose another {option}")


def temp_path(path: str | os.PathLike, pid: int | None = None) -> Path:
    """The hidden temporary name a process writes `path` under: .NAME.tmp-PID in the same folder (the one naming
    rule of every atomic write, so that remove_stale_temps finds what a killed process left)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid() if pid is None else pid}")


def remove_stale_temps(*paths: str | os.PathLike) -> list[Path]:
    """Delete the temporary names of `paths` (temp_path) whose process is dead, e.g. after a SIGKILL, which nothing
    in-process can clean up; returns them. A live process's temporary (a parallel writer) is left alone."""
    removed = []
    for target in map(Path, paths):
        for tmp in target.parent.glob(f".{target.name}.tmp-*"):
            pid = tmp.name.rsplit("-", 1)[1]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                _remove(tmp)
                removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary name beside `path`; on success rename it to `path`, on any error remove it.

    The one atomic-write pattern of the project: a reader sees the old `path` or the whole new one,
    never half of it. The caller writes a file or builds a folder at the yielded name; an existing
    folder at `path` is replaced (os.replace cannot rename over a non-empty folder, so it goes first).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)  # what a killed writer of `path` left
    tmp = temp_path(path)
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def torch_save_atomic(obj, path: str | os.PathLike) -> Path:
    """torch.save `obj` to `path` atomically; returns the path."""
    import torch  # not every user of this module needs torch (render/ does not)

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike, fmt: str, device="cpu", what: str | None = None,
                    hint: str = "", retired: tuple[str, ...] = ()) -> dict:
    """The dict torch.save wrote at `path`, whose "format" entry is `fmt`, tensors mapped to `device`.

    UserError naming `what` (default: fmt) and ending with `hint` (e.g. what writes such a file) if
    the file is missing, unreadable or another kind of file; one saying to retrain if its format is
    one of `retired` (what an older release wrote for the same model).
    """
    import torch

    path, what = Path(path), what or fmt
    hint = f"; {hint}" if hint else ""
    article = "an" if what[0].lower() in "aeiou" else "a"
    if not path.is_file():
        raise UserError(f"no such checkpoint: {path}{hint}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or truncated files
        raise UserError(f"{path} is not a readable {what} checkpoint ({type(exc).__name__}){hint}") from None
    if isinstance(state, dict) and state.get("format") in retired:
        raise UserError(f"{path} is {article} {what} checkpoint of an older release (format {state['format']!r}), "
                        "which this release cannot read or resume; retrain it (remove its folder first)")
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise UserError(f"{path} is not {article} {what} checkpoint{hint}")
    return state
