"""core.registry.Registry: decorator registration, duplicates refused,
unknown names listed, fnmatch patterns."""

import pytest

from core.registry import Registry


def test_register_get_names_contains():
    reg = Registry("widget")

    @reg.register("b_one")
    def one():
        return 1

    reg.register("a_two")(lambda: 2)
    assert reg.get("b_one") is one and reg.get("a_two")() == 2
    assert reg.names() == ["a_two", "b_one"] and reg.names("b_*") == ["b_one"]
    assert "a_two" in reg and "c" not in reg


def test_duplicate_and_unknown_names_raise_key_errors():
    reg = Registry("widget")
    reg.register("x")(int)
    with pytest.raises(KeyError, match="widget 'x' is already registered"):
        reg.register("x")(float)
    with pytest.raises(KeyError, match=r"unknown widget 'y'; available: "
                                       r"\['x'\]"):
        reg.get("y")
