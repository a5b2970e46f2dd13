"""JAX's own accurate mode: ``lax`` functions called with ``accuracy=AccuracyMode.HIGHEST``.

Since JAX 0.6, ``lax.exp``, ``lax.expm1``, ``lax.log1p``, ``lax.tanh``, ``lax.logistic``
and others take ``accuracy=``; with HIGHEST their JVP rules change too (the logistic's
becomes s(x) s(-x), no longer s (1 - s)). A case whose library variant goes through such
a function gets a ``library_highest`` variant, so a rule author sees whether JAX's mode
does what their own rule does, and at what cost. Where this JAX's function takes no
``accuracy=``, the variant is absent and the case's notes say so.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from jax import lax

from rulelab.model.case import Variant

NAME = "library_highest"
"""The variant's name in every case that has one."""


def highest(name: str) -> Callable[..., Any] | None:
    """``lax.<name>`` with ``accuracy=HIGHEST``, or None where this JAX lacks it."""
    fn = getattr(lax, name, None)
    mode = getattr(getattr(lax, "AccuracyMode", None), "HIGHEST", None)
    if fn is None or mode is None:
        return None
    try:
        takes = "accuracy" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes = False
    return functools.partial(fn, accuracy=mode) if takes else None


def variants(name: str, build: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None, description: str = "") -> list[Variant]:
    """``[Variant("library_highest", build(lax.<name> at HIGHEST), description)]`` (the
    function itself without ``build``), or no variant where this JAX's ``lax.<name>``
    takes no ``accuracy=``."""
    fn = highest(name)
    if fn is None:
        return []
    return [Variant(NAME, build(fn) if build else fn, description or f"lax.{name}(x, accuracy=HIGHEST): JAX's accurate mode and its JVP")]


def note(name: str) -> str:
    """What the notes say where the variant is absent (empty where it is present)."""
    return "" if highest(name) is not None else f" (library_highest is absent: this JAX's lax.{name} takes no accuracy=.)"
