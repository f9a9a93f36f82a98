"""The tree shows the architecture: which package may import which, no import circles, small
modules. See docs/design.md, "Where things live".

Every ``import fray...`` in a hand-written module counts, at module level or inside a function;
only imports under ``if TYPE_CHECKING:`` (types, never run) are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
GENERATED = "fray.wire.pb"
MAX_LINES = 700

# package (or module: the longest match wins) -> the fray packages it may import (itself,
# fray.errors and the generated fray.wire.pb are always allowed).
ALLOWED = {
    "fray.common": set(),
    "fray.wire": {"fray.common"},
    "fray.controller": {"fray.wire", "fray.common"},
    "fray.worker": {"fray.wire", "fray.common"},
    "fray.client": {"fray.wire", "fray.common", "fray.job.context"},  # the protocol only
    "fray.job": {"fray.common"},
    "fray.job.factory": {"fray.common", "fray.client"},  # for create_job_ctx("fray")
    "fray.v2": {"fray.common"},
    # the fray backend of fray.v2: a client of fray's controller
    "fray.v2.backends.fray": {"fray.common", "fray.client", "fray.wire"},
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((SRC / "fray").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if not name.startswith(GENERATED):
            modules[name] = path
    return modules


MODULES = _modules()


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _imports(name: str, path: Path) -> Iterator[str]:
    """The fray modules `name` imports (outside TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from fray.x import y` may name a module y or an attribute of fray.x.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        if _type_checking_only(node, parents):
            continue
        for target in targets:
            if target == "fray" or target.startswith("fray."):
                yield target


GRAPH = {name: sorted(set(_imports(name, path))) for name, path in MODULES.items()}


def _rule(module: str) -> str | None:
    """The ALLOWED key that governs `module` (None: an entry point, which may use anything)."""
    keys = [k for k in ALLOWED if module == k or module.startswith(k + ".")]
    return max(keys, key=len) if keys else None


def test_packages_import_only_what_the_layout_allows() -> None:
    wrong = []
    for module, targets in GRAPH.items():
        rule = _rule(module)
        if rule is None:
            continue  # fray.cli, fray.demo, fray.local_cluster: entry points may use anything
        package = ".".join(module.split(".")[:2])
        allowed = ALLOWED[rule] | {package, "fray.errors", GENERATED}
        for target in targets:
            if target != "fray" and not any(
                target == a or target.startswith(a + ".") for a in allowed
            ):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against the layout (docs/design.md):\n" + "\n".join(wrong)


def test_no_import_circles() -> None:
    def deps(module: str) -> list[str]:
        return [t for t in GRAPH.get(module, []) if t in GRAPH and t != module]

    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in deps(module):
            if state.get(target) == 1:
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in GRAPH:
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_hand_written_modules_stay_small() -> None:
    big = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines: {big}"
