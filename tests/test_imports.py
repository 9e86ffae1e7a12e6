"""The project's import graph: no cycles, few in-function imports of its own modules.

Read from the source with :mod:`ast` (nothing is imported). The graph has an edge for every import of a
project module, wherever it is (at the top, inside a function, under ``if TYPE_CHECKING:``), so a cycle
hidden by a lazy or type-only import counts; it must be acyclic, and every project module must import
in a fresh interpreter. An *in-function* import is one inside a function body.

Run as a script for the count of in-function project imports, file by file, and the ones without a
comment saying why (the rule: imports at the top, except optional dependencies and a fast ``--help``):
``python tests/test_imports.py``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("symmetry", "analysis", "theory", "experiments", "benchmarks")


def project_modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted name -> file of every module of the project's packages (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, where: str = "top") -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement with where it runs: ``top`` (on import), ``function`` or ``type`` (type checkers)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, where
        elif isinstance(node, ast.If) and _is_type_checking(node) and where == "top":
            for child in node.body:
                yield from _imports(ast.Module([child], []), "type")
            for child in node.orelse:
                yield from _imports(ast.Module([child], []), where)
        else:
            inner = "function" if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else where
            yield from _imports(node, inner)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known) -> set[str]:
    """The project modules an import statement loads (a name imported from a package may be a submodule)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".")
            anchor = parts if is_package else parts[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = set()
    for name in names:
        while name and name not in known:  # `import a.b.c` of a non-module attribute: the nearest module
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def import_graph(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """The import graph ``module -> project modules`` it imports anywhere (at the top, inside a function or for
    type checkers only: a cycle hidden by a lazy import is still a knot), and the in-function project imports
    ``(module, line, target)``, one per statement and target."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    inner: list[tuple[str, int, str]] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for node, where in _imports(tree):
            targets = _targets(node, module, path.name == "__init__.py", modules)
            graph[module] |= targets
            if where == "function":
                inner += [(module, node.lineno, target) for target in sorted(targets)]
    return graph, inner


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _has_comment(lines: list[str], lineno: int) -> bool:
    """A ``#`` comment on the import's line, or on the line above its block of consecutive imports."""
    if "#" in lines[lineno - 1]:
        return True
    k = lineno - 2
    while k >= 0 and lines[k].strip().startswith(("import ", "from ")):
        if "#" in lines[k]:
            return True
        k -= 1
    return k >= 0 and lines[k].strip().startswith("#")


MAX_IN_FUNCTION = 30
"""Issue 22: fewer in-function imports of the project's own modules than this, outside tests/."""


def in_function_report(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> tuple[dict[str, int], list[str]]:
    """In-function project imports per file, and ``file:line -> target`` for those without a comment."""
    modules = project_modules(root, packages)
    _, inner = import_graph(modules)
    counts: dict[str, int] = {}
    bare = []
    for module, line, target in inner:
        path = modules[module]
        rel = path.relative_to(root).as_posix()
        counts[rel] = counts.get(rel, 0) + 1
        if not _has_comment(path.read_text().splitlines(), line):
            bare.append(f"{rel}:{line} -> {target}")
    return dict(sorted(counts.items())), bare


# --------------------------------------------------------------------------- tests


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_flags_a_cycle(tmp_path):
    """Negative controls: constructed cyclic pairs, the back edge at the top, lazy, or for type checkers only."""
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from .b import g\n\ndef f():\n    return g()\n",
        "pkg/c.py": "import pkg.a\n",
    }
    back_edges = {
        "try:\n    import pkg.a\nexcept ImportError:\n    pass\n": [],
        "def g():\n    from pkg import a\n    return a\n": [("pkg.b", 2, "pkg.a")],
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n": [],
    }
    for back, inner_expected in back_edges.items():
        _write(tmp_path, {**files, "pkg/b.py": back})
        graph, inner = import_graph(project_modules(tmp_path, ("pkg",)))
        assert cycles(graph) == [["pkg.a", "pkg.b"]], back
        assert inner == inner_expected
    _write(tmp_path, {"pkg/b.py": "import pkg.c\n\ndef g():\n    return 1\n"})  # a -> b -> c -> a
    assert cycles(import_graph(project_modules(tmp_path, ("pkg",)))[0]) == [["pkg.a", "pkg.b", "pkg.c"]]
    _write(tmp_path, {"pkg/b.py": "import json\n\ndef g():\n    return 1\n"})  # the positive control
    assert cycles(import_graph(project_modules(tmp_path, ("pkg",)))[0]) == []


def test_no_import_cycle():
    graph, _ = import_graph(project_modules())
    assert cycles(graph) == [], "modules that import each other (lazily or not): move the shared part out"


_FORK_EACH = """
import importlib, os, sys
import matplotlib, numpy, pandas, scipy, seaborn, torch  # third-party only: each child starts with no project module
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as err:
            print(f"{name}: {type(err).__name__}: {err}", file=sys.stderr)
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1]:
        failed.append(name)
sys.exit(1 if failed else 0)
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_in_a_fresh_interpreter():
    """Each module imported first, alone (a forked child with no project module loaded yet), so an
    order-dependent cycle would show as an ImportError whichever module a caller imports first."""
    names = sorted(project_modules())
    run = subprocess.run([sys.executable, "-c", _FORK_EACH, *names], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_fresh_import_check_catches_an_order_dependent_cycle(tmp_path):
    """Negative control: ``pkg.a`` imports fine first, ``pkg.b`` does not (it needs ``a`` to finish first)."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import g\n\ndef f():\n    return g()\n",
            "pkg/b.py": "import pkg.a\n\ndef g():\n    return 1\n",
        },
    )
    for names, code in ((["pkg.a"], 0), (["pkg.b"], 1), (["pkg.a", "pkg.b"], 1)):
        run = subprocess.run([sys.executable, "-c", _FORK_EACH, *names], capture_output=True, text=True, cwd=tmp_path)
        assert run.returncode == code, (names, run.stderr)


def test_all_modules_import_in_one_fresh_interpreter():
    """Every module, in sorted order, in one new interpreter (the fast form of the test above)."""
    names = sorted(project_modules())
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    run = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]


def test_in_function_imports_are_few_and_each_says_why():
    counts, bare = in_function_report()
    assert sum(counts.values()) < MAX_IN_FUNCTION, counts
    assert not bare, "in-function imports without a comment saying why:\n" + "\n".join(bare)


def test_the_report_flags_an_uncommented_in_function_import(tmp_path):
    """Negative control: an import of a project module inside a function, with no comment, is counted and flagged;
    the same import with a comment is counted but not flagged."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "def f():\n    from pkg import b\n    return b\n",
            "pkg/b.py": "def g():\n    from pkg import a  # lazy: a imports b\n    return a\n",
        },
    )
    counts, bare = in_function_report(tmp_path, ("pkg",))
    assert counts == {"pkg/a.py": 1, "pkg/b.py": 1}
    assert bare == ["pkg/a.py:2 -> pkg.b"]


if __name__ == "__main__":
    counts, bare = in_function_report()
    for rel, n in counts.items():
        print(f"{n:4d}  {rel}")
    print(f"{sum(counts.values()):4d}  in-function imports of project modules outside tests/")
    if bare:
        print(f"\n{len(bare)} without a comment saying why:")
        print("\n".join(f"  {b}" for b in bare))
