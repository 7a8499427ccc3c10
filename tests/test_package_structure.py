"""The shape of the Python package, checked from its source.

* no import cycle between pipetls modules: every import statement of every
  module (at module level or inside a function: a lazy import is still a
  dependency) is read with ``ast`` and the graph must be acyclic;
  ``errors.py`` imports nothing from pipetls;
* every prototype is an explicit module attribute of ``_ffi.py``
  (``NAME = _fn(lib, "NAME", ...)``), nothing writes into ``globals()``;
* the engine's control-command numbers in the package are the ones in
  ``engine/pipetls.h`` (one source: the header), every one of them;
* the installed package ships its ``py.typed`` marker.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import pipetls
from pipetls import _ffi

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "pybind" / "pipetls"
HEADER = REPO / "engine" / "pipetls.h"


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module a relative ``from`` import names."""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph(root: Path = SOURCE) -> dict[str, set[str]]:
    mods = _modules(root)
    top = root.name
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = _resolve(mod, is_package, node.level, node.module)
                else:
                    base = node.module or ""
                # "from . import x": x may be a submodule or a name in base
                targets = [base + "." + a.name if base + "." + a.name in mods else base
                           for a in node.names]
            for t in targets:
                if t == top or t.startswith(top + "."):
                    while t not in mods and "." in t:  # pipetls.x.Name -> pipetls.x
                        t = t.rsplit(".", 1)[0]
                    if t != mod:
                        graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    # negative controls for the checker itself
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_import_graph_sees_relative_and_lazy_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import A\n")
    (pkg / "a.py").write_text("def f():\n    from .b import B\n")
    (pkg / "b.py").write_text("from . import a\nfrom .sub.c import C\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from .. import a\nfrom ..b import B\nimport pkg.a\n")
    g = import_graph(pkg)
    assert g["pkg"] == {"pkg.a"}
    assert g["pkg.a"] == {"pkg.b"}
    assert g["pkg.b"] == {"pkg.a", "pkg.sub.c"}
    assert g["pkg.sub.c"] == {"pkg.a", "pkg.b"}
    assert find_cycle(g) == ["pkg.a", "pkg.b", "pkg.a"]


def test_no_import_cycles():
    graph = import_graph()
    assert "pipetls.connection" in graph and "pipetls.bench.cli" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_errors_is_a_leaf():
    assert import_graph()["pipetls.errors"] == set()


def test_prototypes_are_explicit_module_attributes():
    tree = ast.parse((SOURCE / "_ffi.py").read_text())
    assigned = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", None) == "_fn"):
            assert len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            name = node.targets[0].id
            symbol = node.value.args[1]
            assert isinstance(symbol, ast.Constant) and symbol.value == name, name
            assigned[name] = node.lineno
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, "id", None) == "_fn"]
    assert len(calls) == len(assigned) > 100  # no _fn call outside an assignment
    for name in assigned:
        assert callable(getattr(_ffi, name)), name
    # the prototypes of functions newer than 3.0 (_fn_since(VERSION, lib,
    # "NAME", ...)): explicit module attributes too, callable even where
    # the library lacks them (a stub that raises MissingSymbolError)
    since = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", None) == "_fn_since"):
            assert len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            name = node.targets[0].id
            symbol = node.value.args[2]
            assert isinstance(symbol, ast.Constant) and symbol.value == name, name
            since[name] = node.lineno
    since_calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                   and getattr(n.func, "id", None) == "_fn_since"]
    assert len(since_calls) == len(since) >= 6
    for name in since:
        assert callable(getattr(_ffi, name)), name
    for path in SOURCE.rglob("*.py"):
        assert "globals()" not in path.read_text(), path


def _header_defines() -> dict[str, str]:
    text = HEADER.read_text()
    return dict(re.findall(r"^#define\s+(PIPETLS_\w+)\s+(.+?)\s*$", text, re.M))


def _c_value(expr: str) -> int | bytes:
    expr = expr.strip()
    if expr.startswith('"'):
        return expr.strip('"').encode()
    m = re.fullmatch(r"\(\s*ENGINE_CMD_BASE\s*\+\s*(\d+)\s*\)", expr)
    if m:
        return _ffi.ENGINE_CMD_BASE + int(m.group(1))
    return int(expr, 0)


def test_engine_command_numbers_match_the_header():
    defines = _header_defines()
    commands = {k: v for k, v in defines.items() if k.startswith("PIPETLS_CMD_")}
    assert len(commands) >= 7 and "PIPETLS_CMD_MULTIBLOCK" in commands
    for name, expr in commands.items():
        assert hasattr(_ffi, name), "%s is in pipetls.h but not in pipetls._ffi" % name
        assert getattr(_ffi, name) == _c_value(expr), name
    ours = {n for n in dir(_ffi) if n.startswith("PIPETLS_CMD_")}
    assert ours == set(commands), "in _ffi only: %s" % sorted(ours - set(commands))
    for name in ("PIPETLS_MAX_PIPES", "PIPETLS_MAX_LANES", "PIPETLS_ENGINE_ID"):
        assert getattr(_ffi, name) == _c_value(defines[name]), name


@pytest.mark.skipif(not Path("/usr/include/openssl/engine.h").is_file(),
                    reason="OpenSSL headers not installed (apt-get install libssl-dev)")
def test_engine_cmd_base_matches_openssl():
    text = Path("/usr/include/openssl/engine.h").read_text()
    assert re.search(r"#\s*define\s+ENGINE_CMD_BASE\s+(\d+)", text).group(1) == str(
        _ffi.ENGINE_CMD_BASE)


def test_py_typed_is_shipped():
    assert (Path(pipetls.__file__).parent / "py.typed").is_file()
    assert (SOURCE / "py.typed").is_file()
