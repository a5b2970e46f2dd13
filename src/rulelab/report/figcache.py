"""Figures kept on disk by the content they plot ($RULELAB_CACHE/figures), so a report
drawn again from unchanged results draws nothing: drawing is most of a report's time.

The key hashes the drawing code (the source file of the figure function, this
package's figures module, and the matplotlib and Pillow versions), the figure function
and every argument, DataFrames by their columns,
dtypes and values. A changed number, label or drawing draws the figure again; an
unreadable or unwritable cache only costs the drawing.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from rulelab.core.cachedir import cache_dir
from rulelab.core.files import atomic_write

NOTHING = b"-"
"""What the cache holds for a figure function that had nothing to draw (returned None)."""


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, pd.DataFrame):
        h.update(repr((list(obj.columns), [str(t) for t in obj.dtypes], len(obj))).encode())
        try:
            h.update(pd.util.hash_pandas_object(obj, index=False).to_numpy().tobytes())
        except TypeError:  # columns of mixed objects
            h.update(pickle.dumps(obj.reset_index(drop=True)))
    elif isinstance(obj, Mapping):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for x in obj:
            _feed(h, x)
        h.update(b"]")
    else:
        h.update(repr(obj).encode())
    h.update(b";")


@functools.cache
def _code(source: str) -> bytes:
    """What the drawing depends on besides the arguments: the file ``source`` that
    defines the figure function, and the matplotlib and Pillow versions. (Read from the
    decorated function, so this module never imports the figures module.)"""
    import matplotlib
    import PIL

    return Path(source).read_bytes() + f"{matplotlib.__version__} {PIL.__version__}".encode()


def key(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], code: bytes = b"") -> str:
    """The cache key of the figure ``name(*args, **kwargs)`` drawn by ``code``."""
    h = hashlib.sha256(code)
    _feed(h, name)
    _feed(h, args)
    _feed(h, kwargs)
    return h.hexdigest()


def cached(fn: Callable[..., bytes | None]) -> Callable[..., bytes | None]:
    """``fn`` (a figure function returning PNG bytes or None), answered from the cache
    where it has drawn the same thing before."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> bytes | None:
        k = key(fn.__name__, args, kwargs, _code(fn.__code__.co_filename))
        path = cache_dir() / "figures" / k[:2] / f"{k}.png"
        try:
            data = path.read_bytes()
        except OSError:
            pass
        else:
            if data:
                return None if data == NOTHING else data
        image = fn(*args, **kwargs)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, image if image is not None else NOTHING)
        except OSError:
            pass
        return image

    return wrapper
