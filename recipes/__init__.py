"""Named training recipes: one module per recipe, each exporting
`get_config(arg=None) -> ml_collections.ConfigDict` (big_vision style).

`python train.py --recipe=NAME[:ARG]` loads `recipes/NAME.py`; every recipe
accepts the arg "smoke" (tiny model, a few hundred real images, 2-5 steps).
"""

from __future__ import annotations

import importlib
import pathlib

import ml_collections

_DIR = pathlib.Path(__file__).resolve().parent
_NOT_RECIPES = {"__init__", "common", "ranges"}


def list_recipes() -> list[str]:
    """Sorted names of the recipes in this folder."""
    return sorted(p.stem for p in _DIR.glob("*.py")
                  if p.stem not in _NOT_RECIPES)


def recipe_path(name: str) -> pathlib.Path:
    """Path of recipe `name`'s module.

    Raises:
        KeyError: unknown recipe; the message lists `list_recipes()`.
    """
    if name not in list_recipes():
        raise KeyError(f"unknown recipe {name!r}; available: "
                       f"{list_recipes()}")
    return _DIR / f"{name}.py"


def get_config(name: str, arg: str | None = None
               ) -> ml_collections.ConfigDict:
    """The locked config of recipe `name` with `arg` (e.g. "smoke").

    Raises:
        KeyError: unknown recipe (lists the available ones).
        ValueError: an `arg` the recipe does not accept.
    """
    recipe_path(name)
    module = importlib.import_module(f"recipes.{name}")
    config = module.get_config(arg)
    config.lock()
    return config
