"""Worker processes that die with the process that started them; the one process pool.

The pitfall: a pool's workers outlive a parent killed with SIGKILL (or by the out-of-
memory killer); they go on computing for nobody, holding memory, for minutes. Every pool
is made by :func:`process_pool`, whose workers start with :func:`worker_init`, so they
leave Ctrl-C to the parent and, on Linux, are killed when it dies. Forked workers
inherit the registry (a user's own cases) and whatever the parent set up.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def worker_init(parent: int) -> None:
    """In each worker: ignore SIGINT (the parent decides what a Ctrl-C stops) and ask the
    kernel for SIGKILL when the parent dies; exit at once if it already has."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def kill_pool(ex: Any) -> None:
    """Stop a ProcessPoolExecutor at once: kill its workers (a task in flight is not
    waited for) and drop what is queued."""
    for p in list(getattr(ex, "_processes", {}).values()):
        with contextlib.suppress(Exception):
            p.kill()
    ex.shutdown(wait=False, cancel_futures=True)


def can_fork() -> bool:
    """Whether this platform can fork worker processes."""
    return "fork" in multiprocessing.get_all_start_methods()


def process_pool(n: int, start: str = "fork") -> ProcessPoolExecutor:
    """A pool of ``n`` workers that die with this process: forked (they inherit this
    process's state, its registry of cases among it) or, with ``start="spawn"``, fresh
    interpreters. JAX's warning about forking a process that imported it is silenced: a
    worker starts its own backend."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context(start), initializer=worker_init, initargs=(os.getpid(),))
