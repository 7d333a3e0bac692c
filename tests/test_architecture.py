"""The architecture rules of docs/architecture.md that import-linter does not check: no import cycle among
landscape's modules (imports inside functions count), and no import inside a function except of an optional
or platform-specific dependency."""

import ast
import pathlib

import grimp
import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "landscape"

#: imported where used because they are optional extras, platform-specific, or (pyplot) pick a GUI backend
LAZY_ALLOWED = {"mpi4py", "scipy", "selenium", "plotly", "meshio", "safetensors", "torchvision", "sklearn", "fcntl",
                "msvcrt", "ctypes", "resource", "matplotlib"}


def _cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return found


def test_no_import_cycle_among_landscape_modules():
    graph = grimp.build_graph("landscape", cache_dir=None)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for m in ("a", "b", "c"):
        graph.add_module(m)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="a")
    graph.add_import(importer="b", imported="c")
    assert _cycles(graph) == [["a", "b"]]


def _imports_inside_functions(path: pathlib.Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    found += [(sub.lineno, a.name) for a in sub.names]
                elif isinstance(sub, ast.ImportFrom):
                    found.append((sub.lineno, "." * sub.level + (sub.module or "")))
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_inside_functions_are_optional_dependencies_only(path):
    bad = [f"{path.name}:{line} {name}" for line, name in _imports_inside_functions(path)
           if name.split(".")[0] not in LAZY_ALLOWED]
    assert bad == []
