"""The package's imports flow one way: no cycle between modules, no import from a lower layer up.

Every ``import`` in ``src/lnlab`` counts, including those inside functions (a lazy import is
still a dependency; it only moves the failure to run time). Layers are listed lowest first; a
module belongs to the layer of the longest prefix that names it, and may import its own layer
or any lower one. The order and its reasons are in docs/development.md ("Layers").
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("lnlab", "lnlab.errors", "lnlab.io", "lnlab.limits", "lnlab.specs"),  # no lnlab imports
    ("lnlab.norms",),
    ("lnlab.models",),
    ("lnlab.surgery",),
    ("lnlab.surgery_fold",),
    # the packaged-checkpoint resolver finds norms with surgery; the WordNet loader tokenizes
    # with its tokenizer, so both sit above surgery
    ("lnlab.models.pretrained", "lnlab.data"),
    ("lnlab.train", "lnlab.analysis"),
    ("lnlab.plotting",),
    ("lnlab.runner",),
    ("lnlab.experiments",),
    ("lnlab.report",),
    ("lnlab.export", "lnlab.bench"),
    ("lnlab.commands",),
    ("lnlab.cli", "lnlab.__main__"),
)

# Import cycles that are allowed, each with the reason it stays.
ALLOWED_CYCLES: dict[frozenset[str], str] = {
    frozenset({"lnlab.norms._kernels", "lnlab.norms.ops", "lnlab.norms.functional"}):
        "torch.library registration order: the op schemas (ops) must exist before _kernels "
        "registers the C implementations, ops falls back to functional's composite code, and "
        "functional calls both; all three are lazy at the back edges. Owned by the norms "
        "refactor (issue 16, item 1).",
}

# Imports from a lower layer to a higher one that are allowed, each with its reason.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name → file, for every module under ``src/lnlab``."""
    out = {}
    for p in sorted((src / "lnlab").rglob("*.py")):
        parts = list(p.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports_of(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The lnlab modules ``name`` imports anywhere in its body (module or function level)."""
    known = set(known)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # ``import lnlab.norms.ops`` → the deepest known module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    files = module_files(src)
    return {name: imports_of(name, path, files) for name, path in files.items()}


def layer_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int | None:
    """Index of the layer whose longest matching prefix names ``module``.

    The package root ``lnlab`` names only itself, so a new subpackage must be placed.
    """
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for i, layer in enumerate(layers):
        for prefix in layer:
            named = module == prefix or (prefix != "lnlab" and module.startswith(prefix + "."))
            if named and (best is None or len(prefix) > best[0]):
                best = (len(prefix), i)
    return None if best is None else best[1]


def cycles(graph: Mapping[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(frozenset(comp))
    return out


def upward_imports(graph: Mapping[str, set[str]],
                   layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[tuple[str, str]]:
    return sorted((m, d) for m, deps in graph.items() for d in deps
                  if layer_of(d, layers) > layer_of(m, layers))  # type: ignore[operator]


def test_every_module_has_a_layer() -> None:
    missing = [m for m in module_files() if layer_of(m) is None]
    assert not missing, f"place these modules in LAYERS (and in docs/development.md): {missing}"


def test_no_import_cycles() -> None:
    found = [c for c in cycles(import_graph()) if c not in ALLOWED_CYCLES]
    assert not found, "import cycles: " + "; ".join(" ↔ ".join(sorted(c)) for c in found)


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    bad = [e for e in upward_imports(import_graph()) if e not in ALLOWED_UPWARD]
    assert not bad, "upward imports (lower → higher layer): " + ", ".join(
        f"{m} → {d}" for m, d in bad)


def test_the_exception_lists_are_not_stale() -> None:
    graph = import_graph()
    assert set(ALLOWED_CYCLES) <= set(cycles(graph))
    assert set(ALLOWED_UPWARD) <= set(upward_imports(graph))


def test_the_walker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "lnlab"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("from . import helper\n")
    (pkg / "low" / "helper.py").write_text("def f():\n    from lnlab.high import g\n")
    (pkg / "high.py").write_text("import lnlab.low.helper\n\ndef g():\n    pass\n")
    graph = import_graph(tmp_path)
    assert graph["lnlab.low"] == {"lnlab.low.helper"}
    assert graph["lnlab.low.helper"] == {"lnlab.high"}
    assert graph["lnlab.high"] == {"lnlab.low.helper"}
    assert cycles(graph) == [frozenset({"lnlab.low.helper", "lnlab.high"})]
    layers = (("lnlab", "lnlab.low"), ("lnlab.high",))
    assert upward_imports(graph, layers) == [("lnlab.low.helper", "lnlab.high")]
