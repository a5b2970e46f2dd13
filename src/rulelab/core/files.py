"""Atomic files: a reader sees the old content or the new, never half of either.

The pitfall: writing a file in place leaves it truncated when the process is killed
mid-write, and two processes writing one name through one temporary name overwrite each
other's half-written data. Every file rulelab keeps (run tables, parts, chunks, cache
entries, reports) is written through :func:`atomic_write`: a temporary file in the same
folder whose name carries the process id and a random token, then a rename; the
temporary file is removed when the write fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path`` that no other process or call will choose."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write(path: str | Path, data: bytes | str | Callable[[Path], object]) -> Path:
    """Write ``data`` (bytes, text as UTF-8, or a function that writes the file it is
    given) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        elif isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            data(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path
