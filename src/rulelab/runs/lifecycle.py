"""One run lifecycle for every kind of sweep: create, resume, refuse if changed, stop
with a reason, complete.

The pitfall: a run folder is a promise that its tables are the results of one program.
Resuming after the code or the libraries changed would mix the results of two programs
in one table, and a session that dies part-way must neither lose what it finished nor
leave a run that looks complete. So every driver (the sampled sweep, the exhaustive
sweep) goes through these functions, and the promises are stated once:

- **Refuse if changed.** A run resumes only while the code of everything it has already
  measured (each case's reference, and each variant with finished results) and the
  library versions are what they were; code of what it has not measured yet may have
  changed, and the fingerprints now in force are recorded.
- **Stop with a reason.** A session that ends on an error or an interrupt marks the run
  ``stopped`` with the reason (the error's first line, or "interrupted") and keeps what
  it finished; ``rulelab sweep --resume RUN`` continues it.
- **Complete is final.** Resuming a complete run changes nothing and returns it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rulelab import store
from rulelab.core.errors import UsageError, first_line
from rulelab.core.fingerprint import fingerprint
from rulelab.core.provenance import git_commit, host, versions
from rulelab.model.case import get_case
from rulelab.model.modules import load_modules, module_key
from rulelab.model.tasks import Task
from rulelab.store.vocabulary import COMPLETE, RUNNING, STOPPED, RunMeta, Status


class RunError(UsageError):
    """A run cannot start or continue as asked (nothing to run, changed code, another backend …)."""


def code_fingerprints(tasks: Sequence[Task]) -> dict[str, str]:
    """A fingerprint of each case's reference and of each variant a run measures."""
    out = {}
    for name, variant in dict.fromkeys((t.case, t.variant) for t in tasks):
        case = get_case(name)
        if f"{name}/reference" not in out:
            out[f"{name}/reference"] = fingerprint(case.reference, *case.derivatives.values(), *((c.note, c.where, c.value) for c in case.conventions))
        out[f"{name}/{variant}"] = fingerprint(case.variants[variant].fn)
    return out


@dataclass
class Session:
    """A run folder and its meta as this session last wrote it (the one thing a session
    updates; every write goes through :meth:`write`)."""

    run: Path
    root: Path
    meta: RunMeta

    def write(self, **changes: Any) -> RunMeta:
        """Record ``changes`` in meta.json (atomically) and return the new meta."""
        self.meta = replace(self.meta, **changes)
        store.write_meta(self.run, self.meta)
        return self.meta

    def add_session(self, record: Mapping[str, Any]) -> None:
        """Append one session's record (pid, backend facts, workers, seconds per phase)."""
        self.write(sessions=(*self.meta.sessions, record))

    def begin(self, record: dict[str, Any], facts: Mapping[str, Any], cluster_facts: Mapping[str, Any] | None) -> None:
        """Record this session (``record``, with the backend ``facts`` it runs under and
        its cluster's) once its backend is known; RunError if the run's earlier sessions
        ran on another platform (one run's results come from one backend)."""
        record["backend"] = dict(facts)
        if cluster_facts:
            record["cluster"] = dict(cluster_facts)
        first = self.meta.backend or facts
        if facts["backend"] != first["backend"]:
            raise RunError(f"run {self.run.name} ran on {first['backend']}; this session's backend is {facts['backend']}")
        self.write(backend=first)
        self.add_session(record)

    def resume_command(self, scheduler: str | None = None) -> str:
        """The command that continues this run."""
        on = f" --scheduler {scheduler}" if scheduler else ""
        return f"rulelab sweep --resume {self.run.name} --results {self.root}{on}"


def create(root: str | Path, plan: Mapping[str, Any], tasks: Sequence[Task], *, backend: str | None,
           modules: Sequence[str] = (), plan_text: str | None = None) -> Session:
    """A new run folder under ``root`` for ``tasks`` of ``plan``, its meta written
    (fingerprints of the code measured, versions, commit, host)."""
    run = store.new_run(root)
    meta = RunMeta(
        run_id=run.name, plan=dict(plan), started=store.now(), plan_text=plan_text, modules=tuple(module_key(m) for m in modules),
        backend_requested=backend, n_tasks=len(tasks), code=code_fingerprints(tasks), versions=versions(),
        git=git_commit(), host=host(),
    )
    store.write_meta(run, meta)
    return Session(run, Path(root), meta)


def reopen(root: str | Path, run_id: str, backend: str | None = None, modules: Sequence[str] = ()) -> Session:
    """The run ``run_id`` under ``root`` as it was left, with the user modules it
    recorded loaded (and ``modules``, given now, added to them); RunError if ``backend``
    is given and is not the backend the run was started with."""
    run = store.open_run(root, run_id)
    meta = store.read_meta(run)
    session = Session(run, run.parent.parent, meta)
    if meta.status == COMPLETE:
        return session
    if backend is not None and backend != meta.backend_requested:
        raise RunError(f"run {run.name} was started with backend {meta.backend_requested!r}; resume it on the same backend (drop --backend)")
    load_modules(meta.modules)
    added = [k for k in (module_key(m) for m in modules) if k not in meta.modules]
    if added:
        load_modules(added)
        session.write(modules=(*meta.modules, *added))
    return session


def check_unchanged(session: Session, tasks: Sequence[Task], measured: Sequence[Task]) -> None:
    """Refuse to resume when the code of anything already ``measured`` or the library
    versions changed since (see the module docstring); otherwise record the fingerprints
    and versions now in force."""
    now, libraries = code_fingerprints(tasks), versions()
    if measured:
        keys = {f"{t.case}/{t.variant}" for t in measured} | {f"{t.case}/reference" for t in measured}
        was = session.meta.code
        changed = [k for k in now if k in keys and k in was and was[k] != now[k]]
        moved = [f"{k} {v} -> {libraries[k]}" for k, v in session.meta.versions.items() if k in libraries and libraries[k] != v]
        if changed or moved:
            what = "; ".join(filter(None, [
                f"code changed since the run started: {', '.join(changed)}" if changed else "",
                f"versions changed: {', '.join(moved)}" if moved else "",
            ]))
            raise RunError(
                f"run {session.run.name} cannot be resumed without mixing results ({what}); start a new run "
                "(rulelab sweep with the same plan), or restore the code and versions it was started with"
            )
    session.write(code=now, versions=libraries)


@contextlib.contextmanager
def running(session: Session, on_start: Callable[[Path], None] | None = None) -> Iterator[Session]:
    """Mark the run running for the block (and call ``on_start(run)`` first); if it ends
    on an error or an interrupt, ``on_start``'s own included, mark it stopped with the
    reason (and re-raise)."""
    if session.meta.status != RUNNING or session.meta.stopped is not None:
        session.write(status=RUNNING, stopped=None)
    try:
        if on_start:
            on_start(session.run)
        yield session
    except BaseException as exc:
        reason = ("interrupted" if isinstance(exc, KeyboardInterrupt) else "the output was closed (broken pipe)"
                  if isinstance(exc, BrokenPipeError) else first_line(exc))
        with contextlib.suppress(Exception):
            session.write(status=STOPPED, stopped={"at": store.now(), "reason": reason})
        raise


def status_counts(summary: Any) -> dict[str, int]:
    """Results per status of a run's summary table."""
    return {s.value: int((summary["status"] == s.value).sum()) for s in (Status.OK, Status.UNSUPPORTED, Status.ERROR)}


def complete(session: Session, tables: Mapping[str, Any], **fields: Any) -> Path:
    """Mark the run complete (with ``fields`` and its status counts), make it the latest
    run of its results folder, and remove the parts its tables were assembled from."""
    session.write(**fields, counts=status_counts(tables["summary"]), status=COMPLETE, ended=store.now())
    store.set_latest(session.root, session.run.name)
    store.remove_parts(session.run)
    return session.run
