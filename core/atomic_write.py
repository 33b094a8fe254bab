"""Atomic file writes: a temp file in the target's directory, flushed to
disk, then renamed over (or linked to) the final name, so a process killed
at any moment leaves either the old file or the complete new one, never a
half-written one.

    write_text(path, text)               # replace atomically
    write_text(path, text, exclusive=True)   # create; never overwrite
    with replacing(path) as tmp:         # any writer, e.g. model.save(tmp)
        model.save(tmp)

Temp names start with `.tmp-` and keep the final suffix (Keras insists on
`.keras` / `.weights.h5`); a kill leaves at most such a hidden temp file.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import uuid
from typing import Iterator


def temp_path(path: str | os.PathLike) -> pathlib.Path:
    """A fresh hidden path beside `path`, with the same full suffix."""
    path = pathlib.Path(path)
    return path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")


def _fsync(path: pathlib.Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def replacing(path: str | os.PathLike, exclusive: bool = False
              ) -> Iterator[pathlib.Path]:
    """Yields a temp path to write; on success it becomes `path`.

    Args:
        path: the final file.
        exclusive: create `path` only if it does not exist (a hard link,
            which fails on an existing name), never replace it.

    Raises:
        FileExistsError: `exclusive` and `path` exists (the temp is removed).
    """
    path = pathlib.Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        if tmp.is_file():
            _fsync(tmp)
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str,
               exclusive: bool = False) -> pathlib.Path:
    """Writes `text` (UTF-8) to `path` atomically; see `replacing`."""
    with replacing(path, exclusive=exclusive) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return pathlib.Path(path)
