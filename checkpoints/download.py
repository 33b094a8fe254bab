"""Hash-checked, cached download of a registered checkpoint.

The file lives in `<cache_dir>/robust_recipes/<filename>` (default cache
root `$KERAS_HOME` or `~/.keras`). Every use checks its SHA-256 against the
expected one: the registry's `sha256`, else the hash recorded in
`<cache_dir>/robust_recipes/sha256_recorded.json`. That record is written
only for a file robust-recipes downloaded itself (trust on first download)
or one the user vouched for with `trust_sha256` (`--trust_sha256`), never
for a file that merely sits in the cache: such a file is refused, with its
actual hash, until the user checks it and passes that hash.

Downloads go to a temporary file in the cache directory, are checked, and
only then renamed (`os.replace`) to the final name, so a failed, killed or
mismatched download never leaves a file under that name; a cached file is
never overwritten. Every failure is one `core.errors.UserError` line.
Nothing downloads at import time; tests use `file://` URLs.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import pathlib
import re
import tempfile
import urllib.error
import urllib.request

import keras

from checkpoints.spec import CheckpointSpec
from core.errors import UserError

CACHE_SUBDIR = "robust_recipes"
RECORD_NAME = "sha256_recorded.json"
# Seconds a stalled connection may stay silent before the download fails.
DOWNLOAD_TIMEOUT_S = 60
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_CHUNK = 1 << 20


def cache_root(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """`<cache_dir or KERAS_HOME or ~/.keras>/robust_recipes`."""
    base = cache_dir or os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras")
    return pathlib.Path(base) / CACHE_SUBDIR


def sha256_of(path: str | os.PathLike) -> str:
    """Hex (lowercase, 64 digits) SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(value: str, what: str = "--trust_sha256") -> str:
    """`value` lowercased, once it looks like a SHA-256 (64 hex digits).

    Raises:
        UserError: anything else; the message names `what` and the value.
    """
    if not isinstance(value, str) or not _HEX64.match(value.strip()):
        raise UserError(f"{what}={value!r} is not a SHA-256: expected 64 "
                        "hex digits (as `sha256sum FILE` prints)")
    return value.strip().lower()


def _read_record(path: pathlib.Path) -> dict[str, str]:
    if not path.exists():
        return {}
    fix = ("fix or delete it (cached checkpoints then need --trust_sha256 "
           "once more)")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"the sha256 record {path} is not valid JSON "
                        f"({e}); {fix}") from None
    if not isinstance(record, dict) or not all(
            isinstance(v, str) and _HEX64.match(v) for v in record.values()):
        raise UserError(f"the sha256 record {path} is not a JSON object of "
                        f"checkpoint name -> 64-hex-digit sha256; {fix}")
    return record


def _write_record(path: pathlib.Path, name: str, sha256: str) -> None:
    """Adds `name: sha256` to the record atomically and says so."""
    record = _read_record(path)
    record[name] = sha256
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    print(f"checkpoint {name}: sha256 {sha256} recorded in {path} (the "
          "publisher gives none; every later use is checked against it)",
          flush=True)


def expected_sha256(spec: CheckpointSpec,
                    cache_dir: str | os.PathLike | None = None
                    ) -> tuple[str | None, str]:
    """(expected SHA-256 or None, where it comes from: "registry",
    "recorded in PATH" or "none yet").

    Raises:
        UserError: the record file is not valid JSON (the message names it).
    """
    if spec.sha256:
        return spec.sha256, "registry"
    record = cache_root(cache_dir) / RECORD_NAME
    recorded = _read_record(record).get(spec.name)
    if recorded:
        return recorded.lower(), f"recorded in {record}"
    return None, "none yet"


class _DownloadFailed(Exception):
    """Why a download failed, in a few words."""


def _copy_url(url: str, out) -> None:
    """Streams `url` into the open binary file `out`."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            bar = (keras.utils.Progbar(total, unit_name="byte")
                   if total and total > _CHUNK else None)
            done = 0
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                out.write(chunk)
                done += len(chunk)
                if bar is not None:
                    bar.update(done)
    except urllib.error.HTTPError as e:
        raise _DownloadFailed(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _DownloadFailed(str(e.reason)) from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise _DownloadFailed(f"{type(e).__name__}: {e}") from None
    if total is not None and done != total:
        raise _DownloadFailed(f"incomplete: {done} of {total} bytes")


def _download(spec: CheckpointSpec, final: pathlib.Path,
              hash_known: bool) -> pathlib.Path:
    """`spec.url` in a temporary file next to `final` (the caller checks and
    renames it); on any failure, the temporary file is removed."""
    print(f"Downloading data from {spec.url}", flush=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.",
                               suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            _copy_url(spec.url, out)
            out.flush()
            os.fsync(out.fileno())
    except _DownloadFailed as e:
        pathlib.Path(tmp).unlink(missing_ok=True)
        then = ("" if hash_known else "; then pass --trust_sha256=<its "
                "sha256> once you have checked it (the publisher gives none)")
        raise UserError(f"checkpoint {spec.name}: could not download "
                        f"{spec.url} ({e}); download it by hand and put it "
                        f"at {final}{then}") from None
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return pathlib.Path(tmp)


def _check_cached(spec: CheckpointSpec, path: pathlib.Path,
                  expected: str | None, source: str,
                  trust: str | None) -> bool:
    """Checks the cached `path`; True when its hash is to be recorded."""
    if not path.is_file():
        raise UserError(f"checkpoint {spec.name}: {path} is not a file; "
                        "remove it to download the checkpoint")
    actual = sha256_of(path)
    if expected is not None:
        if actual != expected:
            raise UserError(
                f"checkpoint {spec.name}: the cached file {path} has sha256 "
                f"{actual}, expected {expected} ({source}); a corrupt or "
                "truncated file or a changed release: delete the file to "
                "download it again")
        return False
    if trust is None:
        raise UserError(
            f"checkpoint {spec.name}: {path} was not downloaded by "
            "robust-recipes and its sha256 is unknown (the publisher gives "
            f"none); the file's sha256 is {actual}: check it against a "
            f"trusted source, then pass --trust_sha256={actual} (or delete "
            "the file to download it)")
    if actual != trust:
        raise UserError(
            f"checkpoint {spec.name}: {path} has sha256 {actual}, not the "
            f"--trust_sha256={trust} given; a different or corrupt file: "
            "delete it to download it again")
    return True


def fetch(spec: CheckpointSpec,
          cache_dir: str | os.PathLike | None = None, *,
          trust_sha256: str | None = None) -> pathlib.Path:
    """The verified local copy of `spec.url`, downloaded once.

    The expected SHA-256 is the registry's, else the one recorded at our
    first download (or trusted) in `<cache>/robust_recipes/
    sha256_recorded.json`, else `trust_sha256`. A cached file is checked
    against it and never replaced; one with no expected hash (not
    downloaded by robust-recipes) needs `trust_sha256`. A download with no
    expected hash is recorded, and one line saying so goes to stdout.

    Args:
        spec: a registered checkpoint.
        cache_dir: cache root; default `$KERAS_HOME` or `~/.keras`.
        trust_sha256: the 64 hex digits the user vouches for, for a
            checkpoint whose publisher gives no hash (`--trust_sha256`);
            recorded once a file with that hash is cached or downloaded.

    Returns:
        Path of the verified file, `<cache>/robust_recipes/<filename>`.

    Raises:
        UserError: `trust_sha256` is not 64 hex digits, or differs from the
            registry's or recorded hash; the cached or downloaded file's
            hash differs from the expected one (both hashes named); a cached
            file with no known hash and no (or another) `trust_sha256` (its
            actual hash named); the download failed (the URL, the reason
            and where to put a file downloaded by hand named); the record
            is not valid JSON; the cache directory cannot be created.
    """
    trust = None if trust_sha256 is None else check_sha256(trust_sha256)
    expected, source = expected_sha256(spec, cache_dir)
    root = cache_root(cache_dir)
    record = root / RECORD_NAME
    if trust is not None and expected is not None and trust != expected:
        undo = ("" if source == "registry" else " (or, if the release "
                f"really changed, delete {spec.name!r} from {record} first)")
        raise UserError(f"checkpoint {spec.name}: --trust_sha256={trust} "
                        f"differs from its known sha256 {expected} "
                        f"({source}); drop --trust_sha256{undo}")
    path = root / spec.filename
    if path.exists():
        if _check_cached(spec, path, expected, source, trust):
            _write_record(record, spec.name, trust)
        return path
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the checkpoint cache {root} "
                        f"({e.strerror}); set KERAS_HOME to a writable "
                        "directory") from None
    tmp = _download(spec, path, hash_known=(expected or trust) is not None)
    try:
        actual = sha256_of(tmp)
        want, why = (expected, source) if expected else (trust,
                                                         "--trust_sha256")
        if want is not None and actual != want:
            raise UserError(
                f"checkpoint {spec.name}: the download of {spec.url} has "
                f"sha256 {actual}, expected {want} ({why}); nothing was "
                "saved: a corrupt download or a changed release")
        if expected is None:
            _write_record(record, spec.name, actual)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
