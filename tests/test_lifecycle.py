"""The one run lifecycle: refuse a resume only where what was measured changed, stop
with the reason, complete is final; and an exhaustive chunk written before the layout
moved still loads."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from rulelab import store
from rulelab.model.case import REALS, Variant, make_case
from rulelab.model.tasks import Task
from rulelab.runs import lifecycle
from rulelab.scoring.chunks import Aggregate


def _case(scale: float):
    return make_case(
        name="lc_toy", formula="2x", args=("x",), domain=REALS, reference=lambda mp, x: 2 * x,
        variants=[Variant("naive", lambda x: 2.0 * x), Variant("scaled", lambda x: scale * x)],
    )


TASKS = [Task("lc_toy", "naive", "value", "", "float32"), Task("lc_toy", "scaled", "value", "", "float32")]


def test_a_resume_is_refused_only_where_measured_code_changed(tmp_path, registered):
    registered(_case(2.0))
    session = lifecycle.create(tmp_path, {"name": "toy"}, TASKS, backend=None)
    before = dict(session.meta.code)
    registered(_case(3.0))  # the scaled variant's code changes (a constant its closure holds)
    reopened = lifecycle.reopen(tmp_path, session.run.name)
    lifecycle.check_unchanged(reopened, TASKS, measured=[TASKS[0]])  # only naive was measured: allowed
    after = store.read_meta(session.run).code
    assert after["lc_toy/naive"] == before["lc_toy/naive"] and after["lc_toy/scaled"] != before["lc_toy/scaled"]

    registered(_case(4.0))
    with pytest.raises(lifecycle.RunError, match=r"code changed since the run started: lc_toy/scaled"):
        lifecycle.check_unchanged(lifecycle.reopen(tmp_path, session.run.name), TASKS, measured=TASKS)


def test_changed_versions_refuse_a_resume_only_once_something_was_measured(tmp_path, registered, monkeypatch):
    registered(_case(2.0))
    session = lifecycle.create(tmp_path, {"name": "toy"}, TASKS, backend=None)
    real = lifecycle.versions()
    monkeypatch.setattr(lifecycle, "versions", lambda: {**real, "mpmath": "0.0-other"})
    lifecycle.check_unchanged(lifecycle.reopen(tmp_path, session.run.name), TASKS, measured=[])
    assert store.read_meta(session.run).versions["mpmath"] == "0.0-other"
    monkeypatch.setattr(lifecycle, "versions", lambda: {**real, "mpmath": "0.0-third"})
    with pytest.raises(lifecycle.RunError, match=r"versions changed: mpmath 0\.0-other -> 0\.0-third"):
        lifecycle.check_unchanged(lifecycle.reopen(tmp_path, session.run.name), TASKS, measured=TASKS[:1])


def test_a_session_that_fails_stops_the_run_with_its_reason(tmp_path, registered):
    registered(_case(2.0))
    session = lifecycle.create(tmp_path, {"name": "toy"}, TASKS, backend=None)
    with pytest.raises(RuntimeError), lifecycle.running(session):
        raise RuntimeError("the disk went away\nmore detail")
    meta = store.read_meta(session.run)
    assert meta.status == lifecycle.STOPPED and meta.stopped["reason"] == "RuntimeError: the disk went away"
    with pytest.raises(KeyboardInterrupt), lifecycle.running(lifecycle.reopen(tmp_path, session.run.name)):
        raise KeyboardInterrupt
    assert store.read_meta(session.run).stopped["reason"] == "interrupted"


def test_another_backend_cannot_resume_a_run(tmp_path, registered):
    registered(_case(2.0))
    session = lifecycle.create(tmp_path, {"name": "toy"}, TASKS, backend="cpu")
    with pytest.raises(lifecycle.RunError, match="started with backend 'cpu'"):
        lifecycle.reopen(tmp_path, session.run.name, backend="gpu")


def test_a_chunk_pickled_under_the_old_module_names_still_loads(tmp_path):
    agg = Aggregate({(1, 0.0): {"count": 3}}, wrong_nan=1, max_frac=0.5)
    data = pickle.dumps(({("c", "v"): agg}, {"jax": 1.0}), protocol=2)  # protocol 2 names classes as text
    assert b"rulelab.scoring.chunks\n" in data
    for module in (b"rulelab.chunkscore", b"rulelab.exhaustive"):  # the two earlier homes of Aggregate
        old = data.replace(b"rulelab.scoring.chunks\n", module + b"\n")
        path = tmp_path / "000001.pkl"
        path.write_bytes(old)
        with pytest.raises(ModuleNotFoundError):
            pickle.loads(old)
        aggs, secs = store.read_pickle(path)
        got = aggs[("c", "v")]
        assert isinstance(got, Aggregate) and got.wrong_nan == 1 and got.bins == {(1, 0.0): {"count": 3}} and secs == {"jax": 1.0}
    assert np.isnan(Aggregate({}).max_frac)
