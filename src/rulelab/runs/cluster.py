"""Running a sweep's work on a dask.distributed cluster (``--scheduler``).

The pitfalls, first. mpmath's working precision and JAX's ``jax_enable_x64`` flag are
per process, so two tasks in threads of one worker would corrupt each other's
references or dtypes: every task here holds a per-process lock, one at a time per worker
process (start workers with ``--nthreads 1`` and as many processes as cores). A worker
that cannot import the user's modules, or that runs other library versions or another
backend, would silently produce other numbers: each is checked before work starts, and
each result says which backend facts produced it, so a run never mixes workers whose
facts differ.

The client is the only writer: references come back and go into its cache, task rows
come back and become parts in its run folder, exactly as in a local run; a worker that
dies mid-task is simply rescheduled by Dask, and a killed client leaves a run that
``--resume`` finishes. Nothing here imports dask unless a scheduler is asked for.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rulelab.core.errors import UsageError, first_line
from rulelab.core.files import atomic_write

SCHEDULER_ENV = "RULELAB_SCHEDULER"
"""Environment variable naming the scheduler when ``--scheduler`` is not given."""
WORKER_CONFIG = {"distributed.worker.profile.enabled": False, "distributed.scheduler.worker-saturation": "inf"}
"""Dask settings for the cluster rulelab starts (``local:N``); recommended for others.
Dask's statistical profiler samples each worker's stack every 10 ms (mpmath's stacks
are deep and pure Python), and by default a worker is sent its next task only once it
reports the last one finished. Measured on two cores, with both left on the reference
phase took a third longer than the local process pool; with both off (and every
reference's tasks submitted at once), as long, within the machine's noise."""
LOCAL = "local:"
"""Prefix of ``local:N``: start a LocalCluster of N worker processes here."""
CONNECT_TIMEOUT_S = 30
WORKER_TIMEOUT_S = 120
"""How long to wait for the scheduler to answer, and for its first worker."""
PROBE_TIMEOUT_S = 10
"""How long a scheduler address is given to answer dask's handshake before a run starts."""


class ClusterError(UsageError):
    """The cluster cannot be used as asked (unreachable, no workers, workers that differ)."""


def scheduler_address(flag: str | None) -> str | None:
    """The scheduler to use: ``flag``, else ``$RULELAB_SCHEDULER``, else None (run here)."""
    return flag or os.environ.get(SCHEDULER_ENV) or None


def local_workers(address: str) -> int | None:
    """N of ``local:N`` (None for a scheduler address); ClusterError if N is not a positive integer."""
    if not address.startswith(LOCAL):
        return None
    text = address[len(LOCAL):]
    if not text.isdigit() or int(text) < 1:
        raise ClusterError(f"--scheduler {address}: give local:N with N worker processes, N >= 1 (e.g. local:{os.cpu_count() or 2})")
    return int(text)


def check(address: str) -> None:
    """Fail early (before a run folder exists) when ``address`` is malformed, when its
    scheduler does not answer, or when dask.distributed is not installed."""
    import importlib.util
    import socket
    from urllib.parse import urlsplit

    if importlib.util.find_spec("distributed") is None:
        raise ClusterError(f"--scheduler {address} needs dask.distributed: pip install -e '.[dask]'")
    if local_workers(address) is not None:
        return
    where = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = where.hostname, where.port
    except ValueError:
        host = port = None
    if where.scheme not in ("tcp", "tls") or not host or not port:
        raise ClusterError(f"--scheduler {address}: give tcp://HOST:PORT (a dask scheduler; it prints its address when it starts) or local:N")
    if where.scheme == "tcp":
        try:
            socket.create_connection((host, port), timeout=10).close()
        except OSError as exc:
            raise ClusterError(f"--scheduler {address}: no dask scheduler answers there ({exc.strerror or exc}); start one with: dask scheduler") from None
        other = not_a_scheduler(f"tcp://{host}:{port}")
        if other:
            raise ClusterError(f"--scheduler {address}: port {port} answers but is not a dask scheduler ({other}); "
                               "give the scheduler's address (it prints it when it starts), not its dashboard's")


def not_a_scheduler(address: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a dask scheduler answers at ``address`` (asked who it is), else what
    answered instead. Bounded by ``timeout``: a server of another protocol (a web
    server, the dashboard) may never answer dask's handshake, and a client would wait."""
    import asyncio
    import logging

    from distributed.comm import connect as dask_connect

    async def identity() -> Any:
        comm = await dask_connect(address, timeout=timeout)
        try:
            await comm.write({"op": "identity"})
            return await comm.read()
        finally:
            with contextlib.suppress(Exception):
                await comm.close()

    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its own account of the failed handshake is noise here
    try:
        reply = asyncio.run(asyncio.wait_for(identity(), timeout))
    except (asyncio.TimeoutError, TimeoutError):
        return f"nothing answered dask's handshake in {timeout:g} s"
    except Exception as exc:  # noqa: BLE001 - whatever the other end did
        return first_line(exc)
    finally:
        quiet.setLevel(level)
    kind = reply.get("type") if isinstance(reply, dict) else None
    return None if kind == "Scheduler" else f"it says it is a {kind}" if kind else "its answer is not a dask scheduler's"


# --- on the workers ------------------------------------------------------------------------


_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModuleFile:
    """A user module given as a file: its path here (``key``) and its source, which
    travels with every task so that any worker, also one that joins mid-run, can load it."""

    key: str
    text: str


UserModule = str | ModuleFile
"""A named module (installed on every worker) or a file's source."""


def user_modules(refs: Sequence[str]) -> tuple[UserModule, ...]:
    """What the workers need to load ``refs`` (module keys, as ``modules.module_key``)."""
    return tuple(ModuleFile(r, Path(r).read_text()) if r.endswith(".py") or Path(r).is_file() else r for r in refs)


_LOADED: dict[str, tuple[str, list[str]]] = {}
"""In a worker: file key -> (hash of the source loaded, the cases it registered)."""


def load_user_modules(modules: Sequence[UserModule]) -> None:
    """Load each module in this worker once; a file whose source changed since (a
    long-lived worker, a second run) replaces the cases its older source registered."""
    from rulelab.model.case import unregister
    from rulelab.model.modules import load_module

    for m in modules:
        if isinstance(m, str):
            load_module(m)
            continue
        digest = hashlib.sha256(m.text.encode()).hexdigest()
        old = _LOADED.get(m.key)
        if old and old[0] == digest:
            continue
        for name in old[1] if old else ():
            unregister(name)
        path = Path(tempfile.gettempdir()) / "rulelab_modules" / digest[:16] / Path(m.key).name
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, m.text)
        _LOADED[m.key] = (digest, load_module(str(path)))


def on_worker(modules: Sequence[UserModule], fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a worker, one task at a time per process, with the user's
    ``modules`` loaded."""
    with _LOCK:
        load_user_modules(modules)
        return fn(*args)


def worker_facts(backend: str | None, dtypes: tuple[str, ...]) -> dict[str, Any]:
    """This worker's backend facts (its backend starts on the first call) and library versions."""
    from rulelab.core.provenance import versions
    from rulelab.jaxrun import backend as backends

    with _LOCK:
        return {"backend": backends.facts_here(backend, tuple(dtypes)), "versions": versions()}


def _case_names() -> list[str]:
    import rulelab

    return [c.name for c in rulelab.cases()]


# --- on the client -------------------------------------------------------------------------


class _Executor(Executor):
    """``concurrent.futures`` view of the cluster (for the reference chunks): every call
    runs through :func:`on_worker`."""

    def __init__(self, client: Any, modules: Sequence[UserModule]) -> None:
        self._ex = client.get_executor(pure=False)
        self._modules = tuple(modules)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        return self._ex.submit(on_worker, self._modules, fn, *args)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._ex.shutdown(wait=wait and not cancel_futures)


@dataclass
class Cluster:
    """A connected client (and the LocalCluster it started, if any), with the user
    modules every worker imports."""

    address: str
    client: Any
    modules: tuple[UserModule, ...]
    local: Any = None

    @property
    def executor(self) -> Executor:
        return _Executor(self.client, self.modules)

    def workers(self) -> dict[str, int]:
        """Address -> threads of each worker connected now."""
        info = self.client.scheduler_info(n_workers=-1) if _takes_n_workers(self.client) else self.client.scheduler_info()
        return {addr: int(w.get("nthreads", 1)) for addr, w in info.get("workers", {}).items()}

    def facts(self, backend: str | None, dtypes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each worker's backend facts (ClusterError naming a worker whose library
        versions differ from this process's: its numbers would be another program's)."""
        from rulelab.core.provenance import versions

        per_worker = self.client.run(worker_facts, backend, tuple(dtypes))
        mine = versions()
        for addr, f in per_worker.items():
            moved = [f"{k} {v} here, {f['versions'].get(k)} there" for k, v in mine.items() if f["versions"].get(k) != v]
            if moved:
                raise ClusterError(f"worker {addr} runs other versions than this process ({'; '.join(moved)}); install the same versions on every worker")
        return {addr: f["backend"] for addr, f in per_worker.items()}

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A future of ``fn(*args)`` on a worker (through :func:`on_worker`)."""
        return self.client.submit(on_worker, self.modules, fn, *args, pure=False)


def _takes_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def same_facts(per_worker: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The one set of backend facts all workers have; ClusterError naming two workers
    that differ (results of two backends, or of a flushing and a non-flushing one, must
    not be mixed in one run)."""
    items = list(per_worker.items())
    if not items:
        raise ClusterError("the cluster has no workers")
    first_addr, first = items[0]
    for addr, f in items[1:]:
        if f != first:
            diff = ", ".join(f"{k}: {first.get(k)!r} on {first_addr} vs {f.get(k)!r} on {addr}" for k in sorted(set(first) | set(f)) if first.get(k) != f.get(k))
            raise ClusterError(f"workers differ ({diff}); one run uses workers of one kind: start a cluster of like workers")
    return first


@contextlib.contextmanager
def connect(address: str, modules: Sequence[str] = (), cases: Sequence[str] = ()) -> Iterator[Cluster]:
    """A :class:`Cluster` at ``address`` (``tcp://host:port``, or ``local:N`` to start N
    worker processes here) whose workers have imported ``modules`` and can find every
    case in ``cases``; closed (its futures cancelled) on exit."""
    n_local = local_workers(address)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterError(f"--scheduler {address} needs dask.distributed: pip install -e '.[dask]'") from None
    local = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dask's notices about ports and versions are not the user's concern here
        try:
            if n_local is not None:
                import dask

                with dask.config.set(WORKER_CONFIG):
                    local = LocalCluster(n_workers=n_local, threads_per_worker=1, processes=True, dashboard_address=None)
                client = Client(local)
            else:
                client = Client(address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            if local is not None:
                local.close()
            raise ClusterError(f"cannot reach a dask scheduler at {address}: {exc}") from None
    cluster = Cluster(address, client, user_modules(modules), local)
    try:
        try:
            client.wait_for_workers(1, timeout=WORKER_TIMEOUT_S)
        except TimeoutError:
            raise ClusterError(f"the scheduler at {address} has no workers after {WORKER_TIMEOUT_S} s; start some with: dask worker {address} --nthreads 1") from None
        threaded = {a: n for a, n in cluster.workers().items() if n > 1}
        if threaded:
            a, n = next(iter(threaded.items()))
            print(f"note: {len(threaded)} worker(s) have several threads (e.g. {a}: {n}); each runs one rulelab task at a time "
                  "(mpmath's precision and JAX's x64 flag are per process): start workers with --nthreads 1 --nworkers N", file=sys.stderr)
        _check_cases(cluster, cases)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            client.cancel(list(client.futures.values()), force=True)
        with contextlib.suppress(Exception):
            client.close()
        if local is not None:
            with contextlib.suppress(Exception):
                local.close()


def _check_cases(cluster: Cluster, cases: Sequence[str]) -> None:
    """Every worker loads the user's modules and can find every case the run sweeps
    (ClusterError naming the worker and what failed)."""
    try:
        found = cluster.client.run(on_worker, cluster.modules, _case_names)
    except Exception as exc:  # noqa: BLE001 - the worker's own message, without its traceback
        raise ClusterError(f"a worker cannot load the user modules: {first_line(exc)}") from None
    for addr, names in found.items():
        missing = sorted(set(cases) - set(names))
        if missing:
            raise ClusterError(
                f"worker {addr} has no case {', '.join(map(repr, missing))}; give the module that registers it with --module, "
                "as a .py file (sent to the workers) or a module installed on every worker"
            )
