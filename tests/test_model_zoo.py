"""The README's model-zoo table is the one built from results/."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_table_matches_committed_results():
    spec = importlib.util.spec_from_file_location(
        "model_zoo", ROOT / "scripts" / "model_zoo.py")
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    readme = (ROOT / "README.md").read_text()
    assert zoo.START in readme and zoo.END in readme
    assert zoo.CKPT_START in readme and zoo.CKPT_END in readme
    assert readme == zoo.readme_with_table(readme), (
        "README model-zoo or checkpoints table is stale: run python "
        "scripts/model_zoo.py --write")
