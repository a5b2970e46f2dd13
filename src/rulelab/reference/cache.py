"""The disk cache of confirmed references.

The pitfall: a cached number that outlives the code that made it. The cache is keyed by
a fingerprint of everything the reference depends on (the code and constants reachable
from it, its derivatives and conventions, the domain, the precision policy and the
mpmath/gmpy2 versions) and by the float64 bits of each input point, so one computation
serves every dtype whose inputs coincide. Cache files carry a checksum in their name; a
corrupt file is moved aside (never deleted) and its points recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from pathlib import Path
from typing import Any

import mpmath
import numpy as np

from rulelab.core.cachedir import cache_dir
from rulelab.core.files import atomic_write
from rulelab.core.fingerprint import fingerprint
from rulelab.model.case import Case
from rulelab.model.contract import START_PRECISIONS
from rulelab.reference.settle import DD_BITS, ZERO_PRECISION

POLICY_VERSION = 2
"""Changes whenever the way references are computed or confirmed changes (part of the
cache key)."""


class ReferenceCacheWarning(UserWarning):
    """A cache file was unreadable or failed its checksum; it was moved aside."""


def _library_versions() -> str:
    try:
        import gmpy2

        gmpy = gmpy2.version()
    except ImportError:
        gmpy = "none"
    return f"mpmath {mpmath.__version__} ({mpmath.libmp.BACKEND}), gmpy2 {gmpy}"


def reference_key(case: Case, order: int, arg: str) -> str:
    """Cache key: case name and derivative, and a fingerprint of what the reference
    depends on: the code and constants reachable from the reference, the analytic
    derivatives and conventions used, the domain, the precision policy and the
    mpmath and gmpy2 versions."""
    used: list[Any] = [case.reference]
    if order:
        used += [case.derivatives.get((arg, k)) for k in range(1, order + 1)]
        used += [(c.note, c.where, c.value) for c in case.conventions_for(arg, order)]
        used.append(str(case.domain))
    policy = (POLICY_VERSION, START_PRECISIONS, DD_BITS, ZERO_PRECISION, _library_versions())
    digest = fingerprint(case.name, order, arg if order else "", policy, *used)[:20]
    suffix = f"d{order}_{arg}" if order else "value"
    return f"{case.name}/{suffix}-{digest}"


def _point_bits(points: tuple[np.ndarray, ...]) -> np.ndarray:
    """(n, nargs) uint64 bit patterns of float64 inputs: the cache's point identity."""
    cols = [np.ascontiguousarray(np.asarray(p, dtype=np.float64)).view(np.uint64) for p in points]
    return np.stack(cols, axis=1)


def _checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def load_cache(key: str) -> dict[bytes, tuple[float, float]]:
    """Every cached point of ``key``: {point bits: (hi, lo)}. Corrupt files are moved
    aside with a warning and ignored (their points will be recomputed)."""
    folder = cache_dir() / "reference" / key
    table: dict[bytes, tuple[float, float]] = {}
    if not folder.is_dir():
        return table
    for path in sorted(folder.glob("*.npz")):
        try:
            data = path.read_bytes()
            if _checksum(data) != path.stem.split("-")[-1]:
                raise ValueError("checksum mismatch")
            with np.load(io.BytesIO(data)) as z:
                bits, hi, lo = z["bits"], z["hi"], z["lo"]
            if bits.ndim != 2 or len(bits) != len(hi) or len(hi) != len(lo):
                raise ValueError("inconsistent arrays")
        except FileNotFoundError:
            continue  # merged away by another run's compaction since the listing: not corruption
        except Exception as exc:  # noqa: BLE001 - any unreadable file is set aside
            aside = path.with_suffix(".corrupt")
            with contextlib.suppress(OSError):
                path.replace(aside)
            warnings.warn(
                f"reference cache file {path} is corrupt ({exc}); moved to {aside.name}, its points will be recomputed",
                ReferenceCacheWarning,
                stacklevel=2,
            )
            continue
        for b, h, l in zip(bits, hi, lo):
            table[b.tobytes()] = (float(h), float(l))
    return table


def save_cache(key: str, bits: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> Path | None:
    """Add computed points to the cache atomically (temp file + rename); the file name
    carries the checksum of its content."""
    if len(bits) == 0:
        return None
    folder = cache_dir() / "reference" / key
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, bits=bits, hi=hi, lo=lo)
    data = buf.getvalue()
    path = folder / f"part-{_checksum(data)}.npz"
    return atomic_write(path, data)


def compact_cache(key: str, max_files: int = 8) -> None:
    """Merge a key's many small cache files into one (written before the old ones are
    removed, so an interruption loses nothing)."""
    folder = cache_dir() / "reference" / key
    parts = sorted(folder.glob("part-*.npz"))
    if len(parts) <= max_files:
        return
    table = load_cache(key)
    if not table:
        return
    raw = np.frombuffer(b"".join(table.keys()), dtype=np.uint64)
    bits = raw.reshape(len(table), -1)
    vals = np.array(list(table.values()), dtype=np.float64)
    kept = save_cache(key, bits, vals[:, 0], vals[:, 1])
    for p in parts:
        if p != kept:
            with contextlib.suppress(OSError):
                p.unlink()
