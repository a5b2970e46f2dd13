"""Accuracy assertions for a user's own tests: ``assert_accurate(fn, reference=...)``.

The pitfall it exists for: ``jax.test_util.check_grads`` compares a derivative with a
finite difference taken in the input's own dtype, with tolerances (2e-3 in float32)
far wider than the derivative's size where a rule loses every digit. A rule returning
exactly 0 where the true gradient is 2e-9 passes it. Here the function is swept like
any case (references from mpmath, confirmed by agreement and cached) and every point
is held to a bound in ULPs, so such a rule fails, naming the inputs.

The function is swept as a throwaway case: registered for the sweep alone, in a
temporary results folder (kept, and named in the message, when the assertion fails),
so tests in parallel processes do not collide and the catalog is left as it was.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rulelab.api import sweep
from rulelab.model.case import (
    REALS,
    Case,
    Convention,
    Interval,
    cases,
    get_case,
    make_case,
)
from rulelab.model.modules import load_modules
from rulelab.report.styles import nonfinite_count
from rulelab.store.vocabulary import KEYS, ULP_UPPER, Bucket, Status

DEFAULT_MAX_ULP = 4
"""The bound where none is given: within 4 ULP (the 2-4 ULP bucket)."""
WORST_SHOWN = 5
"""Inputs listed per failing transform and dtype."""

MaxUlp = float | Mapping[Any, float]
"""A bound for every result, or bounds by transform, dtype or (transform, dtype)."""


def assert_accurate(
    fn: Callable[..., Any],
    *,
    reference: Callable[..., Any],
    derivatives: Mapping[tuple[str, int], Callable[..., Any]] | None = None,
    args: Sequence[str] = ("x",),
    domain: Interval | Sequence[Interval] = REALS,
    conventions: Sequence[Convention] = (),
    transforms: Sequence[str] = ("value", "grad"),
    dtypes: Sequence[str] = ("float32",),
    max_ulp: MaxUlp = DEFAULT_MAX_ULP,
    allow_nonfinite: bool = False,
    plan: str = "quick",
    special_points: Sequence[float | Sequence[float]] = (),
) -> None:
    """Sweep ``fn`` (a JAX function of scalar ``args``) against ``reference`` (an mpmath
    function of the same arguments; derivatives by mpmath.diff unless ``derivatives``
    gives them as ``{(arg, order): fn}``) under ``plan``'s points of ``domain`` and
    ``special_points``, and raise AssertionError where any transform in any dtype is
    off by more than ``max_ulp``, returns a non-finite value where the reference is
    finite (unless ``allow_nonfinite``), fails, or cannot be taken."""
    __tracebackhide__ = True  # (pytest shows the assertion, not this module's frames)
    name = _case_name(fn)
    variant = _variant_name(fn)
    case = make_case(name, f"{name}({', '.join(args)})", args, domain, reference, {variant: fn}, derivatives=derivatives,
                     conventions=conventions, special_points=special_points, source="the test's own function")
    return _assert(case, variant, transforms, dtypes, max_ulp, allow_nonfinite, plan, ())


def assert_case_accurate(
    case: str | Case,
    variant: str,
    *,
    transforms: Sequence[str] = ("value", "grad"),
    dtypes: Sequence[str] = ("float32",),
    max_ulp: MaxUlp = DEFAULT_MAX_ULP,
    allow_nonfinite: bool = False,
    plan: str = "quick",
    module: str | Sequence[str] | None = None,
) -> None:
    """:func:`assert_accurate` for a registered case's variant (``module`` files or
    modules are loaded first, as ``--module`` does)."""
    __tracebackhide__ = True
    modules = [module] if isinstance(module, str) else list(module or ())
    load_modules(modules)
    chosen = case if isinstance(case, Case) else get_case(case)
    return _assert(chosen, variant, transforms, dtypes, max_ulp, allow_nonfinite, plan, modules)


def _assert(case: Case, variant: str, transforms: Sequence[str], dtypes: Sequence[str], max_ulp: MaxUlp, allow_nonfinite: bool,
            plan: str, module: Sequence[str]) -> None:
    __tracebackhide__ = True
    folder = Path(tempfile.mkdtemp(prefix=f"rulelab-{case.name}-"))
    run = sweep(case, plan, variants=[variant], transforms=list(transforms), dtypes=list(dtypes), module=list(module),
                results=folder, workers=1)
    problems = failures(run.summary, max_ulp, allow_nonfinite)
    if problems.empty:
        shutil.rmtree(folder, ignore_errors=True)
        return
    raise AssertionError(message(case.name, problems, run.worst, run.blame, run.path))


def bound_for(max_ulp: MaxUlp, transform: str, dtype: str) -> float:
    """The bound of one result: ``max_ulp`` itself, or its entry for (transform, dtype),
    else transform, else dtype, else :data:`DEFAULT_MAX_ULP`."""
    if not isinstance(max_ulp, Mapping):
        return float(max_ulp)
    for key in ((transform, dtype), transform, dtype):
        if key in max_ulp:
            return float(max_ulp[key])
    return float(DEFAULT_MAX_ULP)


def failures(summary: pd.DataFrame, max_ulp: MaxUlp, allow_nonfinite: bool) -> pd.DataFrame:
    """The summary rows that fail their bound, with ``bound`` and ``why`` added."""
    rows = []
    for r in summary.to_dict("records"):
        bound = bound_for(max_ulp, r["transform"], r["dtype"])
        nonfinite = nonfinite_count(r)
        if r["status"] != Status.OK:
            why = f"{Status(r['status']).label}: {r.get('message') or ''}".rstrip(": ")
        elif r["max_ulp"] > bound or (nonfinite and not allow_nonfinite):
            why = ""
        else:
            continue
        rows.append({**r, "bound": bound, "nonfinite": nonfinite, "why": why})
    return pd.DataFrame(rows)


def points_over(row: Mapping[str, Any], bound: float) -> tuple[int, bool]:
    """How many scored points of a summary row are over ``bound`` ULP, and whether
    that count is exact (the buckets' edges bound the count where ``bound`` is not one)."""
    lower = {b: (0 if b == Bucket.EXACT else ULP_UPPER[b - 1] + 1) for b in Bucket if b.scored}
    count = sum(int(row.get(b.column, 0) or 0) for b, lo in lower.items() if lo > bound)
    return count, bound in ULP_UPPER or bound >= ULP_UPPER[-1]


def message(case: str, problems: pd.DataFrame, worst: pd.DataFrame, blame: pd.DataFrame, run: Path) -> str:
    """What fails, per transform and dtype: the max dULP against the bound, how many
    points are over it, and the worst inputs with computed value, reference and dULP
    (and the line blamed for them)."""
    lines = [f"{case} is not accurate:"]
    for r in problems.to_dict("records"):
        where = r["transform"] + (f" in {r['arg']}" if r["arg"] else "") + f", {r['dtype']}"
        if r["why"]:
            lines.append(f"  {where}: {r['why']}")
            continue
        count, exact = points_over(r, r["bound"])
        over = f"{count} of {int(r['n_points'])} points over {_num(r['bound'])} ULP" if exact else f"at least {count} of {int(r['n_points'])} points over {_num(r['bound'])} ULP"
        nonfinite = f"; {r['nonfinite']} non-finite where the reference is finite" if r["nonfinite"] else ""
        lines.append(f"  {where}: max {_num(r['max_ulp'])} ULP (bound {_num(r['bound'])}); {over}{nonfinite}")
        sel = _same_result(worst, r)
        sel = sel[(sel["dulp"] > r["bound"]) | sel["dulp"].isna()].sort_values("rank").head(WORST_SHOWN)
        names = str(sel["args"].iloc[0]).split(",") if len(sel) else []
        lost = _same_result(blame, r) if not blame.empty else blame
        for p in sel.to_dict("records"):
            at = ", ".join(f"{n} = {p[f'in{i}']:.9g}" for i, n in enumerate(names))
            lines.append(f"    {at}: computed {p['computed']:.9g}, reference {p['ref_hi']:.9g}, {_num(p['dulp'])} ULP{_blamed(lost, p, names)}")
    lines.append(f"(the run is kept in {run}; see it with: rulelab report {run.name} --results {run.parent.parent})")
    return "\n".join(lines)


def _same_result(df: pd.DataFrame, row: Mapping[str, Any]) -> pd.DataFrame:
    keys = [k for k in KEYS if k in df.columns]
    mask = pd.Series(True, index=df.index)
    for k in keys:
        mask &= df[k] == row[k]
    return df[mask]


def _blamed(blame: pd.DataFrame, point: Mapping[str, Any], names: Sequence[str]) -> str:
    if blame.empty:
        return ""
    for b in blame.to_dict("records"):
        same = all(b[f"in{i}"] == point[f"in{i}"] for i in range(len(names)))
        if same and b.get("primitive"):
            return f"; lost at {str(b['source']).rsplit('/', 1)[-1]} ({b['primitive']}, {b['label']})"
    return ""


def _num(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.3g}" if v >= 1e4 else f"{v:g}"


def _case_name(fn: Callable[..., Any]) -> str:
    """The function's name as a case name; one a registered case has already (a
    function called softplus) gets ``_under_test`` added, so the catalog is untouched."""
    name = re.sub(r"\W", "_", getattr(fn, "__name__", "fn")).strip("_") or "fn"
    name = name if name.isidentifier() else f"fn_{name}"
    taken = {c.name for c in cases()}
    while name in taken:
        name += "_under_test"
    return name


def _variant_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", "")
    return name if name.isidentifier() else "fn"
