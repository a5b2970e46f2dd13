"""The biggest findings of a run, in plain words, derived from the tables: where a
variant's result turns non-finite or loses most of its digits (the smallest input
binade where it starts, sharpened by the stored worst inputs and samples), which
variants of the same case are fine there, and which combinations failed outright."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rulelab.report.load import Accuracy
from rulelab.report.styles import NONFINITE_CLASSES, nonfinite_count, number, row_class
from rulelab.report.tables import (
    DTYPE_ORDER,
    TRANSFORM_ORDER,
    arg_label,
    fmt_ulp,
    ordered,
)
from rulelab.store.vocabulary import Bucket, Status

LARGE_ULP = 1024
"""Above this many ULP a result has lost most of its digits (the >2^10 bucket)."""

GOOD_ULP = 4
"""A variant within this many ULP where another fails counts as fine there."""


@dataclass(frozen=True)
class Finding:
    """One finding: ``kind`` is ``nonfinite``, ``inaccurate``, ``error`` or
    ``unsupported`` (most severe first); ``text`` is plain text."""

    kind: str
    case: str
    variant: str
    transform: str
    text: str


KIND_ORDER = ("nonfinite", "inaccurate", Status.ERROR.value, Status.UNSUPPORTED.value)


@dataclass(frozen=True)
class Region:
    """Where a variant fails along one argument: a phrase (``x >= 88.72``), the
    failing binades per sign and the smallest failing |input| seen."""

    phrase: str
    binades: frozenset[tuple[int, float]]
    argument: str


def fmt_x(x: float) -> str:
    """An input value for prose: four significant digits, powers of two kept exact."""
    if x == 0:
        return "0"
    if math.isinf(x):
        return "inf"
    m, e = math.frexp(abs(x))
    if m == 0.5 and abs(e - 1) > 12:
        return f"2^{e - 1}"
    return f"{abs(x):.4g}"


def _bad_inputs(points: pd.DataFrame, index: int, bad: Callable[[pd.DataFrame], pd.Series]) -> np.ndarray:
    col = f"in{index}"
    if points.empty or col not in points:
        return np.array([])
    sel = points[bad(points)]
    return pd.to_numeric(sel[col], errors="coerce").dropna().to_numpy(dtype=np.float64)


def _binade(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    out = np.full(ax.shape, np.nan)
    ok = np.isfinite(ax) & (ax > 0)
    out[ok] = np.floor(np.log2(ax[ok]))
    # log2 rounding can misplace exact powers of two; frexp is exact
    _, e = np.frexp(np.where(ok, ax, 1.0))
    out[ok] = (e - 1)[ok]
    out[ax == 0] = -np.inf
    out[np.isinf(ax)] = np.inf
    return out


def _power_of_two(e: float) -> float:
    """2^e, and inf past float64's range (the end of float64's top binade, 2^1024)."""
    return math.ldexp(1.0, int(e)) if e <= 1023 else math.inf


def _side(rows: pd.DataFrame, bad: pd.DataFrame, seen: np.ndarray, s: int, argument: str) -> tuple[str, str, str]:
    """(shape, phrase, threshold) of the failing binades on one sign: shape is ``zero``,
    ``inf``, ``all`` (every input of this sign), ``tail`` (from a threshold up) or
    ``range``."""
    ge, le = "\u2265", "\u2264"
    neg = "-" if s < 0 else ""
    binades = set(bad["binade"].tolist())
    if binades == {-math.inf}:
        return "zero", f"{argument} = {neg}0", "0"
    if binades == {math.inf}:
        return "inf", f"{argument} = {neg}inf", "inf"
    e0 = min(binades)
    tail = bool(rows.loc[rows["binade"] >= e0].index.isin(bad.index).all())
    approx = ""
    if e0 == -math.inf:
        t_text = "0"
    else:
        t_text = fmt_x(float(seen.min())) if seen.size else fmt_x(_power_of_two(e0))
        if not seen.size:  # no failing input stored: the threshold is known to its binade only
            approx = f" (from binade [{fmt_x(_power_of_two(e0))}, {fmt_x(_power_of_two(e0 + 1))}))"
    if tail and e0 == -math.inf:
        return "all", f"every {argument} {ge} 0" if s > 0 else f"every {argument} {le} -0", t_text
    if tail:
        t_text += approx
        return "tail", f"{argument} {ge} {t_text}" if s > 0 else f"{argument} {le} -{t_text}", t_text
    finite = [b for b in binades if math.isfinite(b)]
    hi = fmt_x(_power_of_two(max(finite) + 1)) if finite else "inf"
    return "range", f"{argument} in [{t_text}, {hi})" if s > 0 else f"{argument} in (-{hi}, -{t_text}]", t_text


def region(binned: pd.DataFrame, bad_rows: pd.Series, points: np.ndarray, argument: str) -> Region | None:
    """Describe the failing binades ``bad_rows`` of one variant's ``binned`` rows (one
    argument) as a phrase. ``points`` are failing inputs seen (worst inputs, samples):
    the smallest one in the first failing binade sharpens the threshold."""
    sides: dict[int, tuple[str, str, str]] = {}
    failing: set[tuple[int, float]] = set()
    pts_binade = _binade(points)
    pts_sign = np.where(np.signbit(points), -1, 1)
    for s in (1, -1):
        rows = binned[(binned["sign"] == s) & (binned["count"] > 0)].sort_values("binade")
        bad = rows[bad_rows.reindex(rows.index, fill_value=False)]
        if bad.empty:
            continue
        failing.update((s, float(b)) for b in bad["binade"])
        e0 = float(bad["binade"].min())
        seen = np.abs(points[(pts_sign == s) & (pts_binade == e0)])
        sides[s] = _side(rows, bad, seen, s, argument)
    if not sides:
        return None
    if len(sides) == 2 and sides[1][0] == sides[-1][0] and sides[1][2] == sides[-1][2]:
        shape, _, t_text = sides[1]
        merged = {"zero": f"{argument} = \u00b10", "inf": f"{argument} = \u00b1inf", "all": f"every {argument}", "tail": f"|{argument}| \u2265 {t_text}"}
        if shape in merged:
            return Region(merged[shape], frozenset(failing), argument)
    return Region(" and ".join(sides[s][1] for s in (1, -1) if s in sides), frozenset(failing), argument)


def constant_argument(points: pd.DataFrame, names: Sequence[str], minimum: int = 3) -> str | None:
    """``y = 0`` (or ``y = inf``) when every failing stored point (``points``: in0, in1,
    ... columns) has that magnitude in one argument: on a grid, a clearer description
    than the binades of another argument."""
    if len(points) < minimum:
        return None
    for i, name in enumerate(names):
        col = f"in{i}"
        if col not in points:
            continue
        vals = np.abs(pd.to_numeric(points[col], errors="coerce").to_numpy(dtype=np.float64))
        if np.isnan(vals).any():
            continue
        distinct = np.unique(vals)
        if distinct.size == 1 and distinct[0] in (0.0, np.inf):  # zero or infinity: a structural cause
            value = float(distinct[0])
            both = (np.signbit(points[col].to_numpy(dtype=np.float64))).any() and (~np.signbit(points[col].to_numpy(dtype=np.float64))).any()
            sign = "\u00b1" if both and value != 0 else ""
            return f"{name} = {sign}{fmt_x(value) if value else '0'}"
    return None


def _pick_argument(binned_v: Mapping[str, pd.DataFrame], bad: Callable[[pd.DataFrame], pd.Series], arg: str) -> str | None:
    """The argument whose binades separate failing from fine inputs best (the fewest
    failing binades; the differentiated argument on a tie)."""
    best: tuple[float, int, str] | None = None
    for name, rows in binned_v.items():
        n_bad = int(bad(rows).sum())
        if not n_bad:
            continue
        score = (n_bad / len(rows), 0 if name == arg else 1, name)
        if best is None or score < best:
            best = score
    return None if best is None else best[2]


def _fine_elsewhere(others: Mapping[str, pd.DataFrame], failing: frozenset[tuple[int, float]], ok: Callable[[pd.DataFrame], bool]) -> dict[str, float]:
    """Of the other variants' rows (same argument), those measured and fine in every
    failing binade: name -> their max dULP there."""
    out: dict[str, float] = {}
    for v, rows in others.items():
        keys = zip(rows["sign"].to_numpy(dtype=np.int64).tolist(), rows["binade"].to_numpy(dtype=np.float64).tolist())
        there = rows[np.fromiter((k in failing for k in keys), dtype=bool, count=len(rows))]
        if len(there) < len(failing):
            continue
        if ok(there):
            out[v] = float(there["max_ulp"].max())
    return out


def _nonfinite_kind(row: dict, worst_v: pd.DataFrame) -> set[str]:
    """What the failing points returned: some of NaN, inf, -inf and ``undefined``
    (finite where the reference is undefined), from the summary's counts where the
    store has them, else from the worst inputs."""
    out: set[str] = set()
    if number(row.get(Bucket.UNEXPECTED_FINITE.column)):
        out.add("undefined")
    nan, inf = number(row.get("wrong_nan")), number(row.get("wrong_inf"))
    if nan or inf:
        return out | {k for k, n in (("NaN", nan), ("inf", inf)) if n}
    if not number(row.get(Bucket.WRONG_NONFINITE.column)):
        return out
    bad = worst_v[worst_v["bucket"] == Bucket.WRONG_NONFINITE.column] if not worst_v.empty else worst_v
    vals = pd.to_numeric(bad["computed"], errors="coerce").to_numpy(dtype=np.float64) if not bad.empty else np.array([])
    kinds = {k for k, hit in (("NaN", np.isnan(vals).any()), ("inf", np.isposinf(vals).any()), ("-inf", np.isneginf(vals).any())) if hit}
    return out | (kinds or {"non-finite"})


def _kind_words(kinds: set[str]) -> str:
    """``NaN/inf``, or ``finite where the reference is undefined``, or both."""
    values = "/".join(k for k in ("NaN", "inf", "-inf", "non-finite") if k in kinds)
    if "undefined" not in kinds:
        return values or "non-finite"
    return f"{values} (or finite where the reference is undefined)" if values else "finite where the reference is undefined"


GROUP = ["case", "transform", "arg", "dtype", "backend"]
Key = tuple[str, ...]


@dataclass(frozen=True)
class _Points:
    """A point table (worst or samples) grouped once by (group, variant) as row
    positions; a group's rows become a narrow frame only when looked up."""

    table: pd.DataFrame
    rows: Mapping[tuple[Any, ...], np.ndarray]

    @staticmethod
    def of(df: pd.DataFrame, cols: list[str]) -> _Points:
        narrow = df[[c for c in cols if c in df.columns]]
        return _Points(narrow, df.groupby([*GROUP, "variant"], sort=False).indices if not df.empty else {})

    def get(self, key: Key, variant: str) -> pd.DataFrame:
        idx = self.rows.get((*key, variant))
        return _NO_POINTS if idx is None else self.table.iloc[idx].reset_index(drop=True)


@dataclass(frozen=True)
class _Grouped:
    """The point tables split once, narrow: ``binned[group][variant][argument]`` (rows
    with points, by sign and binade), ``worst`` and ``samples`` by group and variant,
    where a group is (case, transform, arg, dtype, backend). Findings look rows up
    instead of filtering whole tables."""

    binned: dict[Key, dict[str, dict[str, pd.DataFrame]]]
    worst: _Points
    samples: _Points

    @staticmethod
    def of(acc: Accuracy) -> _Grouped:
        binned: dict[Key, dict[str, dict[str, pd.DataFrame]]] = {}
        cols = ["sign", "binade", "count", "max_ulp", "nonfinite"]
        b = acc.binned[acc.binned["count"] > 0]
        b = b.sort_values(["sign", "binade"], kind="stable")
        for k, idx in b.groupby([*GROUP, "variant", "binade_of"], sort=False).indices.items():
            binned.setdefault(tuple(k[:5]), {}).setdefault(k[5], {})[k[6]] = b[cols].iloc[idx].reset_index(drop=True)

        def inputs(df: pd.DataFrame) -> list[str]:
            return [c for c in df.columns if c.startswith("in") and c[2:].isdigit()]

        return _Grouped(
            binned,
            _Points.of(acc.worst, [*inputs(acc.worst), "computed", "dulp", "bucket"]),
            _Points.of(acc.samples, [*inputs(acc.samples), "computed", "dulp"]),
        )


_NO_POINTS = pd.DataFrame({c: pd.Series(dtype=float) for c in ("in0", "computed", "dulp")}).assign(bucket=pd.Series(dtype=object))


def _criteria(kind: str) -> tuple[Callable[[pd.DataFrame], pd.Series], Callable[[pd.DataFrame], pd.Series], Callable[[pd.DataFrame], pd.Series], Callable[[pd.DataFrame], bool]]:
    """(failing binned rows, failing worst inputs, failing samples, fine binned rows)."""
    dl = lambda d: pd.to_numeric(d["dulp"], errors="coerce")  # noqa: E731
    if kind == "nonfinite":
        return (
            lambda d: d["nonfinite"] > 0,
            lambda d: d["bucket"].isin(NONFINITE_CLASSES),
            lambda d: np.isinf(dl(d)),
            lambda d: bool((d["nonfinite"] == 0).all()),
        )
    return (
        lambda d: d["max_ulp"] > LARGE_ULP,
        lambda d: (dl(d) > LARGE_ULP) & ~d["bucket"].isin(NONFINITE_CLASSES),
        lambda d: (dl(d) > LARGE_ULP) & np.isfinite(dl(d)),
        lambda d: bool(((d["max_ulp"].fillna(0) <= GOOD_ULP) & (d["nonfinite"] == 0)).all()),
    )


def _region_for(tables: _Grouped, key: Key, variant: str, kind: str, arg_names: Sequence[str]) -> tuple[Region | None, dict[str, float]]:
    """Where ``variant`` fails in the result group ``key`` and which variants are fine
    there."""
    bad_b, bad_w, bad_s, ok = _criteria(kind)
    group = tables.binned.get(key, {})
    argument = _pick_argument(group.get(variant, {}), bad_b, key[2])
    if argument is None:
        return None, {}
    rows = group[variant][argument]
    idx = list(arg_names).index(argument) if argument in arg_names else 0
    worst_v = tables.worst.get(key, variant)
    samples_v = tables.samples.get(key, variant)
    points = np.concatenate([_bad_inputs(worst_v, idx, bad_w), _bad_inputs(samples_v, idx, bad_s)])
    reg = region(rows, bad_b(rows), points, argument)
    if reg is None:
        return None, {}
    others = {v: by_arg[argument] for v, by_arg in group.items() if v != variant and argument in by_arg}
    if len(arg_names) > 1 and not reg.phrase.startswith(f"{argument} = "):
        failing_points = pd.concat([worst_v[bad_w(worst_v)], samples_v[bad_s(samples_v)]], ignore_index=True)
        phrase = constant_argument(failing_points, arg_names)
        if phrase is not None:
            return Region(phrase, reg.binades, argument), {v: float(r["max_ulp"].max()) for v, r in others.items() if ok(r)}
    return reg, _fine_elsewhere(others, reg.binades, ok)


def _arg_names(acc: Accuracy) -> dict[str, list[str]]:
    """Argument names per case, from the worst inputs' ``args`` (else the binned
    arguments)."""
    out: dict[str, list[str]] = {}
    if not acc.worst.empty:
        for case, args in acc.worst.groupby("case", sort=False)["args"]:
            named = next((a for a in args if a), "")
            if named:
                out[case] = named.split(",")
    if not acc.binned.empty:
        for case, ofs in acc.binned.groupby("case", sort=False)["binade_of"]:
            out.setdefault(case, [n for n in dict.fromkeys(ofs) if n])
    return out


def _lost_at(blame: Any, case: str, variant: str, transform: str, arg: str, backend: str, dtypes: Sequence[str]) -> str:
    """"; lost at FILE:LINE (primitive, cause)" from the blame table, for the first of
    ``dtypes`` whose worst input has a blamed operation; empty where none has."""
    b = blame[(blame["case"] == case) & (blame["variant"] == variant) & (blame["transform"] == transform) & (blame["arg"] == arg)
              & (blame["backend"] == backend) & (blame["rank"] == 0) & (blame["primitive"] != "")]
    for dtype in dtypes:
        rows = b[b["dtype"] == dtype]
        if len(rows):
            r = rows.iloc[0]
            where = str(r["source"]).rsplit("/", 1)[-1]
            return f"; lost at {where} ({r['primitive']}, {r['label']}, in {dtype})"
    return ""


def findings(acc: Accuracy, several_backends: bool | None = None) -> list[Finding]:
    """Every finding of ``acc``, most severe kind first, then in case order.
    ``several_backends``: whether findings name their backend (default: whether ``acc``
    has more than one), so that findings of one case at a time read as those of all."""
    out: list[Finding] = []
    s = acc.summary
    if s.empty:
        return out
    tables = _Grouped.of(acc)
    names = _arg_names(acc)
    backends = s["backend"].nunique() > 1 if several_backends is None else several_backends
    multi = {c for c, n in s[s["arg"] != ""].groupby("case")["arg"].nunique().items() if n > 1}
    several = {c for c, n in s.groupby("case")["variant"].nunique().items() if n > 1}
    for (case, variant, transform, arg, backend), g in s.groupby(["case", "variant", "transform", "arg", "backend"], sort=False):
        where = f" on {backend}" if backends else ""
        label = arg_label(transform, arg) if arg and case in multi else transform
        for kind in ("nonfinite", "inaccurate"):
            parts, fine_sets, what = [], [], set()
            for r in g.to_dict("records"):
                hit = nonfinite_count(r) > 0 if kind == "nonfinite" else row_class(r) == Bucket.ULP_GT_1024.column
                if r["status"] != Status.OK.value or not hit:
                    continue
                key = (case, transform, arg, r["dtype"], backend)
                reg, fine = _region_for(tables, key, variant, kind, names.get(case) or [arg or "x"])
                if kind == "nonfinite":
                    what |= _nonfinite_kind(r, tables.worst.get(key, variant))
                    n = f"{nonfinite_count(r)} of {int(number(r['n_points']))} points"
                else:
                    n = f"up to {fmt_ulp(r['max_ulp'])} ULP"
                place = reg.phrase if reg is not None else "some inputs"
                parts.append((r["dtype"], f"{place} in {r['dtype']} ({n})"))
                fine_sets.append(fine if reg is not None else {})
            if not parts:
                continue
            parts.sort(key=lambda p: DTYPE_ORDER.index(p[0]) if p[0] in DTYPE_ORDER else len(DTYPE_ORDER))
            fine_list = _fine_text(fine_sets)
            if kind == "nonfinite":
                head = f"{case} {variant}: {label} {_kind_words(what)} for "
                tail = f"; fine there: {', '.join(fine_list)}" if fine_list else "; no other variant is fine there" if case in several else ""
            else:
                head = f"{case} {variant}: {label} off by more than {LARGE_ULP} ULP for "
                tail = f"; within {GOOD_ULP} ULP there: {', '.join(fine_list)}" if fine_list else ""
            why = _lost_at(acc.blame, case, variant, transform, arg, backend, [p[0] for p in parts])
            out.append(Finding(kind, case, variant, transform, head + "; ".join(p[1] for p in parts) + where + tail + why))
        for status in (Status.ERROR.value, Status.UNSUPPORTED.value):
            bad = g[g["status"] == status]
            if bad.empty:
                continue
            dtypes = ", ".join(ordered(bad["dtype"], DTYPE_ORDER))
            message = next((m for m in bad["message"] if m), "")
            verb = "raised an error" if status == Status.ERROR.value else "is unsupported"
            text = f"{case} {variant}: {label} {verb} in {dtypes}{where}" + (f": {message}" if message else "")
            out.append(Finding(status, case, variant, transform, text))
    return in_order(out, acc.cases())


def in_order(found: Sequence[Finding], cases: Sequence[str]) -> list[Finding]:
    """``found`` most severe kind first, then in the order of ``cases``, then by
    transform (stable: findings that tie keep their order)."""
    case_rank = {c: i for i, c in enumerate(cases)}
    t_rank = {t: i for i, t in enumerate(TRANSFORM_ORDER)}
    return sorted(found, key=lambda f: (KIND_ORDER.index(f.kind), case_rank.get(f.case, 0), t_rank.get(f.transform, 9)))


def _fine_text(fine: list[dict[str, float]]) -> list[str]:
    """Variants fine in every listed dtype, each with its max dULP there when the
    finding covers one dtype."""
    names = [n for n in fine[0] if all(n in f for f in fine[1:])] if fine else []
    if len(fine) == 1:
        return [f"{n} (\u2264 {fmt_ulp(fine[0][n])} ULP there)" if not math.isnan(fine[0][n]) else n for n in names]
    return names
