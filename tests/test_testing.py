"""rulelab in a user's own tests: assert_accurate, the Python API and the accuracy ratchet."""

import math
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import rulelab
from rulelab.store.vocabulary import Bucket
from rulelab.testing import assert_accurate, bound_for, points_over

PROJECT = Path(__file__).parent / "user_project"


def softplus_reference(mp, x):
    return mp.log1p(mp.exp(x))


def _seed_rule():
    @jax.custom_jvp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    @softplus.defjvp
    def _jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return softplus(x), (1.0 - 1.0 / (1.0 + jnp.exp(x))) * t

    return softplus


def test_a_users_project_passes_the_stable_rule_and_fails_the_textbook_one_in_parallel(env):
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", str(PROJECT)],
                         capture_output=True, text=True, env=env, timeout=600, cwd=PROJECT)
    assert "1 failed, 1 passed" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
    assert "FAILED test_rules.py::test_the_textbook_rule_is_accurate" in res.stdout
    # the message names an input below -16 where the rule returns 0, with the reference there
    found = re.findall(r"x = (-?[\d.e+-]+): computed 0, reference ([\d.e+-]+), ([\d.e+]+) ULP", res.stdout)
    assert found, res.stdout[-3000:]
    x, ref, _ = found[0]
    assert float(x) < -16
    exact = 1 / (1 + mpmath.exp(-mpmath.mpf(float(np.float32(float(x))))))  # softplus' = sigmoid
    assert float(ref) == pytest.approx(float(np.float32(float(exact))), rel=1e-8)
    assert "lost at rules.py:15 (_textbook_jvp) (sub, cancellation)" in res.stdout


def test_check_grads_passes_the_seed_rule_where_assert_accurate_fails_it():
    from jax.test_util import check_grads

    softplus = _seed_rule()
    x = np.float32(-20.0)
    check_grads(softplus, (x,), order=1, modes=("fwd", "rev"))  # passes: its tolerance dwarfs the true gradient, 2.1e-9
    assert float(jax.grad(softplus)(x)) == 0.0 and float(1 / (1 + mpmath.exp(20))) > 2e-9
    with pytest.raises(AssertionError) as info:
        assert_accurate(softplus, reference=softplus_reference, transforms=("grad",), special_points=(-20.0,))
    worst = re.findall(r"x = (-[\d.e+-]+): computed 0, reference ([\d.e+-]+)", str(info.value))
    assert len(worst) == 5 and all(float(x) < -16 for x, _ in worst)  # the 5 worst inputs, each a gradient lost to 0


def test_nothing_leaks_into_the_catalog_and_a_bound_per_transform_is_honoured():
    before = [c.name for c in rulelab.cases()]
    softplus = _seed_rule()
    assert_accurate(softplus, reference=softplus_reference, max_ulp={"grad": math.inf})  # the value is accurate
    assert [c.name for c in rulelab.cases()] == before
    with pytest.raises(AssertionError, match="grad in x, float32"):
        assert_accurate(softplus, reference=softplus_reference, max_ulp={"value": math.inf})


def test_bounds_and_counts_follow_the_buckets():
    assert bound_for(4, "grad", "float32") == 4
    bounds = {("grad", "bfloat16"): 64, "grad": 8, "float16": 2}
    assert (bound_for(bounds, "grad", "bfloat16"), bound_for(bounds, "grad", "float32"), bound_for(bounds, "value", "float16"),
            bound_for(bounds, "value", "float32")) == (64, 8, 2, 4)
    row = {Bucket.EXACT.column: 5, Bucket.ULP_1.column: 4, Bucket.ULP_2_4.column: 3, Bucket.ULP_5_1024.column: 2, Bucket.ULP_GT_1024.column: 1}
    assert points_over(row, 4) == (3, True)  # 5-1024 and >1024
    assert points_over(row, 0) == (10, True)
    assert points_over(row, 10) == (1, False)  # only the >1024 points are surely over 10


@pytest.mark.slow
def test_the_python_api_sweeps_reads_and_shows_a_run(tmp_path):
    run = rulelab.sweep("softplus", variants=["naive", "custom_jvp"], transforms=["grad"], dtypes=["float32"], results=tmp_path / "r")
    assert set(run.summary["variant"]) == {"naive", "custom_jvp"} and (run.summary["status"] == "ok").all()
    assert not run.worst.empty and not run.binned.empty and not run.samples.empty
    assert set(run.blame["variant"]) <= {"naive", "custom_jvp"} and not run.blame.empty
    verdict = run.verdict()
    assert list(verdict["case"]) == ["softplus"]
    assert rulelab.load_run(tmp_path / "r").path == run.path  # a results root: its newest run
    page = run._repr_html_()
    assert 'class="verdict"' in page and 'class="matrix"' in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "http://" not in page and "https://" not in page
    index = run.report(tmp_path / "html")
    assert index.is_file() and "softplus" in index.read_text()


def _cli(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "rulelab", *args], capture_output=True, text=True, env=env, timeout=600, cwd=cwd)


@pytest.mark.slow
def test_the_gate_passes_a_run_against_its_own_baseline_and_fails_a_regression(tmp_path, env):
    import tomllib

    run = rulelab.sweep("softplus", variants=["naive", "custom_jvp"], transforms=["value", "grad"], dtypes=["float32"],
                        results=tmp_path / "results")
    base = tmp_path / "accuracy-baseline.toml"
    res = _cli(["baseline", run.path.name, "-o", str(base)], env, tmp_path)
    assert res.returncode == 0, res.stderr
    data = tomllib.loads(base.read_text())
    assert len(data["results"]) == len(run.summary) and data["baseline"]["backend"] == "cpu"
    assert _cli(["gate", "--baseline", str(base)], env, tmp_path).returncode == 0  # the newest run, against itself

    # a baseline that claims the naive gradient is exact: the run got "worse" there
    key = "softplus naive grad x float32"
    text = base.read_text()
    line = next(l for l in text.splitlines() if l.startswith(f'"{key}"'))
    claimed = text.replace(line, f'"{key}" = {{ status = "ok", max_ulp = 0.0, bucket = "exact", nonfinite = 0 }}')
    (tmp_path / "better.toml").write_text(claimed)
    res = _cli(["gate", "--baseline", str(tmp_path / "better.toml"), run.path.name], env, tmp_path)
    assert res.returncode == 1 and key in res.stdout and "got worse" in res.stdout

    # a baseline worse than the run: the run improved, the gate passes and says which
    worse_line = f'"{key}" = {{ status = "error", max_ulp = nan, bucket = "", nonfinite = 0 }}'
    (tmp_path / "worse.toml").write_text(text.replace(line, worse_line))
    res = _cli(["gate", "--baseline", str(tmp_path / "worse.toml")], env, tmp_path)
    assert res.returncode == 0 and "improved" in res.stdout and key in res.stdout and "rulelab baseline" in res.stdout

    # another backend's baseline, and a baseline of results the run never swept, are refused in one line
    (tmp_path / "gpu.toml").write_text(text.replace('backend = "cpu"', 'backend = "gpu"'))
    res = _cli(["gate", "--baseline", str(tmp_path / "gpu.toml")], env, tmp_path)
    assert res.returncode == 2 and "measured on gpu" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "other.toml").write_text(text.replace("float32", "bfloat16"))
    res = _cli(["gate", "--baseline", str(tmp_path / "other.toml")], env, tmp_path)
    assert res.returncode == 2 and "does not cover" in res.stderr and "Traceback" not in res.stderr
