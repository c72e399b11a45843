"""Thin click CLIs from config dataclasses: one option per field, help from its comment, its default stated once.

An option generated here defaults to None ("not given"), so the dataclass's own default (or a
profile's, e.g. --quick) applies; the help shows that default.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from contextlib import contextmanager
from typing import Any

import click

from ibutil.errors import UserError


@contextmanager
def user_errors():
    """Turn a UserError into a one-line message on stderr and exit code 2, without a traceback."""
    try:
        yield
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(2) from None


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


class MultiValueCommand(click.Command):
    """Lets an option declared multiple=True take several values after one flag: `--alpha 0 100`.

    Click options take one value per flag; this rewrites `--alpha 0 100` to `--alpha 0 --alpha 100`
    before parsing. A value may be a negative number; any other token starting with '-' ends the list.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        multi = {o for p in self.get_params(ctx) if isinstance(p, click.Option) and p.multiple for o in p.opts}
        return super().parse_args(ctx, expand_multi(args, multi))


def expand_multi(args: list[str], multi) -> list[str]:
    """`--alpha 0 100` -> `--alpha 0 --alpha 100` for the options in `multi` (see MultiValueCommand)."""
    out: list[str] = []
    current, count = None, 0
    for token in args:
        if token in multi:
            current, count = token, 0
            out.append(token)
        elif current is not None and (not token.startswith("-") or _is_number(token)):
            if count:
                out.append(current)
            out.append(token)
            count += 1
        else:
            current = None
            out.append(token)
    return out


def option_values(args: list[str], option: str) -> list[str]:
    """Every value given to a multiple `option` in raw command-line `args` (`--x a b`, `--x a --x b`, `--x=a`),
    for what must be known before click parses them (e.g. modules whose options the command then gets)."""
    values, expanded = [], expand_multi(args, {option})
    for i, token in enumerate(expanded):
        if token == "--":
            break
        if token == option and i + 1 < len(expanded) and not expanded[i + 1].startswith("-"):
            values.append(expanded[i + 1])
        elif token.startswith(option + "="):
            values.append(token[len(option) + 1:])
    return values


def field_comments(cls) -> dict[str, str]:
    """Field name -> the comment at the end of its line in the class body (the field's documentation)."""
    source = inspect.getsource(cls)
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.*)$", source, re.M)}


def _click_type(hint) -> tuple[Any, bool, bool]:
    """(click type, multiple, is_flag) for a field's type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # `int | None`: the non-None part
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
        origin = typing.get_origin(hint)
    if origin is tuple:
        return typing.get_args(hint)[0], True, False
    if hint is bool:
        return bool, False, True
    return hint, False, False


@dataclasses.dataclass(frozen=True)
class Generated:
    """One generated option: which config (target) and field it sets."""

    target: str
    field: str
    dest: str
    renamed: bool  # named by the caller (e.g. an option several configs share), not --{prefix}{field}


class DataclassOptions:
    """Collects click options generated from config dataclasses and routes parsed values back to them."""

    def __init__(self):
        self.options: list[click.Option] = []
        self.routes: dict[str, list[Generated]] = {}  # dest -> the (target, field)s it sets

    def add(self, cls, target: str, *, prefix: str = "", names: dict[str, str] | None = None,
            skip=(), shown_defaults: dict[str, Any] | None = None) -> None:
        """Options for every field of `cls` but `skip`: --{prefix}{field-with-dashes}, or names[field].

        Two dataclasses naming the same option share it (one value sets both fields).
        shown_defaults: defaults to show instead of the dataclass's (e.g. a profile's).
        """
        names, shown = names or {}, shown_defaults or {}
        hints = typing.get_type_hints(cls)
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            opt = names.get(f.name, "--" + prefix + f.name.replace("_", "-"))
            dest = opt.lstrip("-").replace("-", "_")
            route = Generated(target, f.name, dest, f.name in names)
            if dest in self.routes:  # a shared option: the first declaration's help and default stand
                self.routes[dest].append(route)
                continue
            self.routes[dest] = [route]
            kind, multiple, flag = _click_type(hints[f.name])
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            default = shown.get(f.name, None if required else
                                (f.default if f.default is not dataclasses.MISSING else f.default_factory()))
            text = comments.get(f.name, f.name)
            if not required and default not in (None, ()):
                shown_default = " ".join(map(str, default)) if isinstance(default, tuple) else default
                text += f" [default: {shown_default}]"
            decl = [f"{opt}/--no-{opt[2:]}" if flag else opt, dest]
            self.options.append(click.Option(decl, type=None if flag else kind, multiple=multiple,
                                             default=None, required=required, help=text))

    def extend(self, command: click.Command) -> click.Command:
        """Append the generated options to a built click command's parameters."""
        command.params.extend(self.options)
        return command

    def values(self, kwargs: dict[str, Any], renamed_only_for=None) -> dict[str, dict[str, Any]]:
        """target -> {field: value} of the generated options given on the command line (kwargs: click's).

        renamed_only_for: if given, renamed (shared) options set only these targets.
        """
        out: dict[str, dict[str, Any]] = {}
        for dest, routes in self.routes.items():
            value = kwargs.get(dest)
            if value is None or value == ():
                continue
            for r in routes:
                if r.renamed and renamed_only_for is not None and r.target not in renamed_only_for:
                    continue
                out.setdefault(r.target, {})[r.field] = tuple(value) if isinstance(value, (list, tuple)) else value
        return out
