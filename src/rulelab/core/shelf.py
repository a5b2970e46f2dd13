"""A folder of pickled entries, each under a key and carrying its own checksum.

The pitfall: a cache file that is truncated or edited is read as a valid result. Each
entry's file name ends in a checksum of its bytes; an entry that fails it (or does not
unpickle) is moved aside with a warning, never deleted and never served, and the caller
computes it again. Writes are atomic (:func:`rulelab.core.files.atomic_write`).
"""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rulelab.core.files import atomic_write


class CacheFileWarning(UserWarning):
    """A cache entry was unreadable or failed its checksum; it was moved aside."""


def digest(*parts: Any) -> str:
    """A hex digest of ``parts`` (bytes as they are, anything else by its repr)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else repr(p).encode())
        h.update(b"\x00")
    return h.hexdigest()


def _checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class Shelf:
    """Entries ``<key>-<checksum>.pkl`` in ``folder``."""

    folder: Path

    def _files(self, key: str) -> list[Path]:
        return sorted(self.folder.glob(f"{key}-*.pkl")) if self.folder.is_dir() else []

    def __contains__(self, key: str) -> bool:
        return bool(self._files(key))

    def load(self, key: str) -> Any | None:
        """The entry under ``key``, or None (absent, or corrupt: then moved aside)."""
        for path in self._files(key):
            try:
                data = path.read_bytes()
                if _checksum(data) != path.stem.rpartition("-")[2]:
                    raise ValueError("checksum mismatch")
                return pickle.loads(data)
            except FileNotFoundError:
                continue  # replaced by another process since the listing
            except Exception as exc:  # noqa: BLE001 - any unreadable entry is set aside and recomputed
                aside = path.with_suffix(".corrupt")
                with contextlib.suppress(OSError):
                    path.replace(aside)
                warnings.warn(f"cache entry {path} is corrupt ({exc}); moved to {aside.name}, it will be computed again",
                              CacheFileWarning, stacklevel=2)
        return None

    def save(self, key: str, value: Any) -> Path:
        """Store ``value`` under ``key`` (replacing what was there)."""
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = atomic_write(self.folder / f"{key}-{_checksum(data)}.pkl", data)
        for old in self._files(key):
            if old != path:
                with contextlib.suppress(OSError):
                    old.unlink()
        return path

    def discard(self) -> None:
        """Remove every entry."""
        shutil.rmtree(self.folder, ignore_errors=True)
