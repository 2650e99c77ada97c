"""Import direction (docs/architecture.md): read from the source, every import statement of every
module, including the imports inside functions and under ``TYPE_CHECKING``.

dibr_core's layers, bottom to top: the library, then models and data, then training and
evaluation, then the entry points. A module imports only its own layer or the layers below; no
module imports an entry point; training and evaluation do not import each other; and there is
no import cycle between modules. To add a rule, add a :class:`Rule` to ``RULES`` (or a layer to
``LAYERS``); the checker and its self-tests below need no change. Checking another package (such
as dibr_blender, whose ``jobs/`` must not import ``bpy`` or ``scene/``) means naming it in
``PACKAGES`` and giving its modules layers (above dibr_core's) or rules.
"""
from __future__ import annotations

import ast
import importlib.util
import sys
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dibr_core",)                 # source trees whose modules are checked
SKIP_DIRS = {"_build", "_build_sanitize", "csrc", "weights", "__pycache__"}

Graph = Dict[str, Set[str]]               # module -> the modules (and outside names) it imports


@dataclass(frozen=True)
class Layer:
    """``patterns``: fnmatch patterns of dotted module names; a module belongs to the first layer
    (from the top of ``LAYERS``) with a matching pattern. ``peers``: whether its modules may
    import each other."""

    name: str
    patterns: Tuple[str, ...]
    peers: bool = True


@dataclass(frozen=True)
class Rule:
    """Modules matching ``importers`` must not import modules matching ``forbidden``."""

    why: str
    importers: Tuple[str, ...]
    forbidden: Tuple[str, ...]


def _tree(pkg: str) -> Tuple[str, str]:
    return pkg, pkg + ".*"


ENTRY_POINTS = ("dibr_core.bench", "dibr_core.demo", "dibr_core.*.__main__")

# Top first. The library is the catch-all, so a new top-level module starts there.
LAYERS: List[Layer] = [
    Layer("entry points", ENTRY_POINTS, peers=False),
    Layer("training and evaluation", _tree("dibr_core.train") + _tree("dibr_core.eval")),
    Layer("models and data", _tree("dibr_core.models") + _tree("dibr_core.data") + ("dibr_core.inference",)),
    Layer("library", _tree("dibr_core")),
]

RULES: List[Rule] = [
    Rule("no module imports an entry point", ("*",), ENTRY_POINTS),
    Rule("training does not import evaluation", _tree("dibr_core.train"), _tree("dibr_core.eval")),
    Rule("evaluation does not import training", _tree("dibr_core.eval"), _tree("dibr_core.train")),
    Rule("only dibr_blender imports bpy", _tree("dibr_core"), _tree("bpy")),
]


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def layer_of(module: str, layers: Sequence[Layer] = LAYERS) -> Optional[int]:
    """Index in ``layers`` counted from the bottom (0 = the lowest), None when no layer matches."""
    for i, layer in enumerate(layers):
        if _matches(module, layer.patterns):
            return len(layers) - 1 - i
    return None


def module_files(packages: Sequence[str] = PACKAGES) -> Dict[str, Path]:
    """``{dotted module name: file}`` of every module of ``packages`` (packages as their ``__init__``)."""
    out: Dict[str, Path] = {}
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if SKIP_DIRS & set(rel.parts[:-1]):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(module: str, path: Path, known: Set[str]) -> Set[str]:
    """Every module named by an import statement anywhere in the file. ``from X import n`` names
    ``X.n`` when that is a module of ``known``, else ``X``; relative imports are resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    out.discard(module)
    return out


def import_graph(packages: Sequence[str] = PACKAGES) -> Graph:
    files = module_files(packages)
    known = set(files)
    return {m: imports_of(m, p, known) for m, p in files.items()}


def violations(graph: Graph, layers: Sequence[Layer] = LAYERS, rules: Sequence[Rule] = RULES) -> List[str]:
    """One line per import that breaks the layering or a rule (the first reason found), and one per
    module outside every layer."""
    out: List[str] = []
    for mod in sorted(graph):
        here = layer_of(mod, layers)
        if here is None:
            out.append(f"{mod}: in no layer (add it to LAYERS)")
            continue
        for dep in sorted(graph[mod]):
            there = layer_of(dep, layers) if dep in graph else None
            if there is not None and (there > here or (there == here and not layers[len(layers) - 1 - here].peers)):
                out.append(f"{mod} ({layers[len(layers) - 1 - here].name}) imports {dep} "
                           f"({layers[len(layers) - 1 - there].name})")
                continue
            broken = [r for r in rules if _matches(mod, r.importers) and _matches(dep, r.forbidden)]
            if broken:
                out.append(f"{mod} imports {dep}: {broken[0].why}")
    return out


def cycles(graph: Graph) -> List[List[str]]:
    """The import cycles among the graph's own modules (each strongly connected component of more
    than one module, or a module importing itself), by Tarjan's algorithm."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: List[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph()


def test_the_scan_sees_module_and_function_level_imports(graph: Graph) -> None:
    assert "dibr_core.models.predictor" in graph["dibr_core.inference"]            # module level
    assert "dibr_core.mesh_repair" in graph["dibr_core.train.generator"]          # inside a function
    assert "dibr_core.voxels" in graph["dibr_core.data.shapes"]                   # inside a function
    assert "dibr_core.models.generator" in graph["dibr_core.inference"]           # under TYPE_CHECKING
    assert "dibr_core._ext" in graph["dibr_core.backend"]                         # from package import module
    assert len(graph) > 40


def test_every_module_is_in_a_layer_and_imports_point_down(graph: Graph) -> None:
    assert violations(graph) == []


def test_no_import_cycles(graph: Graph) -> None:
    assert cycles(graph) == []


def test_the_blender_wheel_holds_everything_the_extension_imports(graph: Graph) -> None:
    """tools/package.py leaves dibr_core's train/ and eval/ out of the extension's wheel: every
    dibr_core module imported by a shipped module or by dibr_blender must be shipped too."""
    spec = importlib.util.spec_from_file_location("dibr_tools_package_layering", ROOT / "tools" / "package.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool
    spec.loader.exec_module(tool)
    files = module_files()
    shipped = {m for m, p in files.items() if "dibr_core/" + p.relative_to(ROOT / "dibr_core").as_posix()
               in {name for name, _ in tool._core_files()}}
    assert "dibr_core.inference" in shipped and "dibr_core.models.predictor" in shipped
    assert not any(m.startswith(("dibr_core.train", "dibr_core.eval")) for m in shipped)
    blender = import_graph(("dibr_blender",))
    needed = {d for m in shipped for d in graph[m]} | {d for ds in blender.values() for d in ds}
    missing = sorted(d for d in needed if d in graph and d not in shipped)
    assert missing == []


def test_the_checker_reports_what_it_should() -> None:
    """The checker itself, on a made-up graph with one violation of each kind."""
    fake: Graph = {
        "dibr_core.render": {"dibr_core.models.predictor"},                 # library -> models
        "dibr_core.models.predictor": {"dibr_core.train.predictor"},        # models -> training
        "dibr_core.train.predictor": {"dibr_core.eval.predictor", "dibr_core.render"},
        "dibr_core.eval.predictor": {"dibr_core.bench"},                    # evaluation -> entry point
        "dibr_core.bench": {"dibr_core.demo"},                              # entry point -> entry point
        "dibr_core.demo": {"bpy"},
        "dibr_core.mesh": set(),
        "dibr_blender.ui": {"dibr_core.bench"},                             # outside the layers' order
    }
    found = violations(fake)
    assert any(v.startswith("dibr_core.render (library) imports dibr_core.models.predictor") for v in found)
    assert any(v.startswith("dibr_core.models.predictor (models and data) imports dibr_core.train") for v in found)
    assert any("training does not import evaluation" in v for v in found)
    assert any(v.startswith("dibr_core.eval.predictor (training and evaluation) imports dibr_core.bench")
               for v in found)
    assert any(v.startswith("dibr_core.bench (entry points) imports dibr_core.demo") for v in found)
    assert any("only dibr_blender imports bpy" in v for v in found)
    assert "dibr_blender.ui: in no layer (add it to LAYERS)" in found
    assert len(found) == 7
    # A layer above the entry points may not import them either (the rule, not the order, says so).
    above = violations(fake, [Layer("blender", ("dibr_blender.*",))] + LAYERS)
    assert sorted(above) == sorted([v for v in found if not v.startswith("dibr_blender.ui")]
                                   + ["dibr_blender.ui imports dibr_core.bench: no module imports an entry point"])
    assert cycles(fake) == [["dibr_core.models.predictor", "dibr_core.render", "dibr_core.train.predictor"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
