"""core.atomic_write: the old file or the whole new one, never half."""

import pytest

from core import atomic_write


def test_replace_exclusive_and_no_temp_left(tmp_path):
    path = tmp_path / "report.json"
    atomic_write.write_text(path, "old")
    atomic_write.write_text(path, "new")
    assert path.read_text() == "new"
    with pytest.raises(FileExistsError):
        atomic_write.write_text(path, "other", exclusive=True)
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_failed_writer_leaves_the_old_file(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_write.replacing(path) as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".keras")
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
