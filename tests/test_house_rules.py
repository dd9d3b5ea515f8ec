"""The house rules of the packages' layout (docs/design.md, "Wings"), checked on the source itself.

Every import is read with ``ast``, at module level and inside functions alike (a lazy import is
still a dependency); imports under ``if TYPE_CHECKING:`` are not, as they never run. Nothing is
imported here, so a rule broken by a module that fails to import is still named.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tzc_data", "tzc_train")

# Modules over LONGEST lines are allowed only as one idea, said here, and never over ONE_IDEA_LONGEST.
LONGEST = 450
ONE_IDEA_LONGEST = 600
ONE_IDEA = {
    "tzc_data.filters.repetition": "the repetition filter: the signals it combines into one verdict, each a "
                                   "function of the same normalised text",
    "tzc_data.cli": "tzc-data's command line: every subcommand's parser, and the one-line errors of each",
}
CORE = {"tzc_data.errors", "tzc_data.record", "tzc_data.files", "tzc_data.layout", "tzc_data.process",
        "tzc_data.native"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


@cache
def imports(module: str) -> frozenset[str]:
    """Every module ``module`` imports when it runs (anywhere in it), resolved to a module name:
    ``from a import b`` is ``a.b`` when that is a module of ours, else ``a``."""
    tree = ast.parse(modules()[module].read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: against this module's package
                package = module.split(".")[:len(module.split(".")) - node.level + (modules()[module].name == "__init__.py")]
                base = ".".join(package + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules() else base)
    return frozenset(found)


def ours(names: frozenset[str]) -> set[str]:
    return {name for name in names if name in modules()}


def reachable(start: str) -> set[str]:
    """Every module (ours or not) that importing ``start`` and calling anything in it may import."""
    seen, todo, outside = {start}, [start], set()
    while todo:
        for name in imports(todo.pop()):
            if name in modules():
                if name not in seen:
                    seen.add(name)
                    todo.append(name)
            else:
                outside.add(name)
    return seen | outside


def in_wing(module: str, *wings: str) -> bool:
    return any(module == wing or module.startswith(wing + ".") for wing in wings)


def test_there_are_modules_to_check():
    assert "tzc_data.build.pipeline" in modules() and "tzc_train.cli" in modules()


def circles(graph: dict[str, list[str]]) -> list[list[str]]:
    """The import circles of ``graph``: the members of each strongly connected group of two or more
    modules, or of one that imports itself (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_no_import_circles():
    found = circles({m: sorted(ours(imports(m))) for m in modules()})
    assert found == [], f"modules that import each other: {found}"


def test_the_circle_finder_finds_circles():
    assert circles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert circles({"a": ["a"], "b": []}) == [["a"]]
    assert circles({"a": ["b"], "b": []}) == []


@pytest.mark.parametrize("module", [m for m in sorted(modules()) if m.startswith("tzc_data")])
def test_tzc_data_never_imports_the_trainer(module):
    banned = {"jax", "jaxlib", "flax", "optax", "orbax", "tunix", "tzc_train"}
    found = sorted(name for name in imports(module) if name.split(".")[0] in banned)
    assert found == [], f"{module} imports {found}: tzc_data never imports JAX or tzc_train"


@pytest.mark.parametrize("module", [m for m in sorted(modules())
                                    if in_wing(m, "tzc_data.read", "tzc_data.verify", "tzc_data.look")])
def test_the_read_side_imports_nothing_of_the_build(module):
    found = sorted(name for name in reachable(module) if in_wing(name, "tzc_data.build", "tzc_data.engines"))
    assert found == [], f"{module} reaches {found}: the read side (read/, verify/, look/) never imports the build"


@pytest.mark.parametrize("module", [m for m in sorted(modules()) if in_wing(m, "tzc_data.read")] + ["tzc_data"])
def test_the_loaders_import_neither_verify_nor_sentencepiece(module):
    found = sorted(name for name in reachable(module)
                   if in_wing(name, "tzc_data.verify", "sentencepiece", "tzc_data.text.tokenize"))
    assert found == [], f"{module} reaches {found}: what a trainer imports pulls neither verify nor SentencePiece"


def wing(module: str) -> str:
    """``tzc_data.build.pack`` -> ``tzc_data.build``; a core module is its own wing."""
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_imports_only_core(module):
    found = sorted(ours(imports(module)) - CORE)
    assert found == [], f"{module} imports {found}: the core ({', '.join(sorted(CORE))}) imports only itself"


@pytest.mark.parametrize("module", [m for m in sorted(modules())
                                    if in_wing(m, "tzc_data.text", "tzc_data.sources", "tzc_data.filters")])
def test_text_sources_and_filters_import_only_core_and_text(module):
    """The per-row vocabulary: the build, verify and the looking tools all use it, so it uses none of them
    (the package root only for ``__version__``)."""
    found = sorted(name for name in ours(imports(module))
                   if name not in CORE and name != "tzc_data" and wing(name) not in ("tzc_data.text", wing(module)))
    assert found == [], f"{module} imports {found}: text/, sources/ and filters/ import only the core and text/"


def test_the_engines_base_imports_no_engine():
    engines = {m for m in modules() if in_wing(m, "tzc_data.engines") and m != "tzc_data.engines.base"}
    assert sorted(ours(imports("tzc_data.engines.base")) & engines) == []
    for engine in ("tzc_data.engines.local", "tzc_data.engines.processes", "tzc_data.engines.ray"):
        assert "tzc_data.engines.base" in imports(engine), f"{engine} is not built on the engines' base"


def test_only_the_pipeline_runs_the_stages_in_order():
    """The stages of a build are called from one module: nothing else in the package imports
    more than one of them (tests and tools may)."""
    stages = {"tzc_data.build.units", "tzc_data.build.rowstage", "tzc_data.build.dedup", "tzc_data.build.pack",
              "tzc_data.build.write", "tzc_data.build.publish"}
    callers = {m: sorted(ours(imports(m)) & stages) for m in modules() if m not in stages}
    assert {m: s for m, s in callers.items() if len(s) > 1} == {"tzc_data.build.pipeline": sorted(stages)}


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_module_outgrows_one_idea(module):
    lines = modules()[module].read_text(encoding="utf-8").count("\n")
    if module in ONE_IDEA:
        assert lines <= ONE_IDEA_LONGEST, f"{module} has {lines} lines: even one idea wants splitting by now"
        return
    assert lines <= LONGEST, (f"{module} has {lines} lines: split it by concern, or say in ONE_IDEA why it is "
                              "one idea")


def test_no_module_level_mutable_state():
    """A module-level name bound to a list, dict or set literal that anything mutates in place (by
    a method, or by assigning to an item or a slice of it):
    shared state between builds (or tests) in one process. Constants are tuples, frozensets or
    dicts nobody writes to."""
    problems = []
    for module, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        mutable = {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                   and isinstance(node.value, (ast.List, ast.Set, ast.ListComp, ast.SetComp))
                   for t in getattr(node, "targets", [getattr(node, "target", None)]) if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                problems.append(f"{module}: global {', '.join(node.names)}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in mutable
                    and node.func.attr in ("append", "extend", "add", "update", "insert", "pop", "clear", "remove")):
                problems.append(f"{module}: {node.func.value.id}.{node.func.attr}")
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AugAssign) else []
            problems += [f"{module}: {t.value.id}[...] =" for t in targets
                         if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id in mutable]
    assert problems == []


@cache
def top_level_names(module: str) -> frozenset[str]:
    """What ``from module import NAME`` can take: its top-level definitions, assignments, imports."""
    tree = ast.parse(modules()[module].read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.If):  # TYPE_CHECKING blocks and the like
            names.update(a.asname or a.name for n in ast.walk(node) if isinstance(n, ast.ImportFrom) for a in n.names)
    return frozenset(names)


def unresolved_imports(source: str, label: str) -> list[str]:
    """The imports of our packages in ``source`` (the file ``label``) that name no module or name of ours."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            problems += [alias.name for alias in node.names
                         if alias.name.split(".")[0] in PACKAGES and alias.name not in modules()]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in PACKAGES:
            if node.module not in modules():
                problems.append(node.module)
                continue
            problems += [f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" not in modules()
                         and alias.name not in top_level_names(node.module)]
    return [f"{label}:{name}" for name in problems]


def test_tests_and_tools_import_what_exists():
    """A moved module breaks its importers at collection, or, in a function, only when that test runs:
    every import of tzc_data and tzc_train in tests/, tools/ and the packages names something there."""
    files = [p for folder in ("tests", "tools", *PACKAGES) for p in sorted((ROOT / folder).rglob("*.py"))]
    problems = [problem for path in files
                for problem in unresolved_imports(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert problems == []
    planted = "from tzc_data.pipeline import build\nfrom tzc_data.build.pipeline import no_such, build\n"
    assert unresolved_imports(planted, "probe") == ["probe:tzc_data.pipeline", "probe:tzc_data.build.pipeline.no_such"]
