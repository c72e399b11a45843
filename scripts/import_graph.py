"""Print which project packages each package imports (ast, nothing is imported) and check the layering.

Usage: python scripts/import_graph.py [REPO_ROOT]   (exit 1 if an import runs back up a floor)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# The floors, lowest first: a package may import only packages on floors below its own.
FLOORS = (("ibutil",), ("ibdata",), ("render", "inbetween"), ("benchmarks",))
PACKAGES = tuple(p for floor in FLOORS for p in floor)


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


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The imports that do not go down a floor: (importer, imported)."""
    floor = {p: i for i, names in enumerate(FLOORS) for p in names}
    return [(a, b) for a, deps in edges.items() for b in sorted(deps) if floor[b] >= floor[a]]


def main(root: Path) -> int:
    edges = graph(root)
    for p, deps in edges.items():
        print(f"{p:<11} -> {', '.join(sorted(deps)) or '(none)'}")
    bad = upward(edges)
    for a, b in bad:
        print(f"layering violated: {a} imports {b}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent))
