"""Download, cache and hash checks of `checkpoints.download.fetch`, run
offline on `file://` URLs (tests never touch the network)."""

import dataclasses
import hashlib
import json

import pytest

import checkpoints
from checkpoints.download import RECORD_NAME, fetch, sha256_of


def _spec(tmp_path, content: bytes, sha256=None):
    src = tmp_path / "published" / "R152.npz"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(content)
    spec = checkpoints.get("resnet152.xie2019_in1k")
    return dataclasses.replace(spec, url=src.as_uri(), sha256=sha256), src


def test_known_hash_is_checked_and_the_file_cached(tmp_path):
    data = b"checkpoint bytes" * 100
    spec, src = _spec(tmp_path, data, hashlib.sha256(data).hexdigest())
    path = fetch(spec, cache_dir=tmp_path / "cache")
    assert path.read_bytes() == data
    assert path.parent == tmp_path / "cache" / "robust_recipes"
    src.unlink()  # cached: no second download
    assert fetch(spec, cache_dir=tmp_path / "cache") == path


def test_hash_mismatch_is_a_clear_error(tmp_path):
    spec, _ = _spec(tmp_path, b"tampered", "0" * 64)
    with pytest.raises(ValueError, match=r"sha256 [0-9a-f]{64}, expected "
                       r"0{64} \(registry\)"):
        fetch(spec, cache_dir=tmp_path / "cache")


def test_unknown_hash_is_recorded_then_enforced(tmp_path):
    spec, src = _spec(tmp_path, b"first release")
    cache = tmp_path / "cache"
    path = fetch(spec, cache_dir=cache)
    record = json.loads((cache / "robust_recipes" / RECORD_NAME).read_text())
    assert record == {spec.name: sha256_of(path)}
    # The cached copy gets corrupted (a truncated write, disk error ...):
    # the recorded hash catches it and the file is fetched again.
    path.write_bytes(b"first rel")
    assert fetch(spec, cache_dir=cache).read_bytes() == b"first release"
    # The published file changes: refused, with both hashes named.
    src.write_bytes(b"second release")
    path.unlink()
    with pytest.raises(ValueError, match="recorded at first download"):
        fetch(spec, cache_dir=cache)


def test_unreachable_url_names_it(tmp_path):
    spec, src = _spec(tmp_path, b"x")
    src.unlink()
    with pytest.raises(Exception, match="R152.npz"):
        fetch(spec, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "robust_recipes" / "R152.npz").exists()


def test_corrupt_hash_record_is_a_clear_error(tmp_path):
    spec, _ = _spec(tmp_path, b"x")
    record = tmp_path / "cache" / "robust_recipes" / RECORD_NAME
    record.parent.mkdir(parents=True)
    record.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        fetch(spec, cache_dir=tmp_path / "cache")
