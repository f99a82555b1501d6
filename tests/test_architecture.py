"""The architecture's rules, held by tests (docs/architecture.md): imports follow the arrows
between layers, no import circles, an in-function import of our own code says why, and the
module table names every module."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("app", "agent", "web", "storage", "archive")

# A module belongs to the first layer one of whose prefixes it matches.
LAYERS = (
    ("entry", ("netmon.app.cli", "netmon.app.commands", "netmon.app.demo")),
    ("contract", ("netmon.storage.contract",)),
    ("storage", ("netmon.storage",)),
    ("archive", ("netmon.archive",)),
    ("agent", ("netmon.agent",)),
    ("app", ("netmon.app",)),
    ("web", ("netmon.web",)),
)
# Which other layers each layer may import (a layer may always import itself): the same table
# as docs/architecture.md, which test_docs_show_the_same_arrows compares with this one.
MAY_IMPORT: dict[str, set[str]] = {
    "contract": set(),
    "storage": {"contract"},
    "archive": {"storage", "contract"},
    "agent": {"contract"},
    "app": {"storage", "archive", "contract"},
    "web": {"app", "storage", "archive", "contract"},
    "entry": {"contract", "storage", "archive", "agent", "app", "web"},
}


def module_files() -> dict[str, Path]:
    """Every module of the five folders by its installed name (``app/x.py`` is ``netmon.app.x``)."""
    modules = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "node_modules" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(("netmon", *parts))] = path
    return modules


MODULES = module_files()


def layer_of(module: str) -> str | None:
    """The layer a module belongs to, or None for a name outside every layer."""
    for layer, prefixes in LAYERS:
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return layer
    return None


# A comment for a tool, not for a reader: it says nothing about why.
PRAGMA = re.compile(
    r"#\s*(noqa\b|type:|fmt:|pragma\b|pyright:|mypy:|TODO\b|FIXME\b)", re.IGNORECASE
)


@dataclass(frozen=True)
class Import:
    """One import of one of our modules: where it is, and whether it sits inside a function."""

    target: str
    line: int
    in_function: bool
    has_reason: bool


def called_import(node: ast.AST) -> str | None:
    """The module an ``importlib.import_module("...")`` call names, when it is written out."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            return node.args[0].value
    return None


def imports_of(
    module: str, source: str, known: Collection[str] = MODULES, is_package: bool = False
) -> list[Import]:
    """Every ``netmon.*`` module ``source`` imports, at module level, indented or in functions
    (``importlib.import_module`` of a written-out name included).

    ``from netmon.storage.contract import wire`` imports the module ``netmon.storage.contract.wire``
    when that is a module, else the package ``netmon.storage.contract``.
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    # Lines with a comment that says something: a pragma for a tool is no reason.
    commented = {
        token.start[0]
        for token in tokens
        if token.type == tokenize.COMMENT and not PRAGMA.match(token.string)
    }
    import_nodes = [
        node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    import_starts = {node.end_lineno: node.lineno for node in import_nodes}

    def has_reason(node: ast.stmt | ast.expr) -> bool:
        # A comment at the end of the statement, or on the line above it (or above the run of
        # import lines it ends).
        if commented & set(range(node.lineno, (node.end_lineno or node.lineno) + 1)):
            return True
        above = node.lineno - 1
        while above in import_starts:
            above = import_starts[above] - 1
        return above in commented and lines[above - 1].lstrip().startswith("#")

    def targets(node: ast.Import | ast.ImportFrom) -> Iterator[str]:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
            return
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        for alias in node.names:
            yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base

    def walk(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            found: Iterable[str] = ()
            if isinstance(child, ast.Import | ast.ImportFrom):
                found = dict.fromkeys(targets(child))
            elif (name := called_import(child)) is not None:
                found = (name,)
            for target in found:
                # Un-prefixed names (`from app.settings import ...`) count too: they would import
                # from the checkout, never from an install, and load a module under two names.
                if target.split(".")[0] in ("netmon", *FOLDERS):
                    yield Import(target, child.lineno, in_function, has_reason(child))
            inside = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            yield from walk(child, in_function or inside)

    return list(walk(tree, False))


def wrong_arrows(
    module: str, source: str, known: Collection[str] = MODULES, is_package: bool = False
) -> list[str]:
    """The imports in ``source`` (module ``module``) that the arrows do not allow."""
    here = layer_of(module)
    problems = []
    for found in imports_of(module, source, known, is_package):
        there = layer_of(found.target)
        if here is None or there is None or (there != here and there not in MAY_IMPORT[here]):
            problems.append(f"{module}:{found.line} ({here}) imports {found.target} ({there})")
    return problems


def unexplained_imports(
    module: str, source: str, known: Collection[str] = MODULES, is_package: bool = False
) -> list[str]:
    """In-function imports of our modules with no comment saying why."""
    return [
        f"{module}:{found.line} imports {found.target} inside a function, without a reason"
        for found in imports_of(module, source, known, is_package)
        if found.in_function and not found.has_reason
    ]


def cycles(graph: Mapping[str, Collection[str]]) -> list[list[str]]:
    """The import circles of ``graph`` (module -> modules it imports), one path round each.

    Tarjan's strongly connected components; each one with more than one member is a circle.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while not members or members[-1] != node:
                members.append(stack.pop())
            if len(members) > 1:
                found.append(_path_round(graph, set(members)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _path_round(graph: Mapping[str, Collection[str]], members: set[str]) -> list[str]:
    """A shortest path from the first member (by name) back to itself, inside the component."""
    start = min(members)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return [*paths[node], start]
            if nxt in members and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"no path round {sorted(members)}")


def parents(module: str) -> list[str]:
    """The packages above ``module``: netmon.app.ingest.frames -> netmon.app.ingest, netmon.app."""
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(len(parts) - 1, 1, -1)]


def sources() -> Iterator[tuple[str, str, bool]]:
    for module, path in MODULES.items():
        yield module, path.read_text(encoding="utf-8"), path.name == "__init__.py"


def test_imports_follow_the_arrows() -> None:
    problems = [
        p
        for module, text, package in sources()
        for p in wrong_arrows(module, text, MODULES, package)
    ]
    allowed = "\n".join(
        f"  {layer} -> {', '.join(sorted(MAY_IMPORT[layer])) or 'nothing of ours'}"
        for layer in MAY_IMPORT
    )
    assert not problems, (
        "imports against the arrows of docs/architecture.md:\n  "
        + "\n  ".join(problems)
        + f"\nallowed (a layer may also import itself):\n{allowed}"
    )


def test_no_import_circles() -> None:
    # Importing netmon.app.ingest.frames also runs netmon/app/ingest/__init__.py and
    # netmon/app/__init__.py: an import reaches the target's parent packages too (but for the
    # importer's own, which Python has already begun to import).
    graph = {
        module: {
            reached
            for found in imports_of(module, text, MODULES, package)
            for reached in (found.target, *parents(found.target))
            if reached in MODULES and reached != module and reached not in parents(module)
        }
        for module, text, package in sources()
    }
    circles = [" -> ".join(path) for path in cycles(graph)]
    assert not circles, (
        "import circles (in-function and TYPE_CHECKING imports count):\n  " + "\n  ".join(circles)
    )


def test_every_in_function_import_says_why() -> None:
    problems = [
        p
        for module, text, package in sources()
        for p in unexplained_imports(module, text, MODULES, package)
    ]
    assert not problems, (
        "in-function imports of our modules need a comment saying why, on the line above or at "
        "the end of the line (start-up cost of a command, an optional heavy dependency):\n  "
        + "\n  ".join(problems)
    )


def test_a_wrong_arrow_is_reported() -> None:
    source = "from netmon.app.settings import Settings\n"
    assert wrong_arrows("netmon.agent.spool", source) == [
        "netmon.agent.spool:1 (agent) imports netmon.app.settings (app)"
    ]


def test_every_kind_of_import_is_checked() -> None:
    source = """\
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import netmon.web.factory
from netmon.storage.contract import wire
from netmon.app import cli

if TYPE_CHECKING:
    from netmon.archive.manager import ArchiveManager


def handler():
    from netmon.web.templating import templates

    return templates, importlib.import_module("netmon.web.views")  # a plugin
"""
    assert wrong_arrows("netmon.storage.eventlog", source) == [
        "netmon.storage.eventlog:6 (storage) imports netmon.web.factory (web)",
        "netmon.storage.eventlog:8 (storage) imports netmon.app.cli (entry)",
        "netmon.storage.eventlog:11 (storage) imports netmon.archive.manager (archive)",
        "netmon.storage.eventlog:15 (storage) imports netmon.web.templating (web)",
        "netmon.storage.eventlog:17 (storage) imports netmon.web.views (web)",
    ]
    assert unexplained_imports("netmon.storage.eventlog", source) == [
        "netmon.storage.eventlog:15 imports netmon.web.templating inside a function, "
        "without a reason"
    ]


def test_entry_modules_may_import_anything_and_nothing_imports_them() -> None:
    source = (
        "from netmon.agent.pipeline import Pipeline\nfrom netmon.web.factory import create_app\n"
    )
    assert wrong_arrows("netmon.app.commands.serve", source) == []
    assert wrong_arrows("netmon.app.settings", "from netmon.app.commands import serve\n") == [
        "netmon.app.settings:1 (app) imports netmon.app.commands.serve (entry)"
    ]


def test_relative_imports_are_resolved() -> None:
    assert wrong_arrows("netmon.agent.spool", "from ..app import settings\n") == [
        "netmon.agent.spool:1 (agent) imports netmon.app.settings (app)"
    ]


def test_a_reason_above_or_beside_an_in_function_import_is_accepted() -> None:
    source = """\
def run():
    # Start-up cost: scikit-learn is imported only by this command.
    from netmon.app.analysis.classifier import Classifier
    from netmon.app.analysis.features import vector

    from netmon.app.settings import Settings  # keeps `netmon --help` fast
    return Classifier, vector, Settings
"""
    assert unexplained_imports("netmon.app.commands.model", source) == []


def test_an_unprefixed_import_of_our_folders_is_reported() -> None:
    source = "def load():\n    from app.settings import Settings  # old name\n    return Settings\n"
    assert wrong_arrows("netmon.agent.spool", source) == [
        "netmon.agent.spool:2 (agent) imports app.settings (None)"
    ]


def test_a_tool_pragma_is_no_reason() -> None:
    source = """\
def run():
    # noqa: PLC0415
    from netmon.app.settings import Settings
    from netmon.app.analysis.features import vector  # type: ignore[attr-defined]
    return Settings, vector
"""
    assert unexplained_imports("netmon.app.commands.model", source) == [
        "netmon.app.commands.model:3 imports netmon.app.settings inside a function, "
        "without a reason",
        "netmon.app.commands.model:4 imports netmon.app.analysis.features inside a function, "
        "without a reason",
    ]


def test_parent_packages_of_a_target_are_reached() -> None:
    assert parents("netmon.app.ingest.frames") == ["netmon.app.ingest", "netmon.app"]


def test_a_circle_is_reported_with_its_members() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]


# The module table of docs/architecture.md: | package | module | concept |, e.g.
# | app/ingest | frames.py | ... |. An __init__.py is listed (as `__init__.py`) when it holds code.
ROW = re.compile(
    r"^\|\s*((?:app|agent|web|storage|archive)(?:/[\w/]+)?)\s*\|\s*`?([\w.]+\.py)`?\s*\|"
)


def holds_code(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return any(
        not (isinstance(node, ast.ImportFrom) and node.module == "__future__") for node in body
    )


def test_module_table_names_every_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = {f"{m[1]}/{m[2]}" for m in map(ROW.match, text.splitlines()) if m}
    modules = {
        path.relative_to(ROOT).as_posix()
        for path in MODULES.values()
        if path.name != "__init__.py" or holds_code(path)
    }
    assert not modules - listed, (
        f"modules missing from docs/architecture.md: {sorted(modules - listed)}"
    )
    assert not listed - modules, (
        f"docs/architecture.md lists modules that do not exist: {sorted(listed - modules)}"
    )


def test_docs_show_the_same_arrows() -> None:
    # The arrows table: | layer | modules | may import |, as in | agent | `netmon.agent.*` |
    # contract |; the last column a comma-separated list of layers, or "nothing".
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    documented = {}
    for line in text.splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in MAY_IMPORT and cells[1].startswith("netmon."):
            documented[cells[0]] = {name.strip() for name in cells[2].split(",")} - {"nothing", ""}
    assert documented == MAY_IMPORT
