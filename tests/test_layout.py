"""The house rules of the package, checked on its source: no module over 400 lines, no function over 60 lines,
no import circle between modules, no private name imported from another module, internal code never imports a
deprecated module."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vqvae"
DEPRECATED = {"vqvae.model", "vqvae.audio_model", "vqvae.classifier", "vqvae.data.idx", "vqvae.data.cifar",
              "vqvae.data.folder", "vqvae.data.speech"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names) of every ``from vqvae... import`` and ``import vqvae...`` in a module, anywhere."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vqvae"):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names if a.name.startswith("vqvae"))
    return found


def test_no_module_over_400_lines_and_no_function_over_60():
    too_long = []
    for name, path in _modules().items():
        lines = path.read_text().count("\n")
        if lines > 400:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long


def test_no_import_circle():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = set()
        for mod, names in _imports(name, path):
            # `from vqvae.x import y` depends on vqvae.x.y when that is a module, else on vqvae.x
            deps.update(f"{mod}.{n}" if f"{mod}.{n}" in modules else mod for n in names or [""])
        graph[name] = {d for d in deps if d in modules and d != name}
    # a package's __init__ that re-exports its modules is not a circle with them: drop edges module -> own package
    for name in graph:
        graph[name] = {d for d in graph[name] if not name.startswith(d + ".")}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                pytest.fail(f"import circle: {' -> '.join(path[path.index(dep):] + [dep])}")
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_private_name_imported_across_modules_and_no_deprecated_import():
    bad = []
    for name, path in _modules().items():
        for mod, names in _imports(name, path):
            bad.extend(f"{name} imports {mod}.{n}" for n in names if n.startswith("_") and not n.endswith("__"))
            if mod in DEPRECATED and name not in DEPRECATED:
                bad.append(f"{name} imports the deprecated {mod}")
    assert not bad
