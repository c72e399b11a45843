"""Device resolution: 'auto', 'cpu', 'cuda' or 'cuda:N' -> a torch.device that exists."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ibutil.errors import UserError

DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"


def check_device_name(name: str) -> None:
    """UserError unless `name` is auto, cpu, cuda or cuda:N (for configs' __post_init__; no torch query)."""
    if not isinstance(name, str) or not re.fullmatch(DEVICE_PATTERN, name):
        raise UserError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available, else cpu; UserError if cuda is asked for and absent."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} was asked for but this torch build sees no CUDA GPU; use cpu or auto")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} does not exist: {torch.cuda.device_count()} GPU(s) visible")
    return torch.device(name)


def cpu_info() -> tuple[str | None, set[str]]:
    """(the CPU's model name or None, its feature flags) from /proc/cpuinfo; (None, set()) where it is unreadable."""
    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, flags
