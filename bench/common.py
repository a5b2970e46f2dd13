"""What the suites share: parameter lists, the full and reduced products, skips, and the
generation of one benchmark class per catalog case.

Parameters are plain strings and ints so asv shows them as they are. A combination that
cannot run here raises ``NotImplementedError`` in ``setup``, which asv records as skipped,
never failed: a backend this machine lacks, or a transform JAX refuses for the variant
(forward mode through ``custom_vjp``, reverse mode through ``while_loop``). A variant that
fails for any other reason fails the benchmark, as it should.

Nothing here starts a JAX backend at import: asv's forkserver imports the suites once and
forks a process per benchmark, and a started backend does not survive a fork.
"""

from __future__ import annotations

import contextlib
import itertools
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rulelab

try:  # rulelab's layer folders
    from rulelab.core.errors import first_line
    from rulelab.jaxrun import cost
    from rulelab.jaxrun.evaluate import is_unsupported
    from rulelab.model.case import TRANSFORMS, Case
except ImportError:  # a rulelab from before them: asv measures earlier commits with these same benchmarks
    from rulelab.case import TRANSFORMS, Case
    from rulelab.evaluate import first_line, is_unsupported

    from rulelab import cost

# Raised in a benchmark's body (not its setup) to skip that one combination.
try:  # asv installs its runner in every environment it benchmarks in
    from asv_runner.benchmarks.mark import SkipNotImplemented as Skip
except ImportError:  # pragma: no cover - imported outside asv
    Skip = NotImplementedError

ALL_BACKENDS = ("cpu", "gpu", "tpu")


def installed_backends() -> list[str]:
    """The backends this machine can have, found without starting one (a started backend
    does not survive asv's fork): cpu always, gpu where a CUDA or ROCm plugin for JAX is
    installed, tpu where libtpu is. ``RULELAB_BENCH_BACKENDS`` (comma-separated) says
    otherwise. A backend installed but without a device is still skipped in ``setup``.

    Why not every backend everywhere: asv runs each parameter combination in a process
    of its own (about 50 ms even when it only skips), and two absent backends made two
    thirds of a run's processes. asv matches results across commits and machines by
    parameter values, not positions, so a machine's results line up with another's on
    the backends both have."""
    import importlib.metadata
    import importlib.util
    import os

    named = os.environ.get("RULELAB_BENCH_BACKENDS", "").strip()
    if named:
        chosen = [b.strip() for b in named.split(",") if b.strip()]
        unknown = sorted(set(chosen) - set(ALL_BACKENDS))
        if unknown:
            raise ValueError(f"RULELAB_BENCH_BACKENDS names {', '.join(unknown)}; known: {', '.join(ALL_BACKENDS)}")
        return [b for b in ALL_BACKENDS if b in chosen]
    plugins = " ".join(f"{ep.name} {ep.value}" for ep in importlib.metadata.entry_points(group="jax_plugins")).lower()
    found = ["cpu"]
    if "cuda" in plugins or "rocm" in plugins:
        found.append("gpu")
    if importlib.util.find_spec("libtpu") is not None or "tpu" in plugins:
        found.append("tpu")
    return found


BACKENDS = installed_backends()
"""The backend parameter of every suite (:func:`installed_backends`)."""

SMALL, LARGE = 16, 2**16
"""Batch sizes: at SMALL dispatch dominates, at LARGE throughput does."""

DTYPES = ["float32", "bfloat16"]
SIZES = [SMALL, LARGE]

KEY_CASES = ("softplus", "newton_sqrt", "stable_sqrt")
"""Cases benchmarked over the full product; the others over :data:`REDUCED`."""

STEPS = [2, 4, 8, 16, 32, 64]
"""Iteration counts for iterative cases (``Case.with_steps``)."""

TRACK_SIZE = 1024
"""Batch size of the compile-time, op-count and memory tracks."""


@dataclass(frozen=True)
class Product:
    """Which transforms, dtypes and sizes a case is timed over."""

    transforms: tuple[str, ...]
    dtypes: tuple[str, ...]
    sizes: tuple[int, ...]


FULL = Product(tuple(TRANSFORMS), tuple(DTYPES), tuple(SIZES))
REDUCED = Product(("value", "grad"), ("float32",), (LARGE,))


def product(case: Case) -> Product:
    """:data:`FULL` for the key cases, :data:`REDUCED` for the rest."""
    return FULL if case.name in KEY_CASES else REDUCED


def derivative_args(case: Case) -> list[str]:
    """Arguments the accuracy track differentiates in: all of them for a key case, the
    first for the rest."""
    return list(case.args) if case.name in KEY_CASES else list(case.args[:1])


def catalog() -> list[Case]:
    """Every registered case (the catalog's, and any a plugin registered on import)."""
    return rulelab.cases()


def iterative(cases: list[Case]) -> list[Case]:
    """The cases with a step count."""
    return [c for c in cases if c.steps is not None]


def step_variants(case: Case) -> list[str]:
    """The variants a step count applies to."""
    return list(case.with_steps(case.default_steps))


def require_backend(backend: str) -> None:
    """Skip (NotImplementedError) unless ``backend`` is present."""
    import jax

    try:
        jax.devices(backend)
    except RuntimeError:
        raise NotImplementedError(f"backend {backend!r} is not present") from None


@contextlib.contextmanager
def unsupported_skips() -> Iterator[None]:
    """Turn JAX's refusal of a transform (``evaluate.is_unsupported``) raised inside the
    block into a skip (NotImplementedError); any other error passes through."""
    try:
        yield
    except NotImplementedError:
        raise
    except Exception as exc:
        if is_unsupported(exc):
            raise NotImplementedError(first_line(exc)) from None
        raise


def target(
    case: str,
    variant: str,
    transform: str,
    dtype: str,
    size: int,
    backend: str,
    *,
    arg: str | None = None,
    steps: int | None = None,
) -> cost.Target:
    """The :class:`rulelab.jaxrun.cost.Target` of one parameter combination, or a skip if its
    backend is absent. Whether JAX accepts the transform shows when it is compiled:
    compile inside :func:`unsupported_skips`."""
    require_backend(backend)
    return cost.target(case, variant, transform, arg=arg, dtype=dtype, size=size, backend=backend, steps=steps)


def compiled_call(t: cost.Target) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """The target's compiled program (:func:`rulelab.jaxrun.cost.compiled`, what ``rulelab
    study`` times) and inputs, run once (so a timing loop measures the steady state), or
    a skip if JAX refuses the transform."""
    import jax

    with unsupported_skips():
        fn = cost.compiled(t)
        args = cost.device_inputs(t)
        jax.block_until_ready(fn(*args))
    return fn, args


def per_case(
    namespace: dict[str, Any],
    template: type,
    cases: list[Case],
    params: Callable[[Case], tuple[list[list[Any]], list[str]]],
    suffix: str = "",
) -> list[type]:
    """Add to ``namespace`` (a module's globals) one subclass of ``template`` per case,
    named after the case (plus ``suffix``), with ``case`` set to the case's name and asv
    ``params`` / ``param_names`` from ``params(case)``; return the classes. One class per
    case gives each case its own variant list and its own line in asv's benchmark list."""
    module = namespace["__name__"]
    made = []
    for case in cases:
        name = case.name + suffix
        if name in namespace:
            raise RuntimeError(f"{module}: case {case.name!r} clashes with the name {name!r} already in the module")
        values, names = params(case)
        doc = f"{case.name}: {case.formula}. {template.__doc__ or ''}"
        body = {"case": case.name, "params": values, "param_names": names, "__module__": module, "__qualname__": name, "__doc__": doc}
        namespace[name] = type(name, (template,), body)
        made.append(namespace[name])
    return made


# -- tracks ----------------------------------------------------------------------------


def measure(t: cost.Target, keep: bool = False) -> dict[str, Any]:
    """Every tracked number of ``t`` from one compilation; a string where a number does
    not apply (it becomes the skip reason). With ``keep``, the executable is also saved
    in the current folder (asv's ``setup_cache`` folder, where its benchmarks run) under
    ``executable``, for :func:`loaded_call`."""
    b = cost.build(t)
    mem = cost.memory(b.executable)
    kept = {"executable": save_executable(b.executable)} if keep else {}
    return {
        **kept,
        "compile_ms": b.compile_ms,
        "jaxpr_eqns": cost.count_eqns(b.jaxpr),
        "hlo_ops": cost.hlo_op_count(b.executable),
        "temp_bytes": mem.temp_bytes if mem else "the backend reports no memory analysis",
        "residual_bytes": cost.residual_bytes(t) if t.transform == "grad" else "residual bytes are tracked for grad only",
    }


def cached(cache: dict[tuple[Any, ...], Any], key: tuple[Any, ...]) -> Any:
    """A combination's entry in a ``setup_cache``: a skip (NotImplementedError) where
    the entry is a reason (a string), the error where it is one, else the entry."""
    entry = cache.get(key, "not measured: the suite changed since the cache was made")
    if isinstance(entry, str):
        raise NotImplementedError(entry)
    if isinstance(entry, Exception):
        raise entry
    return entry


def save_executable(executable: Any) -> str:
    """Serialize a compiled program into a new file in the current folder; its name."""
    import uuid

    from jax.experimental.serialize_executable import serialize

    name = f"executable-{uuid.uuid4().hex}.pkl"
    Path(name).write_bytes(pickle.dumps(serialize(executable)))
    return name


def loaded_call(entry: dict[str, Any], t: cost.Target) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """:func:`compiled_call` of a program :func:`measure` kept: loaded, not compiled
    again (a few ms instead of the compile)."""
    import jax
    from jax.experimental.serialize_executable import deserialize_and_load

    fn = deserialize_and_load(*pickle.loads(Path(entry["executable"]).read_bytes()), backend=t.backend)
    args = cost.device_inputs(t)
    jax.block_until_ready(fn(*args))
    return fn, args


class _Measured:
    """Combinations measured once per commit and environment, in a ``setup_cache``.

    asv keys a ``setup_cache`` by where its source is, so every class that inherits one
    ``setup_cache`` shares one cache: it calls :meth:`measure_family`, which measures
    every combination of every case in ``family`` once. Each combination's ``setup``
    reads its entry from that. A subclass says which target a combination is
    (``_target``) and whether the executables are kept for timing (``keep``)."""

    case: str
    params: list[list[Any]]
    family: list[type] = []
    timeout = 1800.0
    keep = False

    def _target(self, *params: Any) -> cost.Target:
        raise NotImplementedError

    def measure_family(self) -> dict[tuple[Any, ...], Any]:
        found: dict[tuple[Any, ...], Any] = {}
        for cls in self.family:
            bench = cls()
            for key in itertools.product(*cls.params):
                try:
                    with unsupported_skips():
                        found[(cls.case, *key)] = measure(bench._target(*key), keep=self.keep)
                except NotImplementedError as exc:  # absent backend or refused transform
                    found[(cls.case, *key)] = str(exc)
                except Exception as exc:  # noqa: BLE001 - kept, and raised by that combination's setup
                    found[(cls.case, *key)] = RuntimeError(f"{cls.case} {key}: {first_line(exc)}")
        return found

    def setup(self, cache: dict[tuple[Any, ...], Any], *params: Any) -> None:
        self.entry = cached(cache, (self.case, *params))


class _Tracks(_Measured):
    """Compile time, op counts and memory of the jit-compiled, vectorised transform."""

    def _metric(self, name: str) -> float:
        value = self.entry[name]
        if isinstance(value, str):  # not measured for this combination
            raise Skip(value)
        return value

    def track_compile_ms(self, cache: dict, *params: Any) -> float:
        return self._metric("compile_ms")

    track_compile_ms.unit = "ms"

    def track_jaxpr_eqns(self, cache: dict, *params: Any) -> float:
        return self._metric("jaxpr_eqns")

    track_jaxpr_eqns.unit = "equations"

    def track_hlo_ops(self, cache: dict, *params: Any) -> float:
        return self._metric("hlo_ops")

    track_hlo_ops.unit = "instructions"

    def track_temp_bytes(self, cache: dict, *params: Any) -> float:
        return self._metric("temp_bytes")

    track_temp_bytes.unit = "bytes"

    def track_residual_bytes(self, cache: dict, *params: Any) -> float:
        return self._metric("residual_bytes")

    track_residual_bytes.unit = "bytes"
