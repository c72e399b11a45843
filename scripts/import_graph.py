"""Print which project packages each package imports (ast, nothing is imported) and check the layering.

Then the same for benchmarks' subpackages (benchmarks.engine, .scoring, ...) and its top-level modules (the
commands, benchmarks.cli), checked against FORBIDDEN: scoring imports nothing from results, for one.

Usage: python scripts/import_graph.py [REPO_ROOT]   (exit 1 if an import runs back up a floor)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# The floors, lowest first: a package may import only packages on floors below its own.
FLOORS = (("ibutil",), ("ibdata",), ("render", "inbetween"), ("benchmarks",))
PACKAGES = tuple(p for floor in FLOORS for p in floor)
# Inside benchmarks: (importer, imported) pairs that must not occur. Scoring computes numbers and knows nothing of
# how they are run or written; the results read records and know nothing of the engine that made them; methods know
# only methods; the throughput tools stand apart from the benchmark.
FORBIDDEN = tuple((a, b) for a, bs in (
    ("benchmarks.scoring", ("benchmarks.cli", "benchmarks.engine", "benchmarks.results", "benchmarks.external",
                            "benchmarks.tools", "benchmarks.methods")),
    ("benchmarks.methods", ("benchmarks.cli", "benchmarks.engine", "benchmarks.scoring", "benchmarks.results",
                            "benchmarks.external", "benchmarks.tools")),
    ("benchmarks.engine", ("benchmarks.cli", "benchmarks.external", "benchmarks.tools")),
    ("benchmarks.results", ("benchmarks.cli", "benchmarks.engine", "benchmarks.external", "benchmarks.tools")),
    ("benchmarks.external", ("benchmarks.cli", "benchmarks.tools")),
) for b in bs)


def imported_packages(path: Path) -> set[str]:
    """The project packages a file imports (top-level name of every import, function-level ones included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def graph(root: Path) -> dict[str, set[str]]:
    """Package -> the other project packages its files import; packages absent under `root` are left out."""
    return {p: set().union(*(imported_packages(f) for f in (root / p).rglob("*.py"))) - {p}
            for p in PACKAGES if (root / p).is_dir()}


def imported_modules(path: Path) -> set[str]:
    """The dotted names a file imports (`from a import b` gives a.b, as b may be a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def subpackage_graph(root: Path, package: str = "benchmarks") -> dict[str, set[str]]:
    """Subpackage (or top-level module, such as benchmarks.cli) of `package` -> the others its files import."""
    base = root / package
    units = {p.name for p in base.iterdir() if (p / "__init__.py").is_file()} | {
        p.stem for p in base.glob("*.py") if p.stem != "__init__"}

    def unit(parts: list[str]) -> str:
        return f"{package}.{parts[0]}" if parts and parts[0] in units else package

    edges: dict[str, set[str]] = {}
    for f in sorted(base.rglob("*.py")):
        if f == base / "__init__.py":  # the package's docstring: its line would read like the package-level one
            continue
        me = unit(list(f.relative_to(base).with_suffix("").parts))
        deps = {unit(m.split(".")[1:]) for m in imported_modules(f) if m.split(".")[0] == package}
        edges.setdefault(me, set()).update(deps - {me})
    return dict(sorted(edges.items()))


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The imports that do not go down a floor: (importer, imported)."""
    floor = {p: i for i, names in enumerate(FLOORS) for p in names}
    return [(a, b) for a, deps in edges.items() for b in sorted(deps) if floor[b] >= floor[a]]


def main(root: Path) -> int:
    edges = graph(root)
    for p, deps in edges.items():
        print(f"{p:<11} -> {', '.join(sorted(deps)) or '(none)'}")
    bad = upward(edges)
    inner = subpackage_graph(root) if (root / "benchmarks").is_dir() else {}
    for p, deps in inner.items():
        print(f"{p:<19} -> {', '.join(sorted(deps)) or '(none)'}")
    bad += [(a, b) for a, deps in inner.items() for b in sorted(deps) if (a, b) in FORBIDDEN]
    for a, b in bad:
        print(f"layering violated: {a} imports {b}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent))
