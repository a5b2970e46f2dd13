"""The accuracy ratchet: a baseline a person can read, and a gate that fails on regressions.

The pitfall of a fixed accuracy threshold in CI is that it is either too loose to catch
a rule that got worse or too tight for the rules known to be inaccurate. A ratchet
records what each result achieves now (its headline max dULP, its worst bucket, its
non-finite count, its status) and fails a later run only where a result got worse; a
result that improved is named, with the command that tightens the baseline.

A baseline is TOML, one line per result, so a reviewer sees in a diff which result's
bar moved. It names the backend it was measured on: a run from another backend is
refused rather than compared (a GPU flushing subnormals is not a regression).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rulelab import store
from rulelab.core.errors import UsageError
from rulelab.core.files import atomic_write
from rulelab.report.styles import nonfinite_count
from rulelab.store.vocabulary import Bucket, Status, worst_bucket

TOLERANCE = 0.25
"""A max dULP counts as larger (or smaller) only beyond this fraction of the baseline's,
and by more than 1 ULP: one ULP of run-to-run difference is never a regression."""

_KEY_FIELDS = ("case", "variant", "transform", "arg", "dtype")


class GateError(UsageError):
    """A baseline or run that cannot be compared (unreadable, another backend, not
    covering the baseline); the message is one line."""


@dataclass(frozen=True)
class Entry:
    """What one result achieves: status, headline max dULP, worst bucket, non-finite count."""

    status: str
    max_ulp: float
    bucket: str
    nonfinite: int


@dataclass(frozen=True)
class Baseline:
    """The backend and run a baseline was taken from, and its results by key."""

    backend: str
    run: str
    results: Mapping[str, Entry]


@dataclass(frozen=True)
class Gate:
    """A run against a baseline: the results that got worse and those that improved, in words."""

    worse: tuple[str, ...]
    better: tuple[str, ...]


def result_key(row: Mapping[str, Any]) -> str:
    """``case variant transform arg dtype`` (arg empty for the value)."""
    return " ".join(str(row[k]) for k in _KEY_FIELDS if k != "arg" or row[k])


def entries(summary: pd.DataFrame) -> dict[str, Entry]:
    """Each summary row as a baseline entry."""
    out = {}
    for r in summary.to_dict("records"):
        ok = r["status"] == Status.OK
        nonfinite = nonfinite_count(r) if ok else 0
        out[result_key(r)] = Entry(str(r["status"]), float(r["max_ulp"]) if ok else math.nan, worst_bucket(r).column if ok else "", nonfinite)
    return out


def _backend(summary: pd.DataFrame, run: Path) -> str:
    backends = sorted(set(summary["backend"]))
    if len(backends) != 1:
        raise GateError(f"run {run.name} holds results of {len(backends)} backends ({', '.join(backends) or 'none'}); a baseline is of one")
    return backends[0]


def _toml_float(v: float) -> str:
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(float(v))


def baseline_text(run: Path) -> str:
    """The baseline TOML of a complete run."""
    summary = store.load_table(run, "summary")
    lines = [
        "# rulelab accuracy baseline: what each result achieves, one line per result (case variant transform arg dtype).",
        "# max_ulp: the headline max dULP; bucket: the worst class with points (exact, ulp_1, ulp_2_4, ulp_5_1024, ulp_gt_1024,",
        "# wrong_nonfinite, unexpected_finite, both_undefined, unsettled); nonfinite: points non-finite where the reference is",
        "# finite, or finite where it is not; status: ok, unsupported or error.",
        "# `rulelab gate --baseline FILE` fails a run where a result does worse: a worse bucket, a max dULP larger by more than",
        f"# {TOLERANCE:.0%} (and 1 ULP), more non-finite points, a new error or unsupported transform, or a result missing.",
        "# Edit a line to demand more of a result; take a new baseline when results improve.",
        "",
        "[baseline]",
        f'backend = "{_backend(summary, run)}"',
        f'run = "{run.name}"',
        "",
        "[results]",
    ]
    for key, e in sorted(entries(summary).items()):
        lines.append(f'"{key}" = {{ status = "{e.status}", max_ulp = {_toml_float(e.max_ulp)}, bucket = "{e.bucket}", nonfinite = {e.nonfinite} }}')
    return "\n".join(lines) + "\n"


def write_baseline(run: Path, out: str | Path) -> Path:
    """Write the baseline of ``run`` to ``out`` (atomically)."""
    out = Path(out)
    atomic_write(out, baseline_text(run).encode())
    return out


def load_baseline(path: str | Path) -> Baseline:
    """Read a baseline; anything malformed is refused in one line naming the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise GateError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GateError(f"baseline {path} is not valid TOML: {exc}") from None
    head, results = data.get("baseline"), data.get("results")
    if not isinstance(head, dict) or not isinstance(head.get("backend"), str) or not isinstance(results, dict):
        raise GateError(f"baseline {path} lacks its [baseline] backend or its [results] table; write one with rulelab baseline RUN -o {path}")
    out = {}
    known = {b.column for b in Bucket} | {""}
    for key, e in results.items():
        try:
            entry = Entry(str(e["status"]), float(e["max_ulp"]), str(e.get("bucket", "")), int(e.get("nonfinite", 0)))
        except (TypeError, KeyError, ValueError) as exc:
            raise GateError(f"baseline {path}: result {key!r} needs status and max_ulp (and bucket, nonfinite): {exc}") from None
        if entry.status not in {s.value for s in Status} or entry.bucket not in known:
            raise GateError(f"baseline {path}: result {key!r} has status {entry.status!r} / bucket {entry.bucket!r}; "
                            f"statuses: ok, unsupported, error; buckets: {', '.join(b.column for b in Bucket)}")
        out[key] = entry
    return Baseline(head["backend"], str(head.get("run", "")), out)


def gate(baseline: Baseline, run: Path, tolerance: float = TOLERANCE) -> Gate:
    """Compare a complete run with a baseline. Refuses a run of another backend, or one
    that did not sweep some baseline result's case, transform and dtype at all."""
    summary = store.load_table(run, "summary")
    backend = _backend(summary, run)
    if backend != baseline.backend:
        raise GateError(f"the baseline was measured on {baseline.backend}, run {run.name} on {backend}: compare runs of one backend")
    now = entries(summary)
    swept = {(r["case"], r["transform"], r["dtype"]) for r in summary.to_dict("records")}
    uncovered = [k for k in baseline.results if k not in now and _coarse(k) not in swept]
    if uncovered:
        raise GateError(f"run {run.name} does not cover {len(uncovered)} of the baseline's {len(baseline.results)} results "
                        f"(e.g. {uncovered[0]}): sweep the baseline's plan")
    worse, better = [], []
    for key, old in sorted(baseline.results.items()):
        new = now.get(key)
        if new is None:
            worse.append(f"{key}: missing from the run")
            continue
        w, b = _changes(old, new, tolerance)
        worse += [f"{key}: {x}" for x in w]
        better += [f"{key}: {x}" for x in b]
    return Gate(tuple(worse), tuple(better))


def _coarse(key: str) -> tuple[str, str, str]:
    parts = key.split(" ")
    return parts[0], parts[2], parts[-1]


def _severity(e: Entry) -> int:
    return Bucket[e.bucket.upper()].severity if e.bucket else 0


def _changes(old: Entry, new: Entry, tolerance: float) -> tuple[list[str], list[str]]:
    if old.status != new.status:
        change = f"{Status(old.status).label} -> {Status(new.status).label}"
        return ([change], []) if new.status != Status.OK else ([], [change])
    if new.status != Status.OK:
        return [], []
    worse, better = [], []
    if _severity(new) > _severity(old):
        worse.append(f"worst bucket {_label(old)} -> {_label(new)}")
    elif _severity(new) < _severity(old):
        better.append(f"worst bucket {_label(old)} -> {_label(new)}")
    margin = max(1.0, tolerance * old.max_ulp) if math.isfinite(old.max_ulp) else 0.0
    if _larger(new.max_ulp, old.max_ulp, margin):
        worse.append(f"max {_ulp(old.max_ulp)} -> {_ulp(new.max_ulp)} ULP")
    elif _larger(old.max_ulp, new.max_ulp, margin):
        better.append(f"max {_ulp(old.max_ulp)} -> {_ulp(new.max_ulp)} ULP")
    if new.nonfinite > old.nonfinite:
        worse.append(f"non-finite points {old.nonfinite} -> {new.nonfinite}")
    elif new.nonfinite < old.nonfinite:
        better.append(f"non-finite points {old.nonfinite} -> {new.nonfinite}")
    return worse, better


def _larger(a: float, b: float, margin: float) -> bool:
    return not (math.isnan(a) or math.isnan(b)) and a > b + margin


def _label(e: Entry) -> str:
    return Bucket[e.bucket.upper()].short if e.bucket else "none"


def _ulp(v: float) -> str:
    return "inf" if math.isinf(v) else "NaN" if math.isnan(v) else f"{v:.3g}"


def gate_lines(result: Gate, baseline_path: str | Path, run: Path, results: str | Path) -> list[str]:
    """What ``rulelab gate`` prints."""
    out = [f"rulelab gate: run {run.name} against {baseline_path}"]
    if result.worse:
        out.append(f"{len(result.worse)} result(s) got worse:")
        out += [f"  {w}" for w in result.worse]
    if result.better:
        out.append(f"{len(result.better)} result(s) improved:")
        out += [f"  {b}" for b in result.better]
        out.append(f"update the baseline with: rulelab baseline {run.name} --results {results} -o {baseline_path}")
    if not result.worse and not result.better:
        out.append("every result is as good as the baseline")
    return out
