"""The layout holds: the plugin contract is the ground floor, and no import cycle runs through ftsdk."""

from __future__ import annotations

import ast
import sys

from tests.import_graph import CONTRACT, cycles, graph, modules, outside_imports

#: what the contract may import at run time besides the standard library
CONTRACT_DEPENDENCIES = {"pydantic", "pydantic_core", "pluggy"}


def test_the_contract_imports_nothing_of_ftsdk_outside_itself():
    assert outside_imports(graph()) == {}


def test_the_contract_imports_only_the_standard_library_pydantic_and_pluggy():
    allowed = set(sys.stdlib_module_names) | CONTRACT_DEPENDENCIES | {"ftsdk", "__future__"}
    for name, path in modules().items():
        if not name.startswith(CONTRACT):
            continue
        tree = ast.parse(path.read_text())
        guarded = {id(node) for stmt in ast.walk(tree) if isinstance(stmt, ast.If) and "TYPE_CHECKING" in
                   ast.unparse(stmt.test) for node in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in guarded or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            roots = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else \
                [(node.module or "ftsdk").split(".")[0] if not node.level else "ftsdk"]
            assert set(roots) <= allowed, f"{name} imports {roots}"


def test_no_module_cycle():
    assert cycles(graph()) == []


def test_cycles_are_found():
    """The check itself: a made-up graph with a cycle through three modules."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
