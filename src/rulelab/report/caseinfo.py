"""The static description of a case for its page: formula, source, notes, conventions
and each variant's code, from the registry when the case is registered. Importing the
catalog defines functions and runs no computation; a case the registry lacks (one from
a user module) is described by what the store holds, and the page says so."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

MAX_CODE_LINES = 40
"""Longer sources (library functions with long docstrings) are cut here."""


@dataclass(frozen=True)
class VariantInfo:
    """One variant: name, description and source code (the function, plus its custom
    rule functions where it has them)."""

    name: str
    description: str
    code: str


@dataclass(frozen=True)
class CaseInfo:
    """What the registry says about a case; ``registered`` False when it had nothing."""

    name: str
    registered: bool
    formula: str = ""
    args: tuple[str, ...] = ()
    domain: str = ""
    source: str = ""
    notes: str = ""
    conventions: tuple[str, ...] = ()
    derivatives: tuple[str, ...] = ()
    variants: tuple[VariantInfo, ...] = ()
    problem: str = ""


def source_of(fn: Any) -> str:
    """Source of ``fn`` and of the custom JVP/VJP rules attached to it (those defined
    outside JAX), cut to :data:`MAX_CODE_LINES` lines each."""
    parts = []
    seen: set[int] = set()
    for obj in (fn, *(getattr(fn, a, None) for a in ("jvp", "fwd", "bwd"))):
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        module = getattr(obj, "__module__", "") or ""
        if obj is not fn and module.split(".")[0] in ("jax", "jaxlib"):
            continue
        try:
            text = inspect.getsource(obj)
        except (OSError, TypeError):
            continue
        lines = inspect.cleandoc(text).splitlines() if text.startswith((" ", "\t")) else text.rstrip().splitlines()
        if len(lines) > MAX_CODE_LINES:
            lines = lines[:MAX_CODE_LINES] + [f"# ... ({len(lines) - MAX_CODE_LINES} more lines in {module})"]
        parts.append("\n".join(lines))
    if not parts:
        return f"# source not available: {_named(fn)}"
    return "\n\n".join(parts)


def _named(fn: Any) -> str:
    """``fn`` by its module and name, a partial by its function and arguments: never by
    a memory address, so that the page is the same in every process."""
    if isinstance(fn, functools.partial):
        args = [_named(a) if callable(a) else repr(a) for a in fn.args] + [f"{k}={v!r}" for k, v in fn.keywords.items()]
        return f"functools.partial({_named(fn.func)}, {', '.join(args)})"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', '') or type(fn).__module__}.{name}"


def case_info(name: str) -> CaseInfo:
    """The registry's description of case ``name``, or an unregistered placeholder
    naming why (unknown case, or the catalog failed to import)."""
    try:
        from rulelab.model.case import CaseError, derivative_label, get_case
    except Exception as exc:  # pragma: no cover - the package itself is broken
        return CaseInfo(name, False, problem=f"rulelab.model.case could not be imported: {exc}")
    try:
        case = get_case(name)
    except CaseError:
        return CaseInfo(name, False, problem=f"case {name!r} is not registered in this installation (a case from a user module?)")
    except Exception as exc:
        return CaseInfo(name, False, problem=f"the catalog could not be imported: {type(exc).__name__}: {exc}")
    variants = tuple(VariantInfo(v.name, v.description, source_of(v.fn)) for v in case.variants.values())
    conventions = tuple(f"d{'' if c.order == 1 else '2'}/d{c.arg}{'' if c.order == 1 else '2'}: {c.note}" for c in case.conventions)
    domain = ", ".join(f"{a} in {d}" for a, d in zip(case.args, case.domain))
    return CaseInfo(
        name=name,
        registered=True,
        formula=case.formula,
        args=tuple(case.args),
        domain=domain,
        source=case.source,
        notes=case.notes,
        conventions=conventions,
        derivatives=tuple(f"{derivative_label(order, arg)}: {case.derivative_kind(arg, order)}" for arg, order in case.derivative_keys()),
        variants=variants,
    )
