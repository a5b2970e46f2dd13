"""Sweeps on a real dask.distributed cluster: a ``dask scheduler`` and ``dask worker``
processes on 127.0.0.1 (free ports), driven through ``--scheduler``. The cluster's
tables must equal a local run's apart from timing columns, also when a worker is killed
mid-run and when the client is killed and the run resumed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("distributed")

from helpers import USER_CASES, plan_file, rulelab, tables  # noqa: E402

from rulelab import store  # noqa: E402
from rulelab.runs.cluster import ClusterError, local_workers, same_facts  # noqa: E402

pytestmark = pytest.mark.slow  # every test here starts dask processes and sweeps on them

CASES = ["softplus", "hypot", "logaddexp"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dask:
    """A scheduler and its workers as subprocesses, stopped by :meth:`stop`."""

    def __init__(self, env: dict, workers: int) -> None:
        self.env = env
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self._start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"])
        for _ in range(workers):
            self.add_worker()
        self.wait_for(workers)

    def _start(self, cmd: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env, start_new_session=True)
        self.procs.append(p)
        return p

    def add_worker(self) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--nthreads", "1", "--no-dashboard", "--no-nanny", "--host", "127.0.0.1"]
        w = self._start(cmd)
        self.workers.append(w)
        return w

    def wait_for(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(n, timeout=120)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs:
            p.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(env) -> Iterator[Dask]:
    d = Dask(env, workers=2)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, env) -> Path:
    out = tmp_path_factory.mktemp("local")
    res = rulelab("sweep", "quick", "--cases", *CASES, "--results", str(out), "--no-progress", env=env)
    assert res.returncode == 0, res.stderr
    (run,) = out.glob("accuracy/2*")
    return run


def assert_same_tables(a: Path, b: Path) -> None:
    ta, tb = tables(a), tables(b)
    for name in store.TABLES:
        pd.testing.assert_frame_equal(ta[name], tb[name], obj=name)


def test_quick_plan_on_the_cluster_equals_the_local_run(tmp_path, env, cluster, local_run):
    # a cache of its own: the references are computed by the cluster's workers too
    own = {**env, "RULELAB_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "res"
    res = rulelab("sweep", "quick", "--cases", *CASES, "--results", str(out), "--no-progress", "--scheduler", cluster.address, env=own)
    assert res.returncode == 0, res.stderr
    (run,) = out.glob("accuracy/2*")
    assert_same_tables(run, local_run)
    meta = store.read_meta(run)
    session = meta.sessions[-1]
    assert session["cluster"]["scheduler"] == cluster.address
    assert len(session["cluster"]["workers"]) == 2 and session["workers"] == 2
    for facts in session["cluster"]["workers"].values():
        assert facts == {k: meta.backend[k] for k in facts}
    assert {p.name for p in (tmp_path / "cache" / "reference").iterdir()} == set(CASES)  # the client kept the references


def test_environment_variable_names_the_scheduler(tmp_path, env, cluster):
    out = tmp_path / "res"
    res = rulelab("sweep", plan_file(tmp_path, '"tneg"'), "--module", USER_CASES, "--results", str(out), "--no-progress",
                  env={**env, "RULELAB_SCHEDULER": cluster.address})
    assert res.returncode == 0, res.stderr
    (run,) = out.glob("accuracy/2*")
    assert store.read_meta(run).sessions[-1]["cluster"]["scheduler"] == cluster.address
    summary = store.load_table(run, "summary")
    assert len(summary) == 18  # 3 variants x 2 transforms x 3 dtypes
    assert set(summary.loc[summary["variant"] == "broken", "status"]) == {"error"}
    assert set(summary.loc[summary["variant"] != "broken", "status"]) == {"ok"}


def test_a_second_run_on_the_cluster_is_served_from_the_clients_cache(tmp_path, env, cluster):
    from rulelab.store.vocabulary import CACHE_RECORDS

    groups_record = next(iter(CACHE_RECORDS))
    cached = {**env, "RULELAB_NO_CACHE": "0", "RULELAB_CACHE": str(tmp_path / "cache")}
    runs = []
    for i in range(2):
        res = rulelab("sweep", plan_file(tmp_path, '"tneg"'), "--module", USER_CASES, "--results", str(tmp_path / f"r{i}"),
                      "--no-progress", "--scheduler", cluster.address, env=cached)
        assert res.returncode == 0, res.stderr
        (run,) = (tmp_path / f"r{i}").glob("accuracy/2*")
        runs.append(run)
    first, second = (store.read_meta(r).sessions[-1][groups_record] for r in runs)
    assert first["served"] == 0 and first["items"] == 3  # one group per dtype
    assert second["served"] + second["checked"] == 3 and second["checked"] >= 1 and second["mismatch"] is None
    a, b = tables(runs[0]), tables(runs[1])
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])


def test_a_user_module_reaches_the_workers(tmp_path, env, cluster):
    module = tmp_path / "my_remote_cases.py"
    module.write_text(Path(USER_CASES).read_text().replace('"tneg",', '"remote_tneg",').replace('"tadd",', '"remote_tadd",')
                      .replace('"tslow",', '"remote_tslow",'))
    plan = tmp_path / "remote.toml"
    plan.write_text('cases = ["remote_tneg"]\ntransforms = ["value", "grad"]\ndtypes = ["float32"]\n'
                    "[sweep]\nexhaustive16 = false\nper_binade = 1\n")
    out = tmp_path / "res"
    res = rulelab("sweep", str(plan), "--module", str(module), "--results", str(out), "--no-progress", "--scheduler", cluster.address, env=env)
    assert res.returncode == 0, res.stderr
    (run,) = out.glob("accuracy/2*")
    summary = store.load_table(run, "summary").set_index("variant")
    # the module's known errors, computed on the workers: exact is 0 ULP, off is 1 ULP
    assert (summary.loc["exact", "max_ulp"] == 0).all() and (summary.loc["off", "max_ulp"] == 1).all()
    assert (summary.loc["broken", "status"] == "error").all()


def test_a_module_the_workers_cannot_load_is_refused_before_work_starts(tmp_path, env, cluster):
    bad = tmp_path / "client_only.py"
    bad.write_text('import os\nif "ON_THE_CLIENT" not in os.environ:\n    raise ImportError("needs what only the client has")\n')
    out = tmp_path / "r"
    res = rulelab("sweep", "quick", "--cases", "softplus", "--module", str(bad), "--results", str(out), "--no-progress",
                  "--scheduler", cluster.address, env={**env, "ON_THE_CLIENT": "1"})
    assert res.returncode == 2
    assert "a worker cannot load the user modules" in res.stderr and "needs what only the client has" in res.stderr
    assert "Traceback" not in res.stderr
    (run,) = out.glob("accuracy/2*")
    assert store.read_meta(run).status == "stopped" and not list(run.glob("parts/*.part"))


@pytest.mark.parametrize("address, words", [("tcp://127.0.0.1:1", "no dask scheduler answers there"), ("http://x", "give tcp://HOST:PORT"),
                                            ("local:0", "local:N")])
def test_a_scheduler_that_cannot_be_used_is_refused_before_a_run_exists(tmp_path, env, address, words):
    out = tmp_path / "r"
    res = rulelab("sweep", "quick", "--cases", "softplus", "--results", str(out), "--no-progress", "--scheduler", address, env=env)
    assert res.returncode == 2 and words in res.stderr, res.stderr
    assert not list(out.glob("accuracy/2*"))


def test_killed_client_resumes_on_the_same_scheduler(tmp_path, env, cluster):
    plan = plan_file(tmp_path, '"tslow"')
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "rulelab", "sweep", plan, "--module", USER_CASES, "--results", str(out), "--no-progress", "--scheduler", cluster.address]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    parts = wait_for_parts(out, proc, 1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert parts, "the sweep ended before it could be stopped"
    (run,) = out.glob("accuracy/2*")
    resumed = rulelab("sweep", "--resume", run.name, "--results", str(out), "--no-progress", "--scheduler", cluster.address, env=env)
    assert resumed.returncode == 0, resumed.stderr
    meta = store.read_meta(run)
    assert meta.status == "complete" and 1 <= meta.sessions[-1]["tasks_before"] < 18
    whole = rulelab("sweep", plan, "--module", USER_CASES, "--results", str(tmp_path / "whole"), "--no-progress", env=env)
    assert whole.returncode == 0, whole.stderr
    (other,) = (tmp_path / "whole").glob("accuracy/2*")
    assert_same_tables(run, other)


def test_ctrl_c_cancels_the_cluster_work_and_leaves_the_run_resumable(tmp_path, env, cluster):
    plan = plan_file(tmp_path, '"tslow"')
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "rulelab", "sweep", plan, "--module", USER_CASES, "--results", str(out), "--no-progress", "--scheduler", cluster.address]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert wait_for_parts(out, proc, 1), "the sweep ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    (run,) = out.glob("accuracy/2*")
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].endswith(f"--resume {run.name} --results {out} --scheduler {cluster.address}")
    assert store.read_meta(run).status == "stopped"
    from distributed import Client

    with Client(cluster.address, timeout=30) as client:  # the scheduler let go of the run's tasks
        deadline = time.monotonic() + 30
        while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0


def wait_for_parts(out: Path, proc: subprocess.Popen, n: int, timeout: float = 240) -> list[Path]:
    deadline = time.monotonic() + timeout
    parts: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        parts = list(out.glob("accuracy/2*/parts/*.part"))
        if len(parts) >= n:
            break
        time.sleep(0.02)
    return parts


def test_a_worker_killed_mid_run_changes_nothing(tmp_path, env, local_run):
    d = Dask(env, workers=2)
    try:
        out = tmp_path / "res"
        cmd = [sys.executable, "-m", "rulelab", "sweep", "quick", "--cases", *CASES, "--results", str(out), "--no-progress", "--scheduler", d.address]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        parts = wait_for_parts(out, proc, 1)
        assert parts, "the sweep ended before a worker could be killed"
        os.killpg(d.workers[0].pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        (run,) = out.glob("accuracy/2*")
        assert_same_tables(run, local_run)
    finally:
        d.stop()


def test_scheduler_addresses_and_worker_facts():
    assert local_workers("tcp://10.0.0.1:8786") is None and local_workers("local:3") == 3
    for bad in ("local:", "local:0", "local:two"):
        with pytest.raises(ClusterError, match="local:N"):
            local_workers(bad)
    cpu = {"backend": "cpu", "flushes_subnormals": {"float32": True}}
    assert same_facts({"a": cpu, "b": dict(cpu)}) == cpu
    with pytest.raises(ClusterError, match="flushes_subnormals.*on a.*on b"):
        same_facts({"a": cpu, "b": {**cpu, "flushes_subnormals": {"float32": False}}})


def test_local_cluster_runs_a_plan(tmp_path, env):
    out = tmp_path / "res"
    res = rulelab("sweep", plan_file(tmp_path, '"tneg"'), "--module", USER_CASES, "--results", str(out), "--no-progress",
                  "--scheduler", "local:2", env=env)
    assert res.returncode == 0, res.stderr
    (run,) = out.glob("accuracy/2*")
    session = store.read_meta(run).sessions[-1]
    assert session["cluster"]["scheduler"] == "local:2" and len(session["cluster"]["workers"]) == 2


def test_workers_started_here_run_without_dask_s_profiler():
    import dask

    from rulelab.runs.cluster import connect

    with connect("local:1") as c:
        got = c.client.run(lambda: dask.config.get("distributed.worker.profile.enabled"))
    assert list(got.values()) == [False]


def test_an_exhaustive_run_on_the_cluster_equals_a_local_one(tmp_path, env, cluster):
    # every float32 in [1, 2) of both signs, 4 chunks of 2^22 inputs, on the workers and here
    args = ["sweep", "exhaustive32", "--cases", "softplus", "--variants", "naive", "stable", "--transforms", "grad",
            "--exponents", "127", "127", "--no-progress"]
    here = rulelab(*args, "--results", str(tmp_path / "here"), "--workers", "1", env=env)
    assert here.returncode == 0, here.stderr
    there = rulelab(*args, "--results", str(tmp_path / "there"), "--scheduler", cluster.address, env=env)
    assert there.returncode == 0, there.stderr
    (a,), (b,) = (tmp_path / "here").glob("accuracy/2*"), (tmp_path / "there").glob("accuracy/2*")
    assert_same_tables(a, b)
    meta = store.read_meta(b)
    assert meta.exhaustive["inputs"] == 2 * 2**23 and meta.sessions[-1]["cluster"]["scheduler"] == cluster.address
    assert len(meta.sessions[-1]["cluster"]["workers"]) == 2


def test_a_two_argument_exhaustive_run_on_the_cluster_equals_a_local_one(tmp_path, env, cluster, monkeypatch):
    # every float16 y against x = 1.0, the least subnormal and -0: three chunks of 2^16 pairs
    from rulelab.model.exhaustive_spec import Spec
    from rulelab.runs import exhaustive
    from rulelab.runs.executors import Options

    monkeypatch.setenv("RULELAB_CACHE", env["RULELAB_CACHE"])
    spec = Spec("hypot", ("naive", "library"), ("grad",), chunk_bits=16, chunks=(0x0001, 0x3C00, 0x8000), dtype="float16")
    here = exhaustive.start(spec, tmp_path / "here", Options(workers=1, progress=False, compile_cache=False))
    there = exhaustive.start(spec, tmp_path / "there", Options(progress=False, compile_cache=False, scheduler=cluster.address))
    assert_same_tables(here, there)
    meta = store.read_meta(there)
    assert meta.exhaustive["dtype"] == "float16" and meta.sessions[-1]["cluster"]["scheduler"] == cluster.address
    assert len(tables(there)["binned2"]) > 0
