"""The house rules of the package, checked on its source: every room (a top-level module or package of
``vqvae``) imports only rooms below it in :data:`RANKS`, the order the README's layout lists them in; no
import circle between modules; no module over 400 lines and no function over 60 lines; no private name
imported from another module."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "vqvae"
# The rooms of the package, lowest first: each imports only rooms before it. The package's own ``__init__``
# (the public names) and ``__main__`` sit above all of them, and no room imports them.
RANKS = ["errors", "fileio", "config", "devices", "distributed", "checkpoint", "recipes", "metrics",
         "likelihoods", "spectral", "quantize", "nets", "data", "report", "models", "runs", "reconstruct",
         "codes", "priors", "judges", "evaluate", "train", "cli"]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names) of every ``from vqvae... import`` and ``import vqvae...`` in a module,
    anywhere."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vqvae"):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names if a.name.startswith("vqvae"))
    return found


def _room(module: str) -> str:
    """The room of a module: ``vqvae.data.images.idx`` -> ``data``; the package itself -> ``vqvae``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vqvae"


def upward_imports(modules: dict[str, Path]) -> list[str]:
    """Every import of a room by a room that ranks below it (or of the package's public names by a room)."""
    rank = {room: i for i, room in enumerate(RANKS)}
    bad = []
    for name, path in modules.items():
        here = _room(name)
        if here not in rank:
            continue
        for mod, names in _imports(name, path):
            # `from vqvae import checkpoint` imports the module vqvae.checkpoint, not the public names
            targets = [f"{mod}.{n}" if f"{mod}.{n}" in modules else mod for n in names or [""]]
            for there in {_room(t) for t in targets} - {here}:
                if rank.get(there, len(RANKS)) > rank[here]:
                    bad.append(f"{name} imports {mod} ({here} ranks below {there})")
    return bad


def test_every_room_is_ranked():
    # configs: the recipe files
    rooms = {_room(name) for name in _modules()} - {"vqvae", "__main__", "configs"}
    assert rooms == set(RANKS) and len(RANKS) == len(set(RANKS))


def test_rooms_import_only_rooms_ranked_below_them():
    assert not upward_imports(_modules())


def test_an_upward_import_is_caught(tmp_path):
    # a low room importing a higher one, the public names, and two lower modules
    planted = tmp_path / "metrics.py"
    planted.write_text("from vqvae.models import VQVAE\nfrom vqvae import VQVAE\n"
                       "from vqvae import checkpoint, fileio\n")
    modules = {**_modules(), "vqvae.metrics": planted}
    assert [b for b in upward_imports(modules) if b.startswith("vqvae.metrics ")] == [
        "vqvae.metrics imports vqvae.models (metrics ranks below models)",
        "vqvae.metrics imports vqvae (metrics ranks below vqvae)"]


def test_the_readme_lists_the_rooms_in_rank_order():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^## Layout\n.*?^```\n(.*?)^```", text, flags=re.S | re.M)
    assert block, "README.md has no ## Layout section with a code block"
    listed = re.findall(r"^  (\w+)(?:/|\.py)(?:\s|$)", block.group(1), flags=re.M)
    assert listed == RANKS


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
    # a package's __init__ that re-exports its modules is not a circle with them:
    # drop edges module -> own package
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


def test_no_relative_import():
    """Every import names its module in full (``from vqvae.x import y``): the direction and circle checks read
    those names, and a relative import would slip past them."""
    relative = [f"{name}: from {'.' * node.level}{node.module or ''} import ..."
                for name, path in _modules().items() for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ImportFrom) and node.level > 0]
    assert not relative


def test_no_private_name_imported_across_modules():
    bad = []
    for name, path in _modules().items():
        for mod, names in _imports(name, path):
            bad.extend(f"{name} imports {mod}.{n}" for n in names
                       if n.startswith("_") and not n.endswith("__"))
    assert not bad
