"""Methods from outside the package: load a --method-file or an `inbetween_bench.methods` entry point and check it.

One check of the method interface (benchmarks/methods/interface.py), `check_interface`, serves the
built-ins (tests/test_plugins.py), method files and entry points alike; `check_output` checks one
predict output, on a dummy batch before any job runs (`check_predicts`) and on every scored batch
(`checked`). Every failure is a UserError naming the source and what is wrong, in one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import re
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch

from benchmarks import methods
from benchmarks.methods import Plugin, interface
from ibutil.errors import UserError

ENTRY_POINT_GROUP = "inbetween_bench.methods"
# A NAME is a CLI prefix (--my-method-sigma) and part of file names: lower-case words joined by dashes.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
DUMMY_SHAPE = (2, 3, 16, 16)  # (B, 3, H, W) of the batch every plug-in that trains nothing predicts before the run
RANGE_SLACK = 1e-4  # float rounding allowed outside [0, 1] (a blend of frames in [0, 1] can land at 1 + 1e-7)


def first_line(exc: BaseException) -> str:
    """An exception as `Type: first line of its message`, for one-line errors."""
    text = str(exc).strip().splitlines()
    return type(exc).__name__ + (f": {text[0]}" if text else "")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- the interface


def _accepts(fn: Callable, *args, **kwargs) -> bool:
    """Whether `fn` can be called with these arguments (signature only; nothing is called)."""
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError:
        return False
    except ValueError:  # a builtin without a signature: assume it fits
        return True
    return True


def check_interface(module: ModuleType, source: str) -> None:
    """UserError (naming `source`) unless `module` exports the method interface of benchmarks/methods/interface.py.

    Checks what can be checked without data: the exports of interface.Method and their kinds, NAME's form, that
    Config is a frozen dataclass whose defaults construct (and label() names it), that train, load and predict
    accept the calls the Method protocol declares, and the optional hooks of interface.Hooks (QUICK, DEMO, SHARED,
    variants, record, group_key/train_group, available).
    """
    def fail(what: str):
        raise UserError(f"{source}: {what} (the method interface: docs/your-method.md)")

    missing = [name for name in interface.REQUIRED if not hasattr(module, name)]
    if missing:
        fail(f"does not export {', '.join(missing)}")
    optional = interface.hooks(module)
    if not isinstance(module.NAME, str) or not NAME_PATTERN.fullmatch(module.NAME):
        fail(f"NAME must be lower-case words joined by dashes (e.g. 'my-method'), not {module.NAME!r}")
    if not (isinstance(module.Config, type) and dataclasses.is_dataclass(module.Config)
            and module.Config.__dataclass_params__.frozen):
        fail("Config must be a frozen dataclass (@dataclass(frozen=True))")
    for flag in ("TRAINS", "SEEDED"):
        if not isinstance(getattr(module, flag), bool):
            fail(f"{flag} must be True or False, not {getattr(module, flag)!r}")
    for name in interface.FUNCTIONS:
        positional, keywords = interface.call_shape(name)
        if not callable(getattr(module, name)):
            fail(f"{name} must be a function")
        if not _accepts(getattr(module, name), *[None] * len(positional), **dict.fromkeys(keywords)):
            fail(f"{name} must take ({', '.join([*positional, *(['*', *keywords] if keywords else [])])})")
    for name in (f.name for f in dataclasses.fields(optional) if f.name.islower()):  # the hooks that are functions
        if getattr(optional, name) is not None and not callable(getattr(optional, name)):
            fail(f"{name} must be a function")
    if (optional.group_key is None) != (optional.train_group is None):
        fail("group_key and train_group come together (or neither)")
    names = {f.name for f in dataclasses.fields(module.Config)}
    for profile in ("QUICK", "DEMO"):
        overrides = getattr(optional, profile)
        if not isinstance(overrides, dict) or set(overrides) - names:
            fail(f"{profile} must be a dict of Config fields ({', '.join(sorted(names)) or 'Config has none'})")
    if not isinstance(optional.SHARED, dict) or set(optional.SHARED) - names or not all(
            isinstance(o, str) and o.startswith("--") for o in optional.SHARED.values()):
        fail("SHARED must map Config fields to option names like '--width'")
    try:
        variants = optional.variants(module.Config())
        labels = [module.label(v) for v in variants]
    except Exception as exc:  # noqa: BLE001  (a plug-in may raise anything: say what, in one line)
        fail(f"Config() with its defaults, or label() of its variants, failed: {first_line(exc)}")
    if not variants or not all(isinstance(v, module.Config) for v in variants):
        fail("variants(config) must return a non-empty list of Config")
    if not all(isinstance(text, str) and text for text in labels) or len(set(labels)) != len(labels):
        fail(f"label(config) must return a non-empty str, one per variant, not {labels!r}")


def check_output(pred, x0: torch.Tensor, source: str) -> None:
    """UserError (naming `source`) unless `pred` is what predict must return for `x0`: a float tensor of x0's
    shape (B, 3, H, W) on x0's device, finite, in [0, 1]."""
    def fail(what: str):
        raise UserError(f"{source}: predict {what}; it must return (B, 3, H, W) floats in [0, 1] on x0's device")

    if not isinstance(pred, torch.Tensor):
        fail(f"returned a {type(pred).__name__}, not a torch.Tensor")
    if tuple(pred.shape) != tuple(x0.shape):
        fail(f"returned shape {tuple(pred.shape)} for inputs of shape {tuple(x0.shape)}")
    if not pred.is_floating_point():
        fail(f"returned dtype {pred.dtype}")
    if pred.device != x0.device:
        fail(f"returned a tensor on {pred.device} for inputs on {x0.device}")
    if not bool(torch.isfinite(pred).all()):
        fail("returned NaN or infinite values")
    low, high = float(pred.min()), float(pred.max())
    if low < -RANGE_SLACK or high > 1 + RANGE_SLACK:
        fail(f"returned values in [{low:.4g}, {high:.4g}]")


def call_predict(module: ModuleType, model, x0: torch.Tensor, x2: torch.Tensor, tau, source: str) -> torch.Tensor:
    """module.predict(model, x0, x2, tau), checked by check_output; its own failure is a UserError too."""
    try:
        pred = module.predict(model, x0, x2, tau)
    except UserError as exc:
        raise UserError(f"{source}: predict: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{source}: predict failed on a ({', '.join(map(str, x0.shape))}) batch: "
                        f"{first_line(exc)}") from None
    check_output(pred, x0, source)
    return pred


def make_config(plugin: Plugin, profile: str, given: dict):
    """The plug-in's Config under a benchmark profile (its QUICK or DEMO) with the options `given` on top; a
    Config that refuses them (any exception) is a UserError naming the plug-in."""
    try:
        return plugin.module.Config(**(methods.hooks(plugin.module).overrides(profile) | given))
    except UserError as exc:
        raise UserError(f"{plugin.source}: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{plugin.source}: its Config refused the settings: {first_line(exc)}") from None


def check_predict(module: ModuleType, config, device: str, source: str) -> None:
    """Load a method that trains nothing on `device` and predict one seeded dummy batch at tau = 0.5 and at a (B,) tau."""
    try:
        model = module.load(config, None, device)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{source}: load(config, None, device) failed: {first_line(exc)}") from None
    g = torch.Generator().manual_seed(0)
    # On the CPU, as scoring hands them over (benchmarks.scoring.evaluate.evaluate); the model is on `device`.
    x0, x2 = (torch.rand(DUMMY_SHAPE, generator=g) for _ in range(2))  # (B, 3, H, W) in [0, 1]
    for tau in (0.5, torch.tensor([0.25, 0.75])):
        with torch.no_grad():
            call_predict(module, model, x0, x2, tau, source)


def check_predicts(config) -> None:
    """The dummy-batch check of every registered plug-in that trains nothing, for each of its variants in
    `config` (a BenchmarkConfig); plug-ins that train are checked on the real batches as they are scored."""
    for name in config.methods:
        plugin = methods.PLUGINS.get(name)
        if plugin is None or plugin.module.TRAINS:
            continue
        for variant in methods.hooks(plugin.module).variants(config.method_configs[name]):
            check_predict(plugin.module, variant, config.device, plugin.source)


def checked(module: ModuleType, model, source: str) -> Callable:
    """A scoring predict function (x0, x2, tau) -> x_tau whose every output is checked (check_output)."""
    return lambda x0, x2, tau: call_predict(module, model, x0, x2, tau, source)


# ----------------------------------------------------------------------------- loading


def load_file(path: str | Path) -> Plugin:
    """Import a method file as its own module and check its interface."""
    path = Path(path)
    source = f"method file {path}"
    if not path.is_file():
        raise UserError(f"{source}: no such file")
    if path.suffix != ".py":
        raise UserError(f"{source}: a method file is a Python module ending in .py")
    data = path.read_bytes()
    digest = sha256_bytes(data)
    # A module name of its own per content: inspect and typing find the module (the Config's field comments and
    # annotations) through sys.modules, and two files with one stem do not collide.
    module_name = f"inbetween_bench_method_file_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{digest[:12]}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path.resolve())
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001  (SyntaxError, ImportError, ...: one line)
            del sys.modules[module_name]
            raise UserError(f"{source}: importing it failed: {first_line(exc)}") from None
    check_interface(module, source)
    return Plugin(module, source, digest, file=True)


def entry_points() -> dict[str, metadata.EntryPoint]:
    """Name -> entry point of every installed package's `inbetween_bench.methods` entry points."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_entry_point(ep: metadata.EntryPoint) -> Plugin:
    """Import an entry point's module, check its interface and that its NAME is the entry point's name."""
    dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown package"
    source = f"entry point {ep.name} = {ep.value} ({dist})"
    try:
        module = ep.load()
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{source}: importing it failed: {first_line(exc)}") from None
    if not isinstance(module, ModuleType):
        raise UserError(f"{source}: must name a module (package.module), not a {type(module).__name__}")
    check_interface(module, source)
    if module.NAME != ep.name:
        raise UserError(f"{source}: the module's NAME is {module.NAME!r}; name the entry point {module.NAME}")
    # The package's version and its module file: an edited (pip install -e) module gets new hashes too.
    text = Path(module.__file__).read_bytes() if getattr(module, "__file__", None) else b""
    return Plugin(module, source, sha256_bytes(dist.encode() + b"\0" + text), file=False)


def discover(method_files: list[str], names: list[str]) -> list[Plugin]:
    """The plug-ins of one run: each --method-file, then the installed entry points that the --methods `names`
    name (an unknown name is left for the registry to refuse, listing the choices)."""
    plugins: dict[str, Plugin] = {}
    for path in method_files:
        plugin = load_file(path)
        if plugin.name in plugins and plugins[plugin.name].sha256 == plugin.sha256:
            continue  # the same file given twice
        methods.check_names([*plugins.values(), plugin])
        plugins[plugin.name] = plugin
    wanted = [n for n in names if n not in plugins]
    installed = entry_points() if wanted else {}
    for name in (n for n in wanted if n in installed):
        if name in methods.REGISTRY:  # it would be shadowed without a word: say so instead
            raise UserError(f"entry point {name} = {installed[name].value}: NAME {name!r} is the built-in method "
                            f"{name}; uninstall its package or give the method another NAME")
        plugins[name] = load_entry_point(installed[name])
    methods.check_names(list(plugins.values()))
    return list(plugins.values())
