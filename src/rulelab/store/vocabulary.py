"""The results vocabulary: every word a result is written in, spelled out once.

The pitfall is a second copy. A bucket name, a table column or a file of the run folder
spelled out again elsewhere (a report's own schema, a label table, a hand-built test
store) drifts from this one without a word, and a renamed column then reads as
missing, not as an error. So every other module imports these names: the buckets as
an enumeration (name, labels, severity, order), the result statuses, the
columns of every table, and the run folder's layout.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import numpy as np

SCHEMA_VERSION = 4
"""Version of the layout and columns below; raised whenever either changes."""


ULP_UPPER = (0, 1, 4, 1024)
"""The largest dULP of each scored bucket but the last (exact, 1, 2-4, 5-1024); above
1024 is the last. ``Bucket.of_ulp`` and every count by dULP follow these edges."""


class Bucket(enum.IntEnum):
    """The class of one point's error, best first. ``column`` is its summary column,
    ``label`` and ``short`` what tables show, ``severity`` how bad a cell with such
    points is (higher worse; unscored classes rank below every scored one). Colours are
    the report's (:mod:`rulelab.report.styles`)."""

    label: str
    short: str
    severity: int

    def __new__(cls, code: int, label: str, short: str, severity: int) -> Bucket:
        obj = int.__new__(cls, code)
        obj._value_ = code
        obj.label, obj.short, obj.severity = label, short, severity
        return obj

    EXACT = (0, "exact (0 ULP)", "exact", 4)
    ULP_1 = (1, "1 ULP", "1", 5)
    ULP_2_4 = (2, "2-4 ULP", "2-4", 6)
    ULP_5_1024 = (3, "5-1024 ULP", "5-1024", 7)
    ULP_GT_1024 = (4, "> 1024 ULP", ">1024", 8)
    WRONG_NONFINITE = (5, "wrong non-finite", "wrong non-finite", 10)
    UNEXPECTED_FINITE = (6, "finite where undefined", "finite where undefined", 9)
    BOTH_UNDEFINED = (7, "undefined (both NaN)", "both undefined", 2)
    UNSETTLED = (8, "reference unsettled (not scored)", "unsettled", 3)

    @property
    def column(self) -> str:
        """The summary column counting this bucket's points (and its name in tables)."""
        return self.name.lower()

    @property
    def scored(self) -> bool:
        """Whether points of this bucket have a dULP (both results comparable)."""
        return self <= Bucket.ULP_GT_1024

    @property
    def nonfinite(self) -> bool:
        """Whether this bucket is a non-finite disagreement."""
        return self in (Bucket.WRONG_NONFINITE, Bucket.UNEXPECTED_FINITE)

    @classmethod
    def of_ulp(cls, dulp: Any) -> Any:
        """The scored bucket of a dULP count (elementwise on an array: the codes)."""
        codes = np.searchsorted(ULP_UPPER, dulp, side="left")
        return codes.astype(np.int8) if np.ndim(codes) else cls(int(codes))


def worst_bucket(row: Mapping[str, Any]) -> Bucket:
    """The most severe bucket with any points in ``row`` (bucket column -> count); exact
    when none."""
    present = [b for b in Bucket if row.get(b.column, 0)]
    return max(present, key=lambda b: b.severity, default=Bucket.EXACT)


class Status(enum.StrEnum):
    """What came of one result (a summary row): measured, refused by JAX, or failed; and,
    for a report cell, a result the runs do not have. ``label`` is what tables show,
    ``severity`` ranks it among the buckets' (higher worse). A member equals its value
    (``Status.OK == "ok"``), the string the tables store."""

    label: str
    severity: int

    def __new__(cls, value: str, label: str, severity: int) -> Status:
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.label, obj.severity = label, severity
        return obj

    OK = ("ok", "ok", 0)
    UNSUPPORTED = ("unsupported", "unsupported", 1)
    ERROR = ("error", "error", 11)
    MISSING = ("missing", "not run", 0)


# --- tables --------------------------------------------------------------------------------

Columns = Mapping[str, tuple[str, str]]
"""Column name -> (pandas dtype, meaning)."""

KEYS: Columns = MappingProxyType(
    {
        "case": ("string", "case name"),
        "variant": ("string", "variant name"),
        "transform": ("string", "value | grad | jvp | grad2"),
        "arg": ("string", "the argument differentiated; '' for value"),
        "dtype": ("string", "float32 | float16 | bfloat16 | float64"),
        "backend": ("string", "platform the variant ran on (cpu, gpu, tpu)"),
    }
)
"""Key columns, shared by every table: one *result* is one case x variant x transform x
differentiated argument x dtype x backend."""

_BUCKET_MEANING = {
    Bucket.EXACT: "points with dULP 0",
    Bucket.ULP_1: "points with dULP 1",
    Bucket.ULP_2_4: "points with dULP 2 to 4",
    Bucket.ULP_5_1024: "points with dULP 5 to 2^10",
    Bucket.ULP_GT_1024: "points with dULP above 2^10",
    Bucket.WRONG_NONFINITE: "non-finite result where the reference is finite (or another non-finite)",
    Bucket.UNEXPECTED_FINITE: "finite result where the reference is undefined or infinite",
    Bucket.BOTH_UNDEFINED: "NaN result where the reference is undefined too",
    Bucket.UNSETTLED: "points whose reference never settled up to the precision cap (not scored)",
}

SUMMARY: Columns = MappingProxyType(
    {
        **KEYS,
        "status": ("string", "ok | unsupported (JAX refused the transform) | error (the variant failed)"),
        "message": ("string", "why a result is unsupported or an error; '' when ok"),
        "n_points": ("Int64", "points in the sweep"),
        "max_ulp": ("float64", "headline: largest dULP over comparable points, flush-aware where the backend flushes the dtype"),
        "median_ulp": ("float64", "headline: median dULP over comparable points, flush-aware"),
        "max_ulp_ieee": ("float64", "largest dULP against the IEEE reference alone (no allowance for the backend's flushing)"),
        "flushed": ("Int64", "points where the flush-aware reference is strictly closer: the backend's flushing, not the rule"),
        "max_frac_ulp": ("float64", "largest |computed - exact| / ulp(exact); 0.5 = correctly rounded"),
        **{b.column: ("Int64", f"headline: {_BUCKET_MEANING[b]}") for b in Bucket},
        "wrong_nan": ("Int64", "of wrong_nonfinite, how many results are NaN"),
        "wrong_inf": ("Int64", "of wrong_nonfinite, how many results are infinite"),
        "notes": ("string", "evaluation notes, '; '-joined (e.g. a dtype the variant changed)"),
        "conventions": ("string", "notes of the case's conventions for this derivative, '; '-joined"),
        "compile_s": ("float64", "seconds to lower and compile (varies between runs)"),
        "run_s": ("float64", "seconds to run the compiled function once (varies between runs)"),
    }
)
"""summary.parquet: one row per result."""

BINNED: Columns = MappingProxyType(
    {
        **KEYS,
        "binade_of": ("string", "the argument whose binade groups the points: the differentiated one, else the first"),
        "sign": ("int64", "sign of that argument: -1 or 1 (-0 counts as -1)"),
        "binade": ("float64", "floor(log2|x|) of that argument; -inf for zero, inf for infinity"),
        "count": ("int64", "points in this binade and sign"),
        "max_ulp": ("float64", "headline: largest dULP over its comparable points (NaN if none)"),
        "median_ulp": ("float64", "headline: median dULP over its comparable points"),
        "max_ulp_ieee": ("float64", "largest dULP against the IEEE reference alone"),
        "nonfinite": ("int64", "points in the wrong_nonfinite or unexpected_finite classes (headline)"),
        "flushed": ("int64", "points the backend's flushing explains"),
        "unsettled": ("int64", "points whose reference never settled (not scored)"),
    }
)
"""binned.parquet: one row per result, sign and binade."""

BINNED2: Columns = MappingProxyType(
    {
        **KEYS,
        "sign0": ("int64", "sign of the first argument: -1 or 1 (-0 counts as -1)"),
        "binade0": ("float64", "floor(log2|x|) of the first argument; -inf for zero, inf for infinity"),
        "sign1": ("int64", "sign of the second argument"),
        "binade1": ("float64", "floor(log2|y|) of the second argument"),
        "count": ("int64", "points in this pair of binades and signs"),
        "max_ulp": ("float64", "headline: largest dULP over its comparable points (NaN if none)"),
        "max_ulp_ieee": ("float64", "largest dULP against the IEEE reference alone"),
        "flushed": ("int64", "points the backend's flushing explains"),
        **{b.column: ("int64", f"headline: {_BUCKET_MEANING[b]}") for b in Bucket},
    }
)
"""binned2.parquet: for a case of two arguments, one row per result and pair of (sign,
binade) of its arguments: the error map over both arguments (empty for other cases)."""

POINT_INPUTS = ("in0", "in1", "in2")
"""Input columns of point tables: argument positions 0, 1, 2 as float64 (NaN where the
case has fewer arguments). A case of more arguments adds in3, in4, …"""

_INPUTS: Columns = {c: ("float64", f"input {i} (float64; NaN if the case has fewer arguments)") for i, c in enumerate(POINT_INPUTS)}

WORST: Columns = MappingProxyType(
    {
        **KEYS,
        "rank": ("int64", "0 = worst"),
        **_INPUTS,
        "args": ("string", "the case's argument names, comma-joined, in input order"),
        "computed": ("float64", "what the variant returned"),
        "ref_hi": ("float64", "reference, high part of a double-double (NaN: undefined or unsettled)"),
        "ref_lo": ("float64", "reference, low part; where unsettled, the highest precision tried (bits)"),
        "dulp": ("float64", "headline dULP (inf for the non-finite classes), flush-aware"),
        "dulp_ieee": ("float64", "dULP against the IEEE reference alone"),
        "flushed": ("bool", "whether the backend's flushing explains this point"),
        "frac_ulp": ("float64", "fractional error against the unrounded reference"),
        "bucket": ("string", "error class: a Bucket column name"),
    }
)
"""worst.parquet: the worst inputs of each result, non-finite classes first, then the
points whose reference never settled."""

SAMPLES: Columns = MappingProxyType(
    {
        **KEYS,
        **_INPUTS,
        "computed": ("float64", "what the variant returned"),
        "ref_hi": ("float64", "reference (high part; NaN: undefined)"),
        "dulp": ("float64", "headline dULP (inf for the non-finite classes, NaN where both are undefined)"),
    }
)
"""samples.parquet: up to ``plan.samples`` points of each result spread evenly over its
sweep sorted by the ``binade_of`` argument, to plot the result against the reference."""

TABLES: Mapping[str, Columns] = MappingProxyType({"summary": SUMMARY, "binned": BINNED, "binned2": BINNED2, "worst": WORST, "samples": SAMPLES})
"""Every accuracy table of a run, by file stem."""

BLAME: Columns = MappingProxyType(
    {
        **KEYS,
        "rank": ("int64", "the input's rank among the result's worst (0 = worst)"),
        **_INPUTS,
        "primitive": ("string", "the blamed equation's primitive; empty where no equation loses more than 1 ULP, or the point is not localized"),
        "source": ("string", "file:line (function) of the blamed equation: the innermost frame of the variant's own code, else JAX's"),
        "line_text": ("string", "the text of that source line"),
        "jax_wrote": ("bool", "whether JAX wrote the equation (a rule of its own, e.g. a library function's derivative)"),
        "name_stack": ("string", "JAX's name stack of the equation (jvp, transpose …)"),
        "local_ulp": ("float64", "the equation's local error: the operation in the dtype on its exact inputs rounded, against its exact result "
                      "rounded, in ULPs (inf: a non-finite result where the exact one is finite)"),
        "label": ("string", "the cause: cancellation, overflow, underflow/flush, 0/0, inf - inf, inf * 0, domain, NaN, "
                  "inaccurate library function, rounding"),
        "computed": ("float64", "the variant's result as the equation-by-equation run computes it"),
        "exact_rounded": ("float64", "the exact result of the program, rounded to the dtype"),
        "note": ("string", "why the point is not localized, or where the equation-by-equation run differs from the sweep; else empty"),
    }
)
"""blame.parquet: for every result over 4 ULP or with wrong non-finite values, the
operation and source line that lose the digits at its worst inputs."""
BLAME_FILE = "blame.parquet"
"""In a run folder: the blame table (written at the end of every sweep)."""

TEXT_COLUMNS: frozenset[str] = frozenset(c for t in TABLES.values() for c, (dtype, _) in t.items() if dtype == "string")
"""Columns holding text (the rest hold numbers or flags)."""

TIMING_COLUMNS = ("compile_s", "run_s")
"""Columns that measure time and so differ between otherwise identical runs."""

# --- the run folder ----------------------------------------------------------------------

ACCURACY_DIR = "accuracy"
"""Under the results root: one folder per run."""
LATEST_FILE = "latest"
"""In ACCURACY_DIR: the id of the most recently completed run (text)."""
META_FILE = "meta.json"
"""In a run folder: plan, versions, backend facts, git commit, timings, status."""
PARTS_DIR = "parts"
"""In a run folder while it runs: one file per finished task."""
TIMINGS_FILE = "timings.parquet"
"""In a run folder after ``rulelab study``: the quick in-process timings."""
MEASURED_AT = "measured_at"
"""The timings' column saying when each was taken (UTC, ISO 8601): a timing is kept until
its variant's code, the versions or the backend change."""
RUNNING, STOPPED, COMPLETE = "running", "stopped", "complete"
RUN_STATUSES = (RUNNING, STOPPED, COMPLETE)
"""meta.json ``status``: a run being written, one that stopped part-way (``stopped``
says why; ``--resume`` continues it) and a finished one."""


SAMPLED_PHASES = ("sweeps", "references", "backend_init", "tasks", "assemble", "blame")
"""Wall-clock phases of a sampled sweep's session (meta.json ``phases``)."""
EXHAUSTIVE_PHASES = ("validation", "chunks", "aggregate", "blame")
"""Wall-clock phases of an exhaustive sweep's session (meta.json ``phases``)."""
TASK_SECONDS = ("compile", "evaluate", "metrics", "write")
"""Where the time inside a sampled sweep's tasks goes (meta.json ``task_seconds``):
compiling, evaluating and measuring summed over tasks and workers, and writing the
parts, which this process alone does."""
CACHE_RECORDS = {"result_cache": "groups", "blame_cache": "blamed results"}
"""A session record's keys for what the cache of measured results did (items, served,
checked, the difference found or None), and what their items are."""
FAST_TIER_RECORD = "fast_tier"
"""A sampled sweep's session record key for the fast reference tier's use: per reference
(``case/value``, ``case/d1_x`` …) the points it settled provisionally, with no mpmath."""
CHUNK_SECONDS = ("jax", "fast_reference", "rounding_test", "mpmath", "scoring", "aggregation")
"""Where the time inside an exhaustive sweep's chunks goes, summed over chunks
(meta.json ``task_seconds``)."""


@dataclass(frozen=True)
class RunMeta:
    """A run's meta.json, read and written only by the store (which adds and checks
    ``schema_version``). A new session is recorded with :func:`dataclasses.replace`."""

    run_id: str
    plan: Mapping[str, Any]
    started: str
    status: str = "running"
    plan_text: str | None = None
    modules: tuple[str, ...] = ()
    backend_requested: str | None = None
    n_tasks: int = 0
    versions: Mapping[str, Any] = field(default_factory=dict)
    git: Mapping[str, Any] | None = None
    host: Mapping[str, Any] | str | None = None
    ended: str | None = None
    backend: Mapping[str, Any] | None = None
    """The backend facts (``jaxrun.backend.facts``) of the first session: platform, device kind, jax/jaxlib,
    x64, subnormal flushing per dtype."""
    sessions: tuple[Mapping[str, Any], ...] = ()
    """One per start or resume: pid, backend facts, workers, tasks run, wall seconds per
    phase, seconds inside tasks per step."""
    phases: Mapping[str, float] = field(default_factory=dict)
    task_seconds: Mapping[str, float] = field(default_factory=dict)
    tasks: Mapping[str, float | None] = field(default_factory=dict)
    """"case/variant/transform/arg/dtype" -> wall seconds of that task."""
    counts: Mapping[str, int] = field(default_factory=dict)
    """Results per status."""
    stopped: Mapping[str, str] | None = None
    """Where status is stopped: when and why."""
    exhaustive: Mapping[str, Any] | None = None
    """For a sweep of every float32 input (``rulelab.runs.exhaustive``): how many inputs, each
    fast reference's validation (bound, points checked) and the points mpmath decided."""
    code: Mapping[str, str] = field(default_factory=dict)
    """"case/variant" and "case/reference" -> fingerprint of the code measured (what is
    reachable from it), so a resume can refuse to mix results of different code."""

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["modules"], out["sessions"] = list(self.modules), list(self.sessions)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunMeta:
        """From meta.json's content (``schema_version`` already checked); a key this
        rulelab does not know is an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"schema_version"})
        if unknown:
            raise ValueError(f"unknown meta.json keys {unknown}")
        values = {k: v for k, v in data.items() if k in known}
        values["modules"] = tuple(values.get("modules") or ())
        values["sessions"] = tuple(values.get("sessions") or ())
        return cls(**values)


def table_file(name: str) -> str:
    """The file of table ``name`` in a run folder."""
    return f"{name}.parquet"
