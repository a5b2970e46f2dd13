"""Sweep plans: which cases, variants, transforms and dtypes a run covers, and how densely.

A plan is a TOML file (the packaged ones are ``quick``, ``default`` and ``exhaustive``,
in ``rulelab/plans/``, also reachable as ``accuracy/`` at the top of the repository)::

    description = "what this plan is for"
    cases = "all"                       # or ["softplus", "hypot"]
    variants = "all"                    # or ["naive", "custom_jvp"]
    transforms = ["value", "grad", "jvp", "grad2"]
    dtypes = ["float32", "float16", "bfloat16"]
    seed = 0
    worst = 10                          # worst inputs kept per result
    samples = 400                       # thinned points kept per result for plots
    max_precision = 2048                # bits: cap of the reference's confirmation retries

    [sweep]                             # inputs.SweepSpec fields, for every dtype
    exhaustive16 = false
    per_binade = 8
    [sweep.float32]                     # overrides for one dtype
    per_binade = 4
    [sweep.args3]                       # overrides for cases of 3 arguments
    grid_stride = 32
    [sweep.float32.args3]               # both
    grid_stride = 48

Every mistake (an unknown key, case, variant, transform or dtype, a value of the wrong
type) is a :class:`PlanError` naming the file and line and listing what is valid.
tomllib reports no line numbers for valid TOML, so lines are found by scanning the text.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from rulelab.core.errors import UsageError
from rulelab.core.floats import DTYPES
from rulelab.model.case import TRANSFORMS
from rulelab.model.case import cases as registered_cases
from rulelab.model.contract import MAX_PRECISION, START_PRECISIONS
from rulelab.model.inputs import SweepSpec

PACKAGED = ("quick", "default", "exhaustive")
"""The plans shipped with rulelab, found by name."""

KEYS: tuple[str, ...] = ("description", "cases", "variants", "transforms", "dtypes", "seed", "worst", "samples", "max_precision", "sweep")
"""Valid top-level keys of a plan file."""

SWEEP_FIELDS: Mapping[str, type] = MappingProxyType({f.name: type(f.default) for f in dataclasses.fields(SweepSpec)})
"""Valid keys of a ``[sweep]`` table (the fields of :class:`inputs.SweepSpec`) and their types."""

CASE_HINT = " (cases of your own are known once their module is given with --module)"

_ARGS_LAYER = re.compile(r"args([1-9][0-9]*)$")


class PlanError(UsageError):
    """A plan is malformed: the message names the file and line where known."""


@dataclass(frozen=True)
class Plan:
    """A validated plan. ``variants`` None means every variant of each case; ``sweep``
    maps a layer (``""``, a dtype, ``argsN`` or ``dtype.argsN``) to SweepSpec overrides."""

    name: str
    cases: tuple[str, ...]
    variants: tuple[str, ...] | None
    transforms: tuple[str, ...]
    dtypes: tuple[str, ...]
    seed: int = 0
    sweep: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    worst: int = 10
    samples: int = 400
    max_precision: int = MAX_PRECISION
    description: str = ""
    path: str = ""

    def spec(self, dtype: str, nargs: int) -> SweepSpec:
        """The sweep sizes for one dtype and number of arguments: the base ``[sweep]``,
        then ``argsN``, then the dtype's table, then ``dtype.argsN``, later winning."""
        merged: dict[str, Any] = {}
        for layer in ("", f"args{nargs}", dtype, f"{dtype}.args{nargs}"):
            merged.update(self.sweep.get(layer, {}))
        return SweepSpec(**merged)

    def variants_of(self, case: Any) -> tuple[str, ...]:
        """The variants of ``case`` this plan runs, in the case's order."""
        return tuple(v for v in case.variants if self.variants is None or v in self.variants)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (for meta.json; :func:`plan_from_dict` reads it back)."""
        d = dataclasses.asdict(self)
        d["sweep"] = {k: dict(v) for k, v in self.sweep.items()}
        for k in ("cases", "transforms", "dtypes"):
            d[k] = list(d[k])
        d["variants"] = None if self.variants is None else list(self.variants)
        return d


def plan_from_dict(d: Mapping[str, Any]) -> Plan:
    """The plan recorded by :meth:`Plan.to_dict`."""
    return Plan(
        name=d["name"],
        cases=tuple(d["cases"]),
        variants=None if d.get("variants") is None else tuple(d["variants"]),
        transforms=tuple(d["transforms"]),
        dtypes=tuple(d["dtypes"]),
        seed=int(d.get("seed", 0)),
        sweep={k: dict(v) for k, v in d.get("sweep", {}).items()},
        worst=int(d.get("worst", 10)),
        samples=int(d.get("samples", 400)),
        max_precision=int(d.get("max_precision", MAX_PRECISION)),
        description=d.get("description", ""),
        path=d.get("path", ""),
    )


# --- finding -----------------------------------------------------------------------


def packaged_dir() -> Path:
    """The folder of the packaged plans."""
    return Path(str(resources.files("rulelab") / "plans"))


def packaged_plans() -> list[str]:
    """Names of the packaged plans."""
    return sorted(p.stem for p in packaged_dir().glob("*.toml"))


def find_plan(ref: str | Path) -> Path:
    """The plan file ``ref`` names: a path to a file, or the name of a packaged plan
    (``quick``, ``default``, ``exhaustive``)."""
    path = Path(ref)
    if path.is_file():
        return path
    name = str(ref)
    candidate = packaged_dir() / f"{name.removesuffix('.toml')}.toml"
    if "/" not in name and candidate.is_file():
        return candidate
    raise PlanError(
        f"no plan {name!r}: it is not a file, and not a packaged plan; packaged plans: "
        f"{', '.join(packaged_plans())} (or give the path of a .toml file)"
    )


def load_plan(ref: str | Path) -> Plan:
    """Find, read and validate a plan (cases are checked against the registry, so
    register a user's cases before loading a plan that names them)."""
    path = find_plan(ref)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: cannot read the plan ({exc})") from None
    return parse_plan(text, str(path), name=path.stem)


# --- locating mistakes in the text -------------------------------------------------------


def _header(line: str) -> str | None:
    m = re.match(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$", line)
    if not m:
        return None
    return ".".join(part.strip().strip("\"'") for part in m.group(1).split("."))


def _assigns(line: str, key: str | None = None) -> bool:
    pat = r"[\"']?[A-Za-z0-9_.\-\"' ]+?[\"']?" if key is None else rf"[\"']?{re.escape(key)}[\"']?"
    return re.match(rf"^\s*{pat}\s*=", line) is not None


def locate(text: str, key: str, value: str | None = None, table: str = "") -> int | None:
    """1-based line of ``key`` in ``table`` (``""`` top level, ``"sweep.float32"``), or of
    ``value`` (a string) within that key's value; None when not found."""
    lines = text.splitlines()
    current = ""
    start = None
    for i, line in enumerate(lines):
        h = _header(line)
        if h is not None:
            current = h
            if (key == "" and h == table) or (table == "" and key and (h == key or h.startswith(key + "."))):
                return i + 1  # the table itself (or a key of the top level that is a table)
            continue
        if current == table and key and _assigns(line, key):
            start = i
            break
    if start is None:  # dotted keys, inline tables: settle for the first mention
        for i, line in enumerate(lines):
            if key and re.search(rf"(^|[\s.{{,])[\"']?{re.escape(key)}[\"']?\s*=", line):
                start = i
                break
    if start is None:
        return None
    if value is None:
        return start + 1
    quoted = re.compile(rf"[\"']{re.escape(value)}[\"']")
    for j in range(start, len(lines)):
        if j > start and (_header(lines[j]) is not None or _assigns(lines[j])):
            break
        if quoted.search(lines[j]):
            return j + 1
    return start + 1


# --- validation ----------------------------------------------------------------------------


class _Checker:
    """Raises PlanError with the file and line of the offending text."""

    def __init__(self, text: str, path: str) -> None:
        self.text, self.path = text, path

    def fail(self, message: str, key: str = "", value: str | None = None, table: str = "") -> PlanError:
        line = locate(self.text, key, value, table) if (key or table) else None
        where = f"{self.path}:{line}" if line else self.path
        return PlanError(f"{where}: {message}")


def _names(
    chk: _Checker, raw: Any, key: str, valid: Sequence[str], what: str, allow_all: bool = True
) -> tuple[str, ...] | None:
    """A list of names from the plan, each checked against ``valid``; None for "all"."""
    if allow_all and raw == "all":
        return None
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        alt = '"all" or ' if allow_all else ""
        raise chk.fail(f"{key} must be {alt}a list of {what} names, got {raw!r}", key)
    if not raw:
        raise chk.fail(f"{key} is empty; valid {what}s: {', '.join(valid)}", key)
    for x in raw:
        if x not in valid:
            hint = CASE_HINT if what == "case" else ""
            raise chk.fail(f"unknown {what} {x!r} in {key}; valid {what}s: {', '.join(valid) or '(none)'}{hint}", key, x)
    return tuple(dict.fromkeys(raw))


def _int(chk: _Checker, raw: Any, key: str, table: str = "", minimum: int = 0) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
        where = f" in [{table}]" if table else ""
        raise chk.fail(f"{key}{where} must be an integer >= {minimum}, got {raw!r}", key, table=table)
    return raw


def _sweep(chk: _Checker, raw: Any) -> dict[str, dict[str, Any]]:
    """Validate the ``[sweep]`` table into layers of SweepSpec overrides."""
    if not isinstance(raw, dict):
        raise chk.fail(f"sweep must be a table of {', '.join(SWEEP_FIELDS)}, got {raw!r}", "sweep")
    layers: dict[str, dict[str, Any]] = {}
    valid_sub = f"a dtype table ([sweep.<dtype>] with dtype one of {', '.join(DTYPES)}) or [sweep.argsN] for cases of N arguments"

    def fields_of(table: dict[str, Any], name: str, allow_sub: bool, allow_args: bool) -> None:
        layer: dict[str, Any] = {}
        for k, v in table.items():
            if k in SWEEP_FIELDS:
                t = SWEEP_FIELDS[k]
                if t is bool:
                    if not isinstance(v, bool):
                        raise chk.fail(f"{k} in [{name}] must be true or false, got {v!r}", k, table=name)
                else:
                    _int(chk, v, k, name, minimum=1)
                layer[k] = v
            elif isinstance(v, dict) and allow_sub and k in DTYPES:
                fields_of(v, f"{name}.{k}", allow_sub=False, allow_args=True)
            elif isinstance(v, dict) and allow_args and _ARGS_LAYER.match(k):
                fields_of(v, f"{name}.{k}", allow_sub=False, allow_args=False)
            else:
                sub = f", or {valid_sub}" if allow_sub else (", or [..argsN]" if allow_args else "")
                kind = "table" if isinstance(v, dict) else "key"
                raise chk.fail(
                    f"unknown {kind} {k!r} in [{name}]; valid keys: {', '.join(SWEEP_FIELDS)}{sub}",
                    k if kind == "key" else "",
                    table=name if kind == "key" else f"{name}.{k}",
                )
        layers[name.removeprefix("sweep").removeprefix(".")] = layer

    fields_of(raw, "sweep", allow_sub=True, allow_args=True)
    return {k: v for k, v in layers.items() if v}


def parse_plan(text: str, path: str = "<plan>", name: str = "plan") -> Plan:
    """Validate plan ``text`` (TOML) read from ``path`` into a :class:`Plan`."""
    chk = _Checker(text, path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = m.group(1) if m else (str(max(1, len(text.splitlines()))) if "end of document" in str(exc) else None)
        where = f"{path}:{line}" if line else path
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        raise PlanError(f"{where}: not valid TOML: {msg}") from None
    if not raw:
        raise PlanError(
            f"{path}: the plan is empty; name at least what to run (e.g. cases = \"all\" and a [sweep] table), "
            f"or use a packaged plan ({', '.join(packaged_plans())})"
        )
    for k in raw:
        if k not in KEYS:
            raise chk.fail(f"unknown key {k!r}; valid keys: {', '.join(KEYS)}", k)

    known_cases = {c.name: c for c in registered_cases()}
    case_names = _names(chk, raw.get("cases", "all"), "cases", list(known_cases), "case")
    selected = list(known_cases) if case_names is None else list(case_names)
    all_variants = list(dict.fromkeys(v for c in selected for v in known_cases[c].variants))
    variants = _names(chk, raw.get("variants", "all"), "variants", all_variants, "variant")
    transforms = _names(chk, raw.get("transforms", "all"), "transforms", TRANSFORMS, "transform") or TRANSFORMS
    dtypes = _names(chk, raw.get("dtypes", ["float32", "float16", "bfloat16"]), "dtypes", DTYPES, "dtype", allow_all=False)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise chk.fail(f"description must be a string, got {description!r}", "description")
    return Plan(
        name=name,
        cases=tuple(selected),
        variants=variants,
        transforms=tuple(transforms),
        dtypes=tuple(dtypes or ()),
        seed=_int(chk, raw.get("seed", 0), "seed"),
        sweep=_sweep(chk, raw.get("sweep", {})),
        worst=_int(chk, raw.get("worst", 10), "worst", minimum=1),
        samples=_int(chk, raw.get("samples", 400), "samples", minimum=1),
        max_precision=_int(chk, raw.get("max_precision", MAX_PRECISION), "max_precision", minimum=START_PRECISIONS[-1]),
        description=description,
        path=path,
    )


def _split(values: Iterable[str]) -> list[str]:
    """Names given on the command line, space- or comma-separated."""
    return [v for item in values for v in item.split(",") if v]


def with_overrides(
    plan: Plan,
    cases: Iterable[str] | None = None,
    variants: Iterable[str] | None = None,
    transforms: Iterable[str] | None = None,
    dtypes: Iterable[str] | None = None,
) -> Plan:
    """``plan`` narrowed or changed by command-line options (``--cases`` …), each name
    checked like the plan's own."""
    known_cases = {c.name: c for c in registered_cases()}

    def check(values: Iterable[str], valid: Sequence[str], option: str, what: str) -> tuple[str, ...]:
        names = _split(values)
        if not names:
            raise PlanError(f"{option} needs at least one {what} name; valid {what}s: {', '.join(valid)}")
        for n in names:
            if n not in valid:
                hint = CASE_HINT if what == "case" else ""
                raise PlanError(f"{option}: unknown {what} {n!r}; valid {what}s: {', '.join(valid) or '(none)'}{hint}")
        return tuple(dict.fromkeys(names))

    changes: dict[str, Any] = {}
    if cases is not None:
        changes["cases"] = check(cases, list(known_cases), "--cases", "case")
    selected = changes.get("cases", plan.cases)
    if variants is not None:
        valid = list(dict.fromkeys(v for c in selected for v in known_cases[c].variants))
        changes["variants"] = check(variants, valid, "--variants", "variant")
    if transforms is not None:
        changes["transforms"] = check(transforms, TRANSFORMS, "--transforms", "transform")
    if dtypes is not None:
        changes["dtypes"] = check(dtypes, DTYPES, "--dtypes", "dtype")
    return dataclasses.replace(plan, **changes)
