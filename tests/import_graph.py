"""ftsdk's own import graph, read from the source with ``ast``: which module imports which, cycles, sizes.

Every import counts, at module level or inside a function (a lazy import is still a dependency), except those
under ``if TYPE_CHECKING:`` (annotations only). ``python -m tests.import_graph`` prints the cycles, the imports of
the plugin contract and the lines per package.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = "ftsdk.plugin"


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the ftsdk package by dotted name."""
    found = {}
    for path in sorted((root / "ftsdk").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(tree: ast.Module, name: str, is_package: bool) -> Iterator[str]:
    """The modules and names each import statement of ``tree`` reaches, TYPE_CHECKING blocks left out."""
    skipped = {id(node) for stmt in ast.walk(tree) if isinstance(stmt, ast.If) and "TYPE_CHECKING" in
               ast.unparse(stmt.test) for node in ast.walk(stmt)}
    package = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the ftsdk modules it imports."""
    known = modules(root)
    return {name: {target for target in _imports(ast.parse(path.read_text()), name, path.name == "__init__.py")
                   if target in known and target != name}
            for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def outside_imports(edges: dict[str, set[str]], package: str = CONTRACT) -> dict[str, set[str]]:
    """The modules of ``package`` that import ftsdk modules outside it, with those modules."""
    inside = (package, package + ".")
    return {name: {t for t in targets if not t.startswith(inside)}
            for name, targets in edges.items() if name.startswith(inside) and
            any(not t.startswith(inside) for t in targets)}


def lines_per_package(root: Path = ROOT) -> dict[str, int]:
    """Lines of code per top-level subpackage of ftsdk; the root modules together as ``ftsdk``."""
    counts: Counter[str] = Counter()
    for name, path in modules(root).items():
        parts = name.split(".")
        top = ".".join(parts[:2]) if len(parts) > 1 and (root / "ftsdk" / parts[1]).is_dir() else "ftsdk"
        counts[top] += len(path.read_text().splitlines())
    return dict(sorted(counts.items()))


if __name__ == "__main__":
    edges = graph()
    for component in cycles(edges):
        print(f"cycle of {len(component)}: {' '.join(component)}")
    print("contract imports outside itself:", outside_imports(edges) or "none")
    for package, count in lines_per_package().items():
        print(f"{package:24} {count:6}")
    sys.exit(1 if cycles(edges) else 0)
