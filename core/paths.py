"""Up-front checks of the paths a user passes, each failure one
`UserError` line naming the flag, the path and what is wrong.

Writability is probed by creating and removing a hidden file, because
`os.access` says yes to root on a read-only file system.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import uuid

from core.errors import UserError


def _probe_writable(directory: pathlib.Path) -> str | None:
    """None if a file can be created in `directory`, else the reason."""
    probe = directory / f".write-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.touch(exist_ok=False)
    except OSError as e:
        return e.strerror or type(e).__name__
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def check_output_dir(path: str | os.PathLike, flag: str) -> pathlib.Path:
    """Checks that `path` is a writable directory, or can be created as one
    (its nearest existing ancestor is a writable directory). Creates
    nothing.

    Raises:
        UserError: `path` (or an ancestor) is a file, or is not writable.
    """
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag}={path} is a file; expected a directory (a "
                        "new one, or one written by this program)")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag}={path}: {existing} is a file, so the "
                        "directory cannot be created")
    reason = _probe_writable(existing)
    if reason:
        where = "" if existing == path else f" (its ancestor {existing})"
        raise UserError(f"{flag}={path} is not writable{where}: {reason}")
    return path


def check_input_file(path: str | os.PathLike, flag: str,
                     suffixes: tuple[str, ...] = ()) -> pathlib.Path:
    """Checks that `path` is an existing, readable, non-empty file with one
    of `suffixes` (any suffix if empty).

    Raises:
        UserError: missing, a directory, unreadable, empty or a wrong
            suffix.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise UserError(f"{flag}={path}: no such file")
    if path.is_dir():
        raise UserError(f"{flag}={path} is a directory; expected a file")
    if suffixes and path.suffix not in suffixes:
        raise UserError(f"{flag}={path} has the suffix {path.suffix!r}; "
                        f"accepted: {list(suffixes)}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{flag}={path} is not readable")
    if path.stat().st_size == 0:
        raise UserError(f"{flag}={path} is empty (0 bytes)")
    return path


def check_input_dir(path: str | os.PathLike, flag: str) -> pathlib.Path:
    """Checks that `path` is an existing, readable directory.

    Raises:
        UserError: missing, a file, or unreadable.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise UserError(f"{flag}={path}: no such directory")
    if not path.is_dir():
        raise UserError(f"{flag}={path} is a file; expected a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"{flag}={path} is not readable")
    return path
