"""Where a sweep's variants run: which backend is there, the facts every run records about
it (the one place they are measured), the on-disk compilation cache, and float64 mode.

A sweep forks (reference workers, evaluation workers), and a process whose JAX backend
has started must not fork. So nothing here starts the backend of the calling process
unless asked to: availability and the default platform are probed in a forked child.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
from collections.abc import Iterator
from typing import Any

import numpy as np

from rulelab.core.cachedir import cache_dir
from rulelab.core.errors import UsageError, first_line
from rulelab.core.floats import fmt

BACKENDS = ("cpu", "gpu", "tpu")
"""Backends a sweep may be asked to run on (None: JAX's default)."""


class BackendError(UsageError):
    """The backend asked for is unknown or absent."""


def started() -> bool:
    """Whether this process's JAX backend has started (then forking is unsafe)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return True


def _probe(backend: str | None, conn: Any) -> None:
    try:
        import jax

        devices = jax.devices(backend) if backend else jax.devices()
        conn.send(("ok", devices[0].platform))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", first_line(exc)))
    finally:
        conn.close()


@functools.lru_cache(maxsize=None)
def probe(backend: str | None) -> tuple[bool, str]:
    """(available, platform or why not) for ``backend`` (None: JAX's default), found in a
    forked child when this process's backend has not started, else here; once per
    process (a sweep asks before its tasks and again before its blame phase)."""
    if started() or "fork" not in multiprocessing.get_all_start_methods():
        import jax

        try:
            devices = jax.devices(backend) if backend else jax.devices()
        except RuntimeError as exc:
            return False, first_line(exc)
        return True, devices[0].platform
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_probe, args=(backend, child), daemon=True)
    p.start()
    child.close()
    try:
        status, detail = parent.recv() if parent.poll(300) else ("error", "the probe did not answer in 300 s")
    except EOFError:
        status, detail = "error", "the probe process died"
    p.join(10)
    return status == "ok", detail


def check(backend: str | None) -> None:
    """Fail early (before any reference is computed) when a named backend is absent."""
    if backend is None or backend == "cpu":
        return
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} (or none for JAX's default)")
    ok, detail = probe(backend)
    if not ok:
        raise BackendError(f"backend {backend!r} is not available here ({detail}); run on cpu, or install the JAX plugin for {backend}")


def use_compilation_cache(enabled: bool) -> str | None:
    """Keep compiled XLA executables on disk (``$RULELAB_CACHE/jax``) so that a repeated
    sweep skips compilation; returns the folder (None when off). Leaves a folder the
    user configured alone."""
    import jax

    if not enabled:
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:
        return str(current)
    folder = cache_dir() / "jax"
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(folder)


@contextlib.contextmanager
def x64(enabled: bool) -> Iterator[None]:
    """``jax_enable_x64`` set to ``enabled`` inside the block, restored after."""
    import jax

    old = bool(jax.config.jax_enable_x64)
    if old != enabled:
        jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        if old != enabled:
            jax.config.update("jax_enable_x64", old)


def facts(backend: str | None, dtypes: tuple[str, ...]) -> dict[str, Any]:
    """:func:`backend_facts` for ``dtypes`` (starts the backend); float64's
    subnormal flushing is probed with x64 on, as float64 tasks run."""
    narrow = tuple(d for d in dtypes if d != "float64")
    out = backend_facts(backend, narrow)
    if "float64" in dtypes:
        with x64(True):
            out["flushes_subnormals"]["float64"] = flushes_subnormals("float64", backend)
        out["x64"] = "float64 tasks only"
    return out


@functools.lru_cache(maxsize=8)
def facts_here(backend: str | None, dtypes: tuple[str, ...]) -> dict[str, Any]:
    """:func:`facts` of this process, measured once (a worker's backend starts on its
    first call); every result a run keeps says which facts it was computed under."""
    return facts(backend, tuple(dtypes))


def device_for(backend: str | None) -> Any:
    """The first device of ``backend`` (None: the default backend)."""
    import jax

    return jax.devices(backend)[0] if backend else jax.devices()[0]


def flushes_subnormals(dtype: Any, backend: str | None = None) -> bool:
    """Whether the backend flushes ``dtype`` subnormals to zero: half the smallest normal
    is computed at run time from an argument, so XLA cannot fold it away."""
    import jax

    f = fmt(dtype)
    x = jax.device_put(np.array([f.smallest_normal], dtype=f.dtype), device_for(backend))
    out = np.asarray(jax.jit(lambda v: v * 0.5)(x)).astype(np.float64)
    return bool(out[0] == 0.0)


def backend_facts(backend: str | None = None, dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16")) -> dict[str, Any]:
    """What every result records about where it was computed: backend, device kind,
    versions, and per dtype whether subnormals are flushed to zero."""
    import jax
    import jaxlib

    device = device_for(backend)
    ftz = {}
    for d in dtypes:
        if d == "float64" and not jax.config.jax_enable_x64:
            continue
        ftz[d] = flushes_subnormals(d, backend)
    return {
        "backend": device.platform,
        "device_kind": device.device_kind,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "x64": bool(jax.config.jax_enable_x64),
        "flushes_subnormals": ftz,
    }
