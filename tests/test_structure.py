"""The package's structure: layered rooms, arrows that point down.

``docs/design.md`` describes the layers; these tests hold the code to it.
Imports are read from the source (every ``import`` and ``from ... import``,
at module level or inside a function, except under ``if TYPE_CHECKING``),
so a deferred import that would close a cycle counts as one.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sklearn_specsig

PACKAGE = "sklearn_specsig"
ROOT = Path(sklearn_specsig.__file__).resolve().parent

#: Each room's layer (docs/design.md, "Layers"): a module may import from its
#: own room or from rooms of a strictly lower layer, never upward or sideways.
LAYERS = {
    "errors": 0,
    "_topk": 0,
    "_json": 0,
    "spectral": 1,
    "checkpoints": 1,
    "_pretrained": 1,
    "signature": 2,
    "architectures": 3,
    "store": 3,
    "kernels": 3,
    "engine": 4,
    "search": 4,
    "provenance": 4,
    "metrics": 4,
    "_rewrite": 4,
    "_zoo_spectra": 4,
    "estimators": 5,
    "datasets": 5,
    "perturb": 5,
    "plotting": 5,
    "registry": 6,
    "cli": 7,
}


def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(module):
    return (ROOT.parent / module.replace(".", "/") / "__init__.py").exists()


def _exists(module):
    return _is_package(module) or (ROOT.parent / (module.replace(".", "/") + ".py")).exists()


def _type_checking_nodes(tree):
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    return skipped


def _imports(path):
    """``(target module, imported names)`` of every package import in ``path``."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            names = [a.name for a in node.names]
            # ``from . import x`` where x is a submodule imports that module.
            subs = [n for n in names if _exists(f"{target}.{n}")]
            found += [(f"{target}.{n}", []) for n in subs]
            rest = [n for n in names if n not in subs]
            if rest or not subs:
                found.append((target, rest))
    return module, found


def _graph():
    edges, private = {}, []
    for path in sorted(ROOT.rglob("*.py")):
        module, found = _imports(path)
        targets = edges.setdefault(module, set())
        for target, names in found:
            if target == module:
                continue
            targets.add(target)
            # Importing a.b.c runs a and a.b first; a module's own
            # ancestors are already running, so they add no edge.
            parts = target.split(".")
            for i in range(2, len(parts)):
                ancestor = ".".join(parts[:i])
                if not (module == ancestor or module.startswith(ancestor + ".")):
                    targets.add(ancestor)
            private += [
                f"{module} imports {n} from {target}"
                for n in names
                if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))
            ]
    return edges, private


def _cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _room(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_import_graph_is_read():
    # The walker must see the imports it is meant to police: a known edge of
    # each kind (relative, from a package, into a subpackage's module).
    edges, _ = _graph()
    assert f"{PACKAGE}.store" in edges[f"{PACKAGE}.engine._extract"]
    assert f"{PACKAGE}.architectures" in edges[f"{PACKAGE}.engine._extract"]
    assert f"{PACKAGE}.spectral._metrics" in edges[f"{PACKAGE}.spectral"]
    assert len(edges) > 40


def test_no_import_cycle():
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_is_imported_from_another_module():
    _, private = _graph()
    assert private == []


def test_every_arrow_points_down():
    edges, _ = _graph()
    rooms = {_room(m) for m in edges} - {None}
    assert rooms <= set(LAYERS), f"rooms without a layer: {sorted(rooms - set(LAYERS))}"
    upward = [
        f"{source} -> {target}"
        for source, targets in edges.items()
        for target in targets
        if _room(source) is not None and _room(target) is not None
        and _room(source) != _room(target)
        and LAYERS[_room(target)] >= LAYERS[_room(source)]
    ]
    assert upward == []


@pytest.mark.parametrize("names", [
    "LineageClassifier, SignatureClusterer, KNNPerformanceRegressor, "
    "SpearmanModuleKernel, pairwise_similarity",
    "Signature, SignatureIndex, lineage_pvalue",
])
def test_the_similarity_layer_does_not_load_torch(names):
    code = (
        "import sys, sklearn_specsig\n"
        f"from sklearn_specsig import {names}\n"
        "import sklearn_specsig.metrics\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_signing_does_load_torch():
    # The check above can fail: the engine does need torch.
    code = ("import sys\nfrom sklearn_specsig import compute_signature\n"
            "from sklearn_specsig.engine import extract_spectra\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "True"


def test_no_module_is_a_god_object():
    long = {
        _module_name(p): n
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert long == {}
