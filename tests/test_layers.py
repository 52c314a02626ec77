"""Dependencies point down the loop: no import cycle between packages, no upward import.

Every import statement of every module under ``src/assay`` is read with ``ast`` (also imports inside
functions and ``TYPE_CHECKING`` blocks: a lazy import is still a dependency). A module belongs to its
package, the first name after ``assay.`` (``assay.suite.gate`` -> ``suite``; top-level modules such as
``assay.settings`` are their own package; ``assay/__init__.py`` and ``assay/__main__.py`` are the root).

The order, bottom to top (a package may import from its own layer and the layers below it):

 0. ``exceptions``                      the one error tree
 1. ``settings``, ``_util``, ``stats``  settings, process plumbing, the statistics shared by every stage
 2. ``traces``                          domain types (span, trace, session, unit) and readers; the
                                        first stage of the loop (capture)
 3. ``_store``                          the store: persists traces and everything after them, so it sits
                                        above ``traces`` (its rows are spans and units) and below every
                                        stage that reads or writes it
 4. ``models``                          judge-model clients: machinery the stages share (evaluators judge;
                                        failure signals will open-code with a judge), needing only the
                                        store (judge cache), ``_util`` and settings. DESIGN.md lists it
                                        beside the loop, not in it; below the stages so any stage may ask
                                        a judge, and no judge client knows of a stage
 5. ``signals``                         failure signals (DESIGN.md's loop: traces -> signals -> ...)
 6. ``signatures``                      clusters of failing units
 7. ``annotations``                     review queues, labels, criteria (per signature)
 8. ``evaluators``                      criterion -> code check / LLM judge / hybrid
 9. ``calibration``                     evaluators against human labels
10. ``suite``                           gate, online scoring, drift: runs and scores
11. ``reports``, ``doctor``             outputs over everything above (HTML report; machine checks)
12. ``_web``                            shell: the app and the OTLP receiver
13. ``_cli``                            shell: the command line (``assay serve`` starts ``_web``)
14. ``assay`` (root), ``__main__``      the public API re-exports every stage

This is DESIGN.md's "Dependencies point down the loop" (traces -> signals -> signatures ->
annotations -> evaluators -> calibration -> suite; ``_web`` and ``_cli`` thin shells on top), with the
machinery placed by what the code needs. A new package fails :func:`test_every_package_has_a_layer`
until it is placed here. Today's known violations are in :data:`ALLOWED`, each with the work that
removes it; :func:`test_allowed_violations_still_exist` fails once one is gone, so the list shrinks.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import assay

SRC = Path(assay.__file__).parent
LAYERS: list[tuple[str, ...]] = [
    ("exceptions",),
    ("settings", "_util", "stats"),
    ("traces",),
    ("_store",),
    ("models",),
    ("signals",),
    ("signatures",),
    ("annotations",),
    ("evaluators",),
    ("calibration",),
    ("suite",),
    ("reports", "doctor"),
    ("_web",),
    ("_cli",),
    ("assay", "__main__"),
]
RANK = {package: n for n, packages in enumerate(LAYERS) for package in packages}

ALLOWED: dict[tuple[str, str], str] = {
    ("assay.suite.score_export", "assay"):
        "`from assay import __version__` imports the root, which imports every stage; read the version from "
        "package metadata or a module at the bottom instead",
}
"""Known violations ``(importing module, imported package)``, each with what removes it."""


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def package_of(module: str) -> str:
    """``assay.suite.gate`` -> ``suite``; ``assay`` -> ``assay`` (the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "assay"


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The assay modules an import statement names (``from assay import x`` names ``assay.x`` when that
    is a module, else the root)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "assay"]
    base = node.module or ""
    if node.level:
        here = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] != "assay":
        return []
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    return subs if len(subs) == len(node.names) else [*subs, base]


def imports() -> dict[tuple[str, str], list[int]]:
    """``{(importing module, imported package): [line, ...]}`` for imports across packages."""
    found: dict[tuple[str, str], list[int]] = defaultdict(list)
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _imported(module, node):
                    if package_of(target) != package_of(module):
                        found[(module, package_of(target))].append(node.lineno)
    return found


def upward(edges: dict[tuple[str, str], list[int]]) -> list[str]:
    """Imports of a higher layer, as ``module:line imports package (layer a -> b)``."""
    return [f"{module}:{lines[0]} imports {target} (layer {RANK[package_of(module)]} -> {RANK[target]})"
            for (module, target), lines in sorted(edges.items())
            if RANK[target] > RANK[package_of(module)]]


def cycles(edges: dict[tuple[str, str], list[int]]) -> list[list[str]]:
    """Package cycles (strongly connected components of more than one package), Tarjan's algorithm."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, target in edges:
        graph[package_of(module)].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(set(graph)):
        if v not in index:
            visit(v)
    return found


def _checked() -> dict[tuple[str, str], list[int]]:
    return {edge: lines for edge, lines in imports().items() if edge not in ALLOWED}


def test_every_package_has_a_layer() -> None:
    packages = {package_of(m) for m in MODULES}
    assert {"traces", "suite", "_cli"} <= packages
    assert sorted(packages - set(RANK)) == []


def test_no_upward_import() -> None:
    assert upward(_checked()) == []


def test_no_import_cycle_between_packages() -> None:
    assert cycles(_checked()) == []


def test_allowed_violations_still_exist() -> None:
    """An entry whose import is gone must be removed from ALLOWED (so the list only shrinks)."""
    edges = imports()
    assert [edge for edge in ALLOWED if edge not in edges] == []
    assert all(RANK[target] > RANK[package_of(module)] for module, target in ALLOWED)  # each is a violation


def test_the_checks_can_fail() -> None:
    """An upward import and a cycle, made up, are reported."""
    made_up = {("assay.traces.readers", "suite"): [1], ("assay.suite.gate", "traces"): [2],
               ("assay.settings", "_util"): [3], ("assay._util.child", "settings"): [4]}
    assert upward(made_up) == ["assay.traces.readers:1 imports suite (layer 2 -> 10)"]
    assert cycles(made_up) == [["_util", "settings"], ["suite", "traces"]]
