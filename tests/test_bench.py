"""Tests for the asv suites in bench/: generation from the catalog, skips, tracks.

The suites are exercised in-process on a small case registered here, the way asv calls
them (setup, then the benchmark); asv itself is checked by ``asv check`` in CI.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rulelab
from rulelab.model.case import POSITIVE, REALS, make_case

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_accuracy, bench_solvers, bench_time, bench_track, common  # noqa: E402
from rulelab.scoring.accuracy_probe import Probe, max_ulp  # noqa: E402


@jax.custom_vjp
def _softplus_vjp(x):
    return jnp.logaddexp(x, 0.0)


_softplus_vjp.defvjp(lambda x: (_softplus_vjp(x), x), lambda x, g: (g * jax.nn.sigmoid(x),))


def _newton(n):
    def f(a):
        x = a
        for _ in range(n):
            x = 0.5 * (x + a / x)
        return x

    return f


@pytest.fixture
def toy():
    case = make_case(
        "bench_toy",
        "log(1 + exp(x))",
        ("x",),
        REALS,
        lambda mp, x: mp.log1p(mp.exp(x)),
        {"naive": lambda x: jnp.log1p(jnp.exp(x)), "custom_vjp": _softplus_vjp},
    )
    rulelab.register(case)
    yield case
    rulelab.unregister(case.name)


@pytest.fixture
def solver():
    case = make_case(
        "bench_newton",
        "sqrt(a)",
        ("a",),
        POSITIVE,
        lambda mp, a: mp.sqrt(a),
        {"naive": _newton(4)},
        steps=lambda n: {"naive": _newton(n)},
        default_steps=4,
    )
    rulelab.register(case)
    yield case
    rulelab.unregister(case.name)


def test_every_catalog_case_has_a_time_and_a_track_class():
    catalog = [c for c in rulelab.cases() if getattr(c.reference, "__module__", "").startswith("rulelab.catalog")]
    assert len(catalog) >= 25
    for case in catalog:
        for module in (bench_time, bench_track):
            cls = getattr(module, case.name)
            assert cls.case == case.name and cls.params[0] == list(case.variants)
            assert cls.params[-1] == common.BACKENDS
    for case in common.iterative(rulelab.cases()):
        assert getattr(bench_solvers, case.name).params[1] == common.STEPS


def test_backend_parameter_is_what_is_installed_or_named(monkeypatch):
    present = {d.platform for d in jax.devices()}
    assert "cpu" in common.installed_backends() and present <= set(common.installed_backends())
    monkeypatch.setenv("RULELAB_BENCH_BACKENDS", "tpu, cpu")
    assert common.installed_backends() == ["cpu", "tpu"]  # in the fixed order, so params line up
    monkeypatch.setenv("RULELAB_BENCH_BACKENDS", "cpu,npu")
    with pytest.raises(ValueError, match="npu"):
        common.installed_backends()


def test_per_case_names_classes_after_cases_and_refuses_clashes(toy):
    namespace = {"__name__": "bench.fake"}
    made = common.per_case(namespace, bench_time._Time, [toy], bench_time._params)
    cls = namespace["bench_toy"]
    assert made == [cls] and cls.__name__ == "bench_toy" and cls.__module__ == "bench.fake"
    assert cls.param_names == ["variant", "transform", "dtype", "size", "backend"]
    # not a key case: the reduced product
    assert cls.params[1:4] == [["value", "grad"], ["float32"], [common.LARGE]]
    with pytest.raises(RuntimeError, match="clashes"):
        common.per_case(namespace, bench_time._Time, [toy], bench_time._params)


def test_key_cases_get_the_full_product(toy):
    assert common.product(toy) is common.REDUCED
    assert common.product(rulelab.get_case("softplus")) is common.FULL
    assert set(common.FULL.transforms) == {"value", "grad", "jvp", "grad2"}


def _time_class(case):
    namespace = {"__name__": "bench.fake"}
    common.per_case(namespace, bench_time._Time, [case], bench_time._params)
    return namespace[case.name]()


def test_time_setup_compiles_and_the_body_runs(toy):
    bench = _time_class(toy)
    bench.setup("custom_vjp", "grad", "float32", 64, "cpu")
    bench.time_call("custom_vjp", "grad", "float32", 64, "cpu")
    assert bench.fn(*bench.args).shape == (64,)


def test_time_setup_skips_absent_backends_and_refused_transforms(toy):
    bench = _time_class(toy)
    present = {d.platform for d in jax.devices()}
    for backend in set(common.ALL_BACKENDS) - present:
        with pytest.raises(NotImplementedError, match="not present"):
            bench.setup("naive", "value", "float32", 16, backend)
    with pytest.raises(NotImplementedError, match="forward-mode"):
        bench.setup("custom_vjp", "jvp", "float32", 16, "cpu")


def test_tracks_measure_once_and_skip_what_does_not_apply(toy, monkeypatch):
    monkeypatch.setattr(common, "BACKENDS", list(common.ALL_BACKENDS))  # as named by RULELAB_BENCH_BACKENDS
    namespace = {"__name__": "bench.fake"}
    family = common.per_case(namespace, bench_track._Track, [toy], bench_track._params)
    bench = family[0]()
    bench.family = family
    cache = bench.measure_family()
    assert len(cache) == math.prod(len(p) for p in bench.params)
    present = {d.platform for d in jax.devices()}
    for backend in set(common.ALL_BACKENDS) - present:
        assert "not present" in cache[("bench_toy", "naive", "value", "float32", backend)]

    bench.setup(cache, "naive", "grad", "float32", "cpu")
    assert bench.track_jaxpr_eqns(cache) > 0 and bench.track_hlo_ops(cache) > 0
    assert bench.track_compile_ms(cache) > 0 and bench.track_temp_bytes(cache) >= 0
    assert bench.track_residual_bytes(cache) >= common.TRACK_SIZE * 4

    bench.setup(cache, "naive", "value", "float32", "cpu")
    with pytest.raises(NotImplementedError):  # residual bytes: grad rows only
        bench.track_residual_bytes(cache)
    with pytest.raises(NotImplementedError):  # a combination the cache never saw
        bench.setup(cache, "naive", "grad2", "float32", "cpu")


@pytest.mark.slow
def test_solver_timings_run_the_executables_the_tracks_measured(solver, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # asv runs setup_cache and the benchmarks in one folder
    namespace = {"__name__": "bench.fake"}
    family = common.per_case(namespace, bench_solvers._Steps, [solver], bench_solvers._params)
    memory = common.per_case(namespace, bench_solvers._StepsMemory, [solver], bench_solvers._params, suffix="_memory")
    # one setup_cache (asv keys it by its source location) serves both classes
    assert family[0].setup_cache is memory[0].setup_cache
    bench = family[0]()
    bench.family = family
    cache = bench.setup_cache()
    assert len(list(tmp_path.glob("executable-*.pkl"))) == len(common.STEPS)  # naive grad at each step count
    bench.setup(cache, "naive", 8, "grad", "cpu")
    bench.time_call(cache, "naive", 8, "grad", "cpu")
    # the loaded program computes what the variant's derivative is: d/da sqrt(a) = 1 / (2 sqrt(a))
    a = np.asarray(bench.args[0], dtype=np.float64)
    np.testing.assert_allclose(np.asarray(bench.fn(*bench.args)), 0.5 / np.sqrt(a), rtol=1e-5)
    track = memory[0]()
    track.setup(cache, "naive", 8, "grad", "cpu")
    assert track.track_compile_ms(cache) > 0


def test_solver_tracks_grow_with_steps_when_unrolled(solver, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the executables kept for the timings land in the current folder
    namespace = {"__name__": "bench.fake"}
    family = common.per_case(namespace, bench_solvers._StepsMemory, [solver], bench_solvers._params, suffix="_memory")
    bench = family[0]()
    assert type(bench).__name__ == "bench_newton_memory"
    bench.family = family
    cache = bench.measure_family()
    residuals = []
    for steps in (2, 8, 32):
        bench.setup(cache, "naive", steps, "grad", "cpu")
        residuals.append(bench.track_residual_bytes(cache))
    assert residuals[0] < residuals[1] < residuals[2]


def _accuracy_class(case):
    namespace = {"__name__": "bench.fake"}
    common.per_case(namespace, bench_accuracy._Accuracy, [case], bench_accuracy._params)
    return namespace[case.name]()


@pytest.mark.parametrize(
    ("probed", "outcome"),
    [(Probe(3.0, "ok", ""), 3.0), (Probe(math.inf, "ok", ""), NotImplementedError),
     (Probe(math.nan, "error", "boom"), RuntimeError), (Probe(math.nan, "unsupported", "refused"), NotImplementedError)],
)
def test_accuracy_reports_finite_ulps_and_skips_non_finite_classes(toy, monkeypatch, probed, outcome):
    monkeypatch.setattr(bench_accuracy, "probe", lambda case, jobs, dtype, backend: [probed] * len(jobs))
    monkeypatch.setattr(bench_accuracy, "probe_size", lambda *a, **k: 100)
    bench = _accuracy_class(toy)
    cache = bench_accuracy.measure_case(type(bench))
    if isinstance(outcome, float):
        bench.setup(cache, "naive", "grad", "x", "float32", "cpu")
        assert bench.track_max_ulp(cache, "naive", "grad", "x", "float32", "cpu") == outcome
    else:
        with pytest.raises(outcome):
            bench.setup(cache, "naive", "grad", "x", "float32", "cpu")


def test_accuracy_skips_large_probes_and_refused_transforms(toy, monkeypatch):
    namespace = {"__name__": "bench.fake"}
    names = ["variant", "transform", "arg", "dtype", "backend"]
    common.per_case(namespace, bench_accuracy._Accuracy, [toy], lambda c: ([list(c.variants), ["value", "grad", "jvp"], ["x"], ["float32"], ["cpu"]], names))
    bench = namespace[toy.name]()
    monkeypatch.setattr(bench_accuracy, "probe_size", lambda *a, **k: bench_accuracy.MAX_POINTS + 1)
    cache = bench_accuracy.measure_case(type(bench))
    with pytest.raises(NotImplementedError, match="probe sweep"):
        bench.setup(cache, "naive", "grad", "x", "float32", "cpu")
    monkeypatch.undo()
    cache = bench_accuracy.measure_case(type(bench))  # the real probe, one program for the case
    with pytest.raises(NotImplementedError, match="forward-mode"):
        bench.setup(cache, "custom_vjp", "jvp", "x", "float32", "cpu")
    bench.setup(cache, "custom_vjp", "grad", "x", "float32", "cpu")
    # one program for the whole case measures what one program per combination does
    assert bench.ulp == max_ulp("bench_toy", "custom_vjp", "grad", "x", "float32", "cpu") and math.isfinite(bench.ulp)


@pytest.mark.slow
def test_exhaustive_throughput_scores_its_slice_and_skips_absent_backends():
    from bench import bench_exhaustive

    bench = bench_exhaustive.ExhaustiveSoftplus()
    for backend in set(common.ALL_BACKENDS) - {d.platform for d in jax.devices()}:
        with pytest.raises(NotImplementedError, match="not present"):
            bench.setup(backend)
    bench.setup("cpu")
    aggs, _ = bench.run_chunk(bench.setup_, bench_exhaustive.FIRST)
    # the slice is the 2^18 float32 values from 1.0 up: one binade, every point counted once per variant
    for agg in aggs.values():
        assert list(agg.bins) == [(1, 0.0)] and agg.bins[(1, 0.0)]["count"] == 1 << bench_exhaustive.CHUNK_BITS
    assert len(aggs) == len(rulelab.get_case("softplus").variants)
    assert bench.track_points_per_second("cpu") > 0
