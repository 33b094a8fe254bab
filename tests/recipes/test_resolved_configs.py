"""Every recipe resolves to the same config as before the issue-14
restructuring: tests/recipes/data/resolved_configs.json was written from
the tree before any module moved (the JSON that train.py saves as
config.json, for each recipe with and without ":smoke"). A deliberate
recipe change regenerates it with the snippet in `_resolved`'s doc."""

import json
import pathlib

import pytest

import recipes

GOLDEN = pathlib.Path(__file__).parent / "data" / "resolved_configs.json"


def _resolved(name: str, arg: str | None) -> dict:
    """`recipes.get_config(name, arg)` as train.py writes it to
    config.json, parsed back (to regenerate the golden file: this for every
    `recipes.list_recipes()` x (None, "smoke"), keyed "name:arg")."""
    return json.loads(recipes.get_config(name, arg).to_json_best_effort(
        sort_keys=True))


def test_golden_file_covers_every_recipe():
    golden = json.loads(GOLDEN.read_text())
    assert sorted(golden) == sorted(f"{n}:{a}" for n in recipes.list_recipes()
                                    for a in ("", "smoke"))


@pytest.mark.parametrize("key", sorted(json.loads(GOLDEN.read_text())))
def test_resolved_config_unchanged(key):
    name, _, arg = key.partition(":")
    assert _resolved(name, arg or None) == json.loads(GOLDEN.read_text())[key]
