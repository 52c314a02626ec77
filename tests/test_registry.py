"""The typed registry: built-ins and entry-point extensions through one register, broken extensions skipped."""

from __future__ import annotations

from pathlib import Path
from typing import TypeGuard

import pytest

from assay._util.registry import Registry
from assay.exceptions import ConfigError
from tests.plugin_fixtures import fake_distribution, installed

GROUP = "assay.test_shapes"


class Shape:
    def __init__(self, sides: int) -> None:
        self.sides = sides


def is_shape(obj: object) -> TypeGuard[Shape]:
    return isinstance(obj, Shape)


def shapes() -> Registry[Shape]:
    """A registry whose built-in module is this one; its built-in registers as an extension does."""
    reg = Registry(GROUP, "shape", is_shape, __name__)
    _current[:] = [reg]
    reg.register("triangle")(Shape(3))
    return reg


_current: list[Registry[Shape]] = []


def current() -> Registry[Shape]:
    return _current[0]


def test_builtins_and_extensions_register_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = shapes()
    assert reg.names() == ("triangle",)
    plugin = fake_distribution(tmp_path / "plugin", "more-shapes", {GROUP: {
        "square": "more_shapes:SQUARE",     # an object: registered under the entry point's name
        "decorated": "more_shapes_module",  # a module: its import registers
    }}, {
        "more_shapes": """
            from tests.test_registry import Shape
            SQUARE = Shape(4)
        """,
        "more_shapes_module": """
            from tests.test_registry import Shape, current
            current().register("pentagon")(Shape(5))
        """,
    })
    with installed(monkeypatch, plugin, reg):
        assert reg.get("square").sides == 4  # a miss loads the group's entry points
        assert reg.names() == ("triangle", "square", "pentagon")
        assert reg.get("triangle").sides == 3
    assert reg.names() == ("triangle",)


def test_unknown_names_wrong_types_and_clashes_are_config_errors(tmp_path: Path) -> None:
    reg = shapes()
    with pytest.raises(ConfigError, match=r"unknown shape 'circle'; known: triangle .*assay.test_shapes"):
        reg.get("circle")
    with pytest.raises(ConfigError, match="is not a shape"):
        reg.register("circle")("round")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("triangle")(Shape(3))
    with pytest.raises(ConfigError, match="invalid shape name"):
        reg.register("no spaces")(Shape(1))
    same = reg.get("triangle")
    assert reg.register("triangle")(same) is same  # registering the same object again is a no-op


def test_a_broken_extension_is_skipped_and_named_when_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    reg = shapes()
    plugin = fake_distribution(tmp_path / "plugin", "broken-shapes", {GROUP: {
        "hexagon": "broken_shapes:HEXAGON", "missing": "no_such_module_anywhere:X", "wrong": "broken_shapes:NUMBER",
    }}, {"broken_shapes": """
            from tests.test_registry import Shape
            HEXAGON = Shape(6)
            NUMBER = 6
        """})
    with installed(monkeypatch, plugin, reg):
        assert reg.names() == ("triangle", "hexagon")  # the good one loads, the broken ones are skipped
        assert "no_such_module_anywhere" in caplog.text
        with pytest.raises(ConfigError, match="'missing' failed to load: no_such_module_anywhere:X: ModuleNotFound"):
            reg.get("missing")
        with pytest.raises(ConfigError, match="'wrong' failed to load: .*is not a shape"):
            reg.get("wrong")
