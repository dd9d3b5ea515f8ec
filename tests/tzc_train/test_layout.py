"""tzc_train's modules import one another without a circle, read from their source (nothing is imported).

Every import of a tzc_train module counts: at module level, inside functions, under ``TYPE_CHECKING``,
and ``from package import module``; importing ``a.b.c`` also imports the packages ``a`` and ``a.b``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "tzc_train"
ROOT = Path(__file__).resolve().parents[2]


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` under ``root`` by dotted name (a package by its own name)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The module an ``ImportFrom`` names, with a relative one resolved against ``importer``."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base[:len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(source: str, importer: str, known: set[str], *, is_package: bool = False) -> set[str]:
    """The modules of ``known`` that ``source`` (the module ``importer``) imports, anywhere in it."""
    named: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, importer, is_package)
            named.add(module)
            named.update(f"{module}.{alias.name}" for alias in node.names)  # from package import module
    with_parents = {".".join(name.split(".")[:k]) for name in named for k in range(1, name.count(".") + 2)}
    return {name for name in with_parents if name in known and name != importer}


def graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Each module of ``package`` and the modules of ``package`` it imports."""
    found = modules(root, package)
    return {name: imports(path.read_text(encoding="utf-8"), name, set(found), is_package=path.name == "__init__.py")
            for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``edges``: the modules of each strongly connected group of two or more
    (Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(groups)


def circle(group: list[str], edges: dict[str, set[str]]) -> list[str]:
    """The shortest circle from the first module of a strongly connected ``group`` back to it."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first
        following = []
        for node in frontier:
            for nxt in sorted(edges.get(node, set()) & members):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise ValueError(f"{group} is not strongly connected")


def describe(groups: list[list[str]], edges: dict[str, set[str]]) -> str:
    return "; ".join(f"{', '.join(group)} (e.g. {' -> '.join(circle(group, edges))})" for group in groups)


def test_no_import_circles_among_tzc_train_modules():
    edges = graph()
    assert "tzc_train.train" in edges and "tzc_train.model.views" in edges["tzc_train.model.loss"]
    found = cycles(edges)
    assert not found, "import circles among tzc_train modules: " + describe(found, edges)


def test_the_reader_finds_circles_at_any_depth(tmp_path):
    """The check can fail: circles through an import inside a function, ``from package import module``,
    ``import a.b as c``, a relative import, a package's ``__init__`` and ``TYPE_CHECKING`` are found."""
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg import b\n",
        "pkg/b.py": "import pkg.c as c\n",
        "pkg/c.py": "from .a import f\n",
        "pkg/sub/__init__.py": "from . import d\n",
        "pkg/sub/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.g\n",
        "pkg/g.py": "import pkg.sub\n",
        "pkg/clean.py": "import os\nimport pkg.sub.d\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    edges = graph(tmp_path, "pkg")
    assert edges["pkg.clean"] == {"pkg", "pkg.sub", "pkg.sub.d"} and edges["pkg.sub"] == {"pkg", "pkg.sub.d"}
    found = cycles(edges)
    assert found == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.g", "pkg.sub", "pkg.sub.d"]]
    assert describe(found, edges) == ("pkg.a, pkg.b, pkg.c (e.g. pkg.a -> pkg.b -> pkg.c -> pkg.a); "
                                      "pkg.g, pkg.sub, pkg.sub.d (e.g. pkg.g -> pkg.sub -> pkg.sub.d -> pkg.g)")
