"""Hash-checked, cached download of a registered checkpoint.

`keras.utils.get_file` does the download, the caching (under
`<cache_dir>/robust_recipes/`, default `~/.keras`) and the SHA-256 check: a
cached file whose hash does not match is downloaded again, and a download
whose hash does not match raises. For a checkpoint whose publisher gives no
SHA-256 (the registry's `sha256=None`), the hash of the first download is
recorded in `<cache_dir>/robust_recipes/sha256_recorded.json` and every
later use is checked against that record (trust on first use), so a file
that changes or is corrupted afterwards is caught. Nothing downloads at
import time; tests use `file://` URLs.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import keras

from checkpoints.spec import CheckpointSpec

CACHE_SUBDIR = "robust_recipes"
RECORD_NAME = "sha256_recorded.json"


def cache_root(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """`<cache_dir or KERAS_HOME or ~/.keras>/robust_recipes`."""
    base = cache_dir or os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras")
    return pathlib.Path(base) / CACHE_SUBDIR


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_record(path: pathlib.Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"the hash record {path} is not valid JSON ({e}); "
                         "fix or delete it (deleting trusts the next "
                         "download anew)") from None


def expected_sha256(spec: CheckpointSpec,
                    cache_dir: str | os.PathLike | None = None
                    ) -> tuple[str | None, str]:
    """(expected SHA-256 or None, where it comes from: "registry",
    "recorded at first download in PATH" or "none yet")."""
    if spec.sha256:
        return spec.sha256, "registry"
    record = cache_root(cache_dir) / RECORD_NAME
    recorded = _read_record(record).get(spec.name)
    if recorded:
        return recorded, f"recorded at first download in {record}"
    return None, "none yet"


def fetch(spec: CheckpointSpec,
          cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Downloads `spec.url` (or reuses the cached copy) and checks its hash.

    Args:
        spec: a registered checkpoint.
        cache_dir: cache root; default `$KERAS_HOME` or `~/.keras`.

    Returns:
        Path of the verified local file.

    Raises:
        ValueError: the file's SHA-256 differs from the registry's or from
            the one recorded at its first download (a corrupt or truncated
            download, or a changed release); the message names both hashes.
        Exception: as `keras.utils.get_file` raises when the URL cannot be
            fetched (no network), naming the URL.
    """
    expected, source = expected_sha256(spec, cache_dir)
    root = cache_root(cache_dir)
    # get_file falls back to /tmp/.keras when the cache root is missing.
    root.mkdir(parents=True, exist_ok=True)
    try:
        path = keras.utils.get_file(
            fname=spec.filename, origin=spec.url, file_hash=expected,
            hash_algorithm="sha256", cache_subdir=CACHE_SUBDIR,
            cache_dir=str(root.parent))
    except ValueError:
        got = sha256_of(root / spec.filename)
        raise ValueError(
            f"checkpoint {spec.name}: {root / spec.filename} has sha256 "
            f"{got}, expected {expected} ({source}); a corrupt or truncated "
            "download or a changed release. Delete the file to retry; if "
            "the release really changed, delete its entry in the record "
            "too.") from None
    if expected is None:
        record_path = root / RECORD_NAME
        record = _read_record(record_path)
        record[spec.name] = sha256_of(path)
        record_path.write_text(json.dumps(record, indent=2, sort_keys=True))
    return pathlib.Path(path)
