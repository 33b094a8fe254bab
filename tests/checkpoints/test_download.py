"""Download, cache and hash policy of `checkpoints.download.fetch`, run
offline on `file://` URLs (tests never touch the network).

The policy: the expected hash is the registry's, else the one recorded at
OUR first download (or trusted with `trust_sha256`); a cached file is
checked against it and never replaced; a cached file nobody vouched for is
refused with its actual hash; every failure is one `UserError` line."""

import dataclasses
import hashlib
import json
import os
import re

import pytest

import checkpoints
from checkpoints import download
from checkpoints.download import RECORD_NAME, fetch, sha256_of
from core.errors import UserError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _spec(tmp_path, content: bytes, sha256=None):
    src = tmp_path / "published" / "R152.npz"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(content)
    spec = checkpoints.get("resnet152.xie2019_in1k")
    return dataclasses.replace(spec, url=src.as_uri(), sha256=sha256), src


def _cache_dir(tmp_path):
    return tmp_path / "cache" / "robust_recipes"


def _record(tmp_path):
    path = _cache_dir(tmp_path) / RECORD_NAME
    return json.loads(path.read_text()) if path.exists() else None


def _place(tmp_path, content: bytes):
    """A file the user put in the cache by hand."""
    path = _cache_dir(tmp_path) / "R152.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _leftovers(tmp_path):
    root = _cache_dir(tmp_path)
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_known_hash_is_checked_and_the_file_cached(tmp_path):
    data = b"checkpoint bytes" * 100
    spec, src = _spec(tmp_path, data, _sha(data))
    path = fetch(spec, cache_dir=tmp_path / "cache")
    assert path.read_bytes() == data
    assert path.parent == _cache_dir(tmp_path)
    assert _record(tmp_path) is None  # the registry's hash: nothing recorded
    src.unlink()  # cached: no second download
    assert fetch(spec, cache_dir=tmp_path / "cache") == path


def test_download_hash_mismatch_saves_nothing(tmp_path):
    spec, _ = _spec(tmp_path, b"tampered", "0" * 64)
    with pytest.raises(UserError, match=r"sha256 [0-9a-f]{64}, expected "
                       r"0{64} \(registry\); nothing was saved") as e:
        fetch(spec, cache_dir=tmp_path / "cache")
    assert spec.url in _one_line(e)
    assert _leftovers(tmp_path) == []


def test_unknown_hash_is_recorded_at_our_download_and_said(tmp_path,
                                                           capsys):
    spec, _ = _spec(tmp_path, b"first release")
    path = fetch(spec, cache_dir=tmp_path / "cache")
    sha = _sha(b"first release")
    assert _record(tmp_path) == {spec.name: sha}
    record = _cache_dir(tmp_path) / RECORD_NAME
    line = (f"checkpoint {spec.name}: sha256 {sha} recorded in {record}")
    assert line in capsys.readouterr().out
    assert _leftovers(tmp_path) == ["R152.npz", RECORD_NAME]  # no temp file
    assert fetch(spec, cache_dir=tmp_path / "cache") == path  # now checked
    assert "recorded in" not in capsys.readouterr().out  # said once


def test_corrupted_cached_file_is_refused_not_replaced(tmp_path):
    spec, _ = _spec(tmp_path, b"first release")
    path = fetch(spec, cache_dir=tmp_path / "cache")
    path.write_bytes(b"first rel")  # a truncated write, a disk error ...
    with pytest.raises(UserError, match="delete the file to download it "
                       "again") as e:
        fetch(spec, cache_dir=tmp_path / "cache")
    message = _one_line(e)
    assert str(path) in message and _sha(b"first release") in message
    assert _sha(b"first rel") in message and "recorded in" in message
    assert path.read_bytes() == b"first rel"  # the user's file is kept


def test_changed_release_is_refused_against_the_record(tmp_path):
    spec, src = _spec(tmp_path, b"first release")
    path = fetch(spec, cache_dir=tmp_path / "cache")
    src.write_bytes(b"second release")
    path.unlink()
    with pytest.raises(UserError, match=f"sha256 {_sha(b'second release')}, "
                       f"expected {_sha(b'first release')} \\(recorded in"):
        fetch(spec, cache_dir=tmp_path / "cache")
    assert not path.exists()


def test_registry_hash_checks_a_cached_file(tmp_path):
    spec, src = _spec(tmp_path, b"good", _sha(b"good"))
    src.unlink()  # must not download
    placed = _place(tmp_path, b"good")
    assert fetch(spec, cache_dir=tmp_path / "cache") == placed
    placed.write_bytes(b"evil")
    match = (f"{re.escape(str(placed))}.*{_sha(b'evil')}, expected "
             f"{_sha(b'good')} \\(registry\\)")
    with pytest.raises(UserError, match=match):
        fetch(spec, cache_dir=tmp_path / "cache")


def test_placed_file_of_unknown_hash_is_refused_with_its_hash(tmp_path):
    spec, src = _spec(tmp_path, b"genuine")
    placed = _place(tmp_path, b"placed by someone")
    sha = _sha(b"placed by someone")
    with pytest.raises(UserError, match="not downloaded by robust-recipes"
                       ) as e:
        fetch(spec, cache_dir=tmp_path / "cache")
    message = _one_line(e)
    assert str(placed) in message and "sha256 is unknown" in message
    assert f"--trust_sha256={sha}" in message
    assert _record(tmp_path) is None  # nothing trusted on the way
    assert placed.read_bytes() == b"placed by someone"  # nor downloaded


def test_trust_sha256_vouches_for_a_placed_file(tmp_path, capsys):
    spec, src = _spec(tmp_path, b"genuine")
    src.unlink()  # no download
    placed = _place(tmp_path, b"checked by hand")
    sha = _sha(b"checked by hand")
    assert fetch(spec, cache_dir=tmp_path / "cache",
                 trust_sha256=sha.upper()) == placed
    assert _record(tmp_path) == {spec.name: sha}
    assert f"sha256 {sha} recorded in" in capsys.readouterr().out
    assert fetch(spec, cache_dir=tmp_path / "cache") == placed  # recorded
    assert fetch(spec, cache_dir=tmp_path / "cache", trust_sha256=sha)


def test_trust_sha256_of_another_file_is_refused(tmp_path):
    spec, _ = _spec(tmp_path, b"genuine")
    placed = _place(tmp_path, b"placed")
    with pytest.raises(UserError, match=f"{re.escape(str(placed))} has sha256 "
                       f"{_sha(b'placed')}, not the "
                       f"--trust_sha256={'a' * 64}"):
        fetch(spec, cache_dir=tmp_path / "cache", trust_sha256="a" * 64)
    assert _record(tmp_path) is None


@pytest.mark.parametrize("source", ["registry", "record"])
def test_trust_sha256_cannot_override_a_known_hash(tmp_path, source):
    data = b"genuine"
    spec, _ = _spec(tmp_path, data, _sha(data) if source == "registry"
                    else None)
    if source == "record":
        fetch(spec, cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match=f"--trust_sha256={'b' * 64} differs "
                       f"from its known sha256 {_sha(data)}"):
        fetch(spec, cache_dir=tmp_path / "cache", trust_sha256="b" * 64)
    if source == "registry":
        assert _leftovers(tmp_path) == []  # nothing downloaded


def test_trust_sha256_checks_a_download(tmp_path, capsys):
    spec, _ = _spec(tmp_path, b"genuine")
    with pytest.raises(UserError, match=f"expected {'c' * 64} "
                       r"\(--trust_sha256\); nothing was saved"):
        fetch(spec, cache_dir=tmp_path / "cache", trust_sha256="c" * 64)
    assert _leftovers(tmp_path) == []
    sha = _sha(b"genuine")
    fetch(spec, cache_dir=tmp_path / "cache", trust_sha256=sha)
    assert _record(tmp_path) == {spec.name: sha}


@pytest.mark.parametrize("bad", ["abc", "g" * 64, "0" * 63, ""])
def test_malformed_trust_sha256(tmp_path, bad):
    spec, _ = _spec(tmp_path, b"x")
    with pytest.raises(UserError, match=f"--trust_sha256='{bad}' is not a "
                       "SHA-256: expected 64 hex digits"):
        fetch(spec, cache_dir=tmp_path / "cache", trust_sha256=bad)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("known", [True, False])
def test_unreachable_url_is_one_line_with_where_to_put_the_file(tmp_path,
                                                                 known):
    spec, src = _spec(tmp_path, b"x", _sha(b"x") if known else None)
    src.unlink()
    with pytest.raises(UserError, match="could not download") as e:
        fetch(spec, cache_dir=tmp_path / "cache")
    message = _one_line(e)
    final = _cache_dir(tmp_path) / "R152.npz"
    assert spec.url in message and "No such file" in message
    assert f"put it at {final}" in message
    assert ("--trust_sha256=<its sha256>" in message) is not known
    assert _leftovers(tmp_path) == []


def test_an_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
    spec, _ = _spec(tmp_path, b"x" * 1000)

    def cut(url, out):
        out.write(b"x" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_copy_url", cut)
    with pytest.raises(KeyboardInterrupt):
        fetch(spec, cache_dir=tmp_path / "cache")
    assert _leftovers(tmp_path) == []


def test_a_short_download_is_a_failure(tmp_path, monkeypatch):
    spec, _ = _spec(tmp_path, b"x" * 1000)

    class Short:
        headers = {"Content-Length": "1000"}

        def __init__(self):
            self.chunks = [b"x" * 400]

        def read(self, n):
            return self.chunks.pop() if self.chunks else b""

        def __enter__(self):
            return self

        def __exit__(self, *args):
            return False

    monkeypatch.setattr(download.urllib.request, "urlopen",
                        lambda url, timeout: Short())
    with pytest.raises(UserError, match="incomplete: 400 of 1000 bytes"):
        fetch(spec, cache_dir=tmp_path / "cache")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"a": "short"}'])
def test_corrupt_hash_record_is_a_clear_error(tmp_path, text):
    spec, _ = _spec(tmp_path, b"x")
    record = _cache_dir(tmp_path) / RECORD_NAME
    record.parent.mkdir(parents=True)
    record.write_text(text)
    with pytest.raises(UserError, match=f"the sha256 record "
                       f"{re.escape(str(record))} is not"):
        fetch(spec, cache_dir=tmp_path / "cache")
    assert record.read_text() == text


def test_record_is_written_atomically_and_keeps_other_entries(tmp_path):
    spec, _ = _spec(tmp_path, b"x")
    record = _cache_dir(tmp_path) / RECORD_NAME
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"other.tag": "d" * 64}))
    fetch(spec, cache_dir=tmp_path / "cache")
    assert _record(tmp_path) == {"other.tag": "d" * 64,
                                 spec.name: _sha(b"x")}
    assert not [n for n in os.listdir(record.parent) if n.endswith(".tmp")]


def test_sha256_of(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1_000_000)
    assert sha256_of(path) == _sha(b"abc" * 1_000_000)


def test_a_large_download_streams_in_chunks(tmp_path):
    data = bytes(range(256)) * (10 * 1024)  # 2.5 MiB: several chunks
    spec, _ = _spec(tmp_path, data, _sha(data))
    assert fetch(spec, cache_dir=tmp_path / "cache").read_bytes() == data
    assert _leftovers(tmp_path) == ["R152.npz"]
