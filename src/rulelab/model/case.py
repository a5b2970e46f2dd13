"""The case model: a mathematical function, its mpmath reference and its JAX variants.

A :class:`Case` is plain data plus functions. Registering one (``register``) checks it
at once, so a malformed case fails where it is defined, naming the case and the problem.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from rulelab.core.fingerprint import keyed_by_name

TRANSFORMS: tuple[str, ...] = ("value", "grad", "jvp", "grad2")
"""What may be asked of a variant. ``grad``/``jvp`` are first derivatives (reverse and
forward mode), ``grad2`` the second derivative; each is taken per argument."""

DERIVATIVE_ORDER: Mapping[str, int] = MappingProxyType({"value": 0, "grad": 1, "jvp": 1, "grad2": 2})


def derivative_label(order: int, arg: str) -> str:
    """'value', 'd/dx' or 'd2/dx2'."""
    return "value" if order == 0 else f"d/d{arg}" if order == 1 else f"d{order}/d{arg}{order}"


class CaseError(ValueError):
    """A case (or variant) is malformed; the message names the case and the problem."""


@dataclass(frozen=True)
class Interval:
    """A real interval, closed or open at each end. By default a finite end is closed and
    an infinite end open; closing an infinite end makes that infinity itself an input
    (for cases such as masked log-sum-exp that must handle -inf)."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_closed: bool | None = None
    hi_closed: bool | None = None

    def __post_init__(self) -> None:
        if self.lo_closed is None:
            object.__setattr__(self, "lo_closed", math.isfinite(self.lo))
        if self.hi_closed is None:
            object.__setattr__(self, "hi_closed", math.isfinite(self.hi))
        if not (isinstance(self.lo, (int, float)) and isinstance(self.hi, (int, float))):
            raise CaseError(f"interval ends must be numbers, got {self.lo!r}, {self.hi!r}")
        if math.isnan(self.lo) or math.isnan(self.hi) or self.lo > self.hi:
            raise CaseError(f"empty or invalid interval [{self.lo}, {self.hi}]")

    def contains(self, x: Any) -> Any:
        """Elementwise membership (works on floats and numpy arrays)."""
        lo_ok = (x >= self.lo) if self.lo_closed else (x > self.lo)
        hi_ok = (x <= self.hi) if self.hi_closed else (x < self.hi)
        return lo_ok & hi_ok

    def __str__(self) -> str:
        left = "[" if self.lo_closed else "("
        right = "]" if self.hi_closed else ")"
        return f"{left}{self.lo:g}, {self.hi:g}{right}"


REALS = Interval(-math.inf, math.inf)
NONNEGATIVE = Interval(0.0, math.inf)
EXTENDED_REALS = Interval(-math.inf, math.inf, lo_closed=True, hi_closed=True)
POSITIVE = Interval(0.0, math.inf, lo_closed=False)
DOMAIN_NAMES = "rulelab.REALS, rulelab.NONNEGATIVE, rulelab.POSITIVE, rulelab.EXTENDED_REALS"
"""The named domains, for messages."""


@dataclass(frozen=True)
class Convention:
    """A derivative value the case *defines* where the mathematical one does not exist
    or is not wanted. ``where(*args)`` (floats) selects the points; ``value`` is a
    number or ``value(mp, *args)``. ``order`` is 1 or 2; ``arg`` the argument differentiated."""

    arg: str
    order: int
    where: Callable[..., bool]
    value: float | Callable[..., Any]
    note: str

    def value_at(self, mp: Any, *args: Any) -> Any:
        return self.value(mp, *args) if callable(self.value) else mp.mpf(self.value)


@dataclass(frozen=True)
class Variant:
    """One JAX implementation of a case: ``fn`` takes one scalar per case argument and
    returns a scalar; rulelab vectorises and differentiates it."""

    name: str
    fn: Callable[..., Any]
    description: str = ""


@dataclass(frozen=True)
class Case:
    """One mathematical function with its reference and variants (see DESIGN.md)."""

    name: str
    formula: str
    args: tuple[str, ...]
    domain: tuple[Interval, ...]
    reference: Callable[..., Any]
    variants: Mapping[str, Variant]
    source: str = ""
    derivatives: Mapping[tuple[str, int], Callable[..., Any]] = field(default_factory=dict)
    conventions: tuple[Convention, ...] = ()
    special_points: tuple[tuple[float, ...], ...] = ()
    notes: str = ""
    steps: Callable[[int], Mapping[str, Callable[..., Any]]] | None = None
    default_steps: int = 0
    fast_reference: Mapping[tuple[str, int], Callable[..., Any]] = field(default_factory=dict)
    """Optional vectorised float64 numpy functions of the value (``(arg, 0)``) and the
    derivatives (``(arg, 1)``, ``(arg, 2)``), for sweeps of every float32 input
    (``rulelab.reference.fast``: measured against mpmath before use, never trusted blindly)."""

    def with_steps(self, n: int) -> Mapping[str, Variant]:
        """For iterative cases: the variants rebuilt with ``n`` iterations/steps (only
        those the count applies to), so benchmarks can sweep cost against steps."""
        if self.steps is None:
            raise CaseError(f"case {self.name!r} is not iterative: it has no step count")
        return {k: Variant(k, fn, self.variants[k].description if k in self.variants else "") for k, fn in self.steps(n).items()}

    def derivative_keys(self) -> list[tuple[str, int]]:
        """``(arg, order)`` for every derivative the case has a reference for."""
        return [(a, k) for a in self.args for k in (1, 2)]

    def conventions_for(self, arg: str, order: int) -> tuple[Convention, ...]:
        return tuple(c for c in self.conventions if c.arg == arg and c.order == order)

    def derivative_kind(self, arg: str, order: int) -> str:
        """How the reference of a derivative is made: analytic (an mpmath expression the
        case gives), or numerical (a relative-step difference, of the given first
        derivative where there is one); conventions, where they apply, come first."""
        if (arg, order) in self.derivatives:
            kind = "analytic"
        elif order == 2 and (arg, 1) in self.derivatives:
            kind = f"numerical (a difference of the analytic d/d{arg})"
        else:
            kind = "numerical (a relative-step difference of the value)"
        notes = [c.note for c in self.conventions_for(arg, order)]
        return kind + "".join(f"; convention: {n}" for n in notes)


def make_case(
    name: str,
    formula: str,
    args: Sequence[str],
    domain: Interval | Sequence[Interval],
    reference: Callable[..., Any],
    variants: Sequence[Variant] | Mapping[str, Callable[..., Any]],
    *,
    source: str = "",
    derivatives: Mapping[tuple[str, int], Callable[..., Any]] | None = None,
    conventions: Sequence[Convention] = (),
    special_points: Sequence[float | Sequence[float]] = (),
    notes: str = "",
    steps: Callable[[int], Mapping[str, Callable[..., Any]]] | None = None,
    default_steps: int = 0,
    fast_reference: Mapping[tuple[str, int], Callable[..., Any]] | None = None,
) -> Case:
    """Build a :class:`Case` from convenient forms: one interval for every argument,
    variants as a list or as ``{name: fn}``, special points as scalars for one argument.
    Validates the result (see :func:`validate`)."""
    args = tuple(args)
    if isinstance(domain, Interval):
        domain = (domain,) * len(args)
    elif not isinstance(domain, (tuple, list)) or not all(isinstance(d, Interval) for d in domain):
        raise CaseError(
            f"case {name!r}: domain must be an Interval or one Interval per argument, got {domain!r}; "
            f"use {DOMAIN_NAMES} or rulelab.Interval(lo, hi)"
        )
    if isinstance(variants, Mapping):
        vs = {k: v if isinstance(v, Variant) else Variant(k, v) for k, v in variants.items()}
    else:
        vs = {}
        for v in variants:
            if not isinstance(v, Variant):
                raise CaseError(f"case {name!r}: variants must be Variant objects, got {v!r}")
            if v.name in vs:
                raise CaseError(f"case {name!r}: variant {v.name!r} is defined twice")
            vs[v.name] = v
    points = tuple(tuple(float(c) for c in p) if isinstance(p, (tuple, list)) else (float(p),) for p in special_points)
    case = Case(
        name=name,
        formula=formula,
        args=args,
        domain=tuple(domain),
        reference=reference,
        variants=MappingProxyType(dict(vs)),
        source=source,
        derivatives=MappingProxyType(dict(derivatives or {})),
        conventions=tuple(conventions),
        special_points=points,
        notes=notes,
        steps=steps,
        default_steps=default_steps,
        fast_reference=MappingProxyType(dict(fast_reference or {})),
    )
    validate(case)
    return case


def _positional_arity(fn: Callable[..., Any]) -> tuple[int, int | None]:
    """(minimum, maximum) positional arguments ``fn`` accepts; maximum None = varargs."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without signatures: accept
        return 0, None
    lo, hi = 0, 0
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            return lo, None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            hi += 1
            if p.default is p.empty:
                lo += 1
    return lo, hi


def _accepts(fn: Callable[..., Any], n: int) -> bool:
    lo, hi = _positional_arity(fn)
    return lo <= n and (hi is None or n <= hi)


def validate(case: Case) -> None:
    """Raise :class:`CaseError` naming the case and the problem if ``case`` is malformed."""
    if not isinstance(case, Case):
        raise CaseError(f"expected a rulelab Case, got {type(case).__name__}")
    name = case.name
    if not isinstance(name, str) or not name.isidentifier():
        raise CaseError(f"case name must be an identifier-like string, got {name!r}")

    def bad(problem: str) -> CaseError:
        return CaseError(f"case {name!r}: {problem}")

    if not case.args or not all(isinstance(a, str) and a.isidentifier() for a in case.args):
        raise bad(f"args must be a non-empty tuple of argument names, got {case.args!r}")
    if len(set(case.args)) != len(case.args):
        raise bad(f"argument names repeat: {case.args!r}")
    if len(case.domain) != len(case.args):
        raise bad(f"{len(case.args)} argument(s) {case.args} but {len(case.domain)} domain interval(s)")
    for a, d in zip(case.args, case.domain):
        if not isinstance(d, Interval):
            raise bad(f"unknown domain {d!r} for argument {a!r}: use rulelab.Interval")
    if not callable(case.reference):
        raise bad(f"reference is not callable: {case.reference!r}")
    if not _accepts(case.reference, 1 + len(case.args)):
        raise bad(f"reference must take (mp, {', '.join(case.args)})")
    if not case.variants:
        raise bad("has no variants")
    for vname, v in case.variants.items():
        if not isinstance(v, Variant) or v.name != vname:
            raise bad(f"variant entry {vname!r} is not a Variant named {vname!r}")
        if not callable(v.fn):
            raise bad(f"variant {vname!r}: fn is not callable")
        if not _accepts(v.fn, len(case.args)):
            lo, hi = _positional_arity(v.fn)
            raise bad(
                f"variant {vname!r} takes {lo if lo == hi else f'{lo}..{hi}'} positional argument(s) "
                f"but the case has {len(case.args)} {case.args}"
            )
    for key, fn in case.derivatives.items():
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] in case.args and key[1] in (1, 2)):
            raise bad(f"derivative key {key!r} must be (argument name, 1 or 2)")
        if not callable(fn) or not _accepts(fn, 1 + len(case.args)):
            raise bad(f"derivative {key!r} must be callable as (mp, {', '.join(case.args)})")
    for c in case.conventions:
        if not isinstance(c, Convention):
            raise bad(f"conventions must be Convention objects, got {c!r}")
        if c.arg not in case.args or c.order not in (1, 2):
            raise bad(f"convention {c.note!r} names argument {c.arg!r} order {c.order}")
    if case.steps is not None and (not callable(case.steps) or case.default_steps < 1):
        raise bad("steps must be a callable n -> {variant: fn} and default_steps >= 1")
    for key, fn in case.fast_reference.items():
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] in case.args and key[1] in (0, 1, 2)):
            raise bad(f"fast_reference key {key!r} must be (argument name, 0 for the value, 1 or 2)")
        if not callable(fn) or not _accepts(fn, len(case.args)):
            raise bad(f"fast_reference {key!r} must be callable as ({', '.join(case.args)}) on float64 arrays")
    for p in case.special_points:
        if len(p) != len(case.args):
            raise bad(f"special point {p} has {len(p)} coordinates, expected {len(case.args)}")


_REGISTRY: dict[str, Case] = {}


def register(case: Case, *, replace: bool = False) -> Case:
    """Add ``case`` to the registry after validating it and probing its reference at a
    few points (a reference that raises or returns a Python float is refused here). A
    duplicate name is an error unless ``replace`` is true."""
    from rulelab.model.contract import (  # (contract imports this module)
        BrokenReference,
        probe,
    )

    validate(case)
    try:
        probe(case)
    except BrokenReference as exc:
        raise CaseError(str(exc)) from None
    if case.name in _REGISTRY and not replace and _REGISTRY[case.name] is not case:
        raise CaseError(f"case {case.name!r}: a case with this name is already registered")
    _REGISTRY[case.name] = case
    return case


def unregister(name: str) -> None:
    """Remove a case (for tests and interactive use)."""
    _REGISTRY.pop(name, None)


BUILTIN_MODULES = ("rulelab.catalog",)
"""Case modules the registry loads before it is first read. The catalog is loaded by
name, like a user's ``--module``: it has no other privilege, and the model layer does
not depend on the layer above it that holds the cases."""


def _ensure_catalog() -> None:
    import importlib

    for name in BUILTIN_MODULES:
        importlib.import_module(name)  # importing registers its cases


@keyed_by_name
def cases() -> list[Case]:
    """Every registered case, the catalog's first, in registration order."""
    _ensure_catalog()
    return list(_REGISTRY.values())


@keyed_by_name
def get_case(name: str) -> Case:
    """The case called ``name``; an unknown name lists the known ones."""
    _ensure_catalog()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise CaseError(f"unknown case {name!r}; known cases: {known}") from None
