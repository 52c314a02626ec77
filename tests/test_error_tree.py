"""The one error tree: every exception class of assay is an ``AssayError``, and the drawing in the
docstring of ``assay.exceptions`` is the class hierarchy of that module, no more and no less."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import assay
import assay.exceptions as exc_module
from assay.exceptions import AssayError

SKIP_MODULES = {
    "assay.__main__": "runs the CLI when imported as __main__",
    "assay._cli.__main__": "runs the CLI when imported",
    "assay._store.migrations.env": "Alembic's env script: runs migrations when imported",
}
_NODE = re.compile(r"^(?P<indent>[\s│]*)(?:[├└]── )?(?P<name>[A-Z]\w+)\s")


def _drawn_tree() -> dict[str, str | None]:
    """``{class name: parent name}`` read from the drawing (depth = position of the name)."""
    doc = exc_module.__doc__ or ""
    block = doc.split("::", 1)[1].split("\n\n", 2)[1]
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in block.splitlines():
        m = _NODE.match(line)
        if not m:
            continue  # a continuation line of a description
        column = m.start("name")
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[m.group("name")] = stack[-1][1] if stack else None
        stack.append((column, m.group("name")))
    return parents


def _module_classes() -> dict[str, type[BaseException]]:
    return {name: obj for name, obj in vars(exc_module).items()
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == exc_module.__name__}


def test_the_drawing_is_the_class_hierarchy() -> None:
    drawn = _drawn_tree()
    classes = _module_classes()
    assert set(drawn) == set(classes), "classes missing from the drawing or drawn but not defined"
    for name, cls in classes.items():
        tree_bases = [b.__name__ for b in cls.__bases__ if issubclass(b, AssayError)]
        assert (tree_bases[0] if tree_bases else None) == drawn[name], name


def _all_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(assay.__path__, "assay.")]
    return [n for n in names if n not in SKIP_MODULES and not n.startswith("assay._store.migrations.versions")]


def test_every_exception_class_of_assay_is_in_the_tree() -> None:
    outside = []
    for name in _all_modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name
                    and not issubclass(obj, AssayError)):
                outside.append(f"{name}.{obj.__qualname__}")
    assert outside == []


def test_no_module_is_left_out_of_the_search() -> None:
    """Every ``.py`` file under src/assay is either imported above or skipped with a reason."""
    src = Path(assay.__file__).parent
    defined = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception", "Failure", "Problem"))
                    for b in node.bases):
                rel = path.relative_to(src.parent).with_suffix("")
                defined.add(".".join(rel.parts).removesuffix(".__init__"))
    assert defined <= set(_all_modules()), defined - set(_all_modules())
