"""Fingerprints of code (rulelab.core.fingerprint): the digest must change whenever
something a function's result depends on changes (its helpers, the constants it reads,
what its closures and wrappers hold), and only then.

User code is written to module files in ``tmp_path`` and imported, as a user's module
would be, so that two versions of it differ only where a test says."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import itertools
import os
import subprocess
import sys
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rulelab.core.fingerprint import fingerprint

_counter = itertools.count()


@pytest.fixture
def load(tmp_path):
    """``load(source, name=None)`` imports ``source`` as a fresh module file (a new
    folder each time, so the same ``name`` may be loaded in two versions)."""
    made: list[str] = []

    def load(source: str, name: str | None = None) -> types.ModuleType:
        i = next(_counter)
        name = name or f"fp_user_{i}"
        folder = tmp_path / f"v{i}"
        folder.mkdir()
        path = folder / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        made.append(name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in made:
        sys.modules.pop(name, None)


def fp(module: types.ModuleType, attr: str = "f") -> str:
    return fingerprint(getattr(module, attr))


USES_HELPER = """
def helper(x):
    return x + {k}

def f(x):
    return 2 * helper(x)
"""


# --- the same code, the same digest -------------------------------------------------------------


def test_a_function_has_one_digest(load):
    m = load(USES_HELPER.format(k=1))
    d = fp(m)
    assert len(d) == 64 and int(d, 16) >= 0
    assert fp(m) == d
    # the same code loaded again from another file: content, not identity, is keyed
    assert fp(load(USES_HELPER.format(k=1))) == d


def test_arguments_are_keyed_in_order():
    assert fingerprint(1, 2) == fingerprint(1, 2)
    assert fingerprint(1, 2) != fingerprint(2, 1)
    assert fingerprint("a") != fingerprint("b")
    assert fingerprint(1) != fingerprint(1.0)  # repr differs: 1 and 1.0 are different inputs
    assert fingerprint(0.1) != fingerprint(0.1 + 2**-56)


def test_the_digest_is_the_same_in_another_process(load, tmp_path):
    """The reference cache is on disk: a set or dict constant must not make the digest
    depend on the process's hash seed."""
    source = """
    NAMES = {"alpha", "beta", "gamma", "delta", "epsilon"}
    TABLE = {"a": 1.5, "b": (2, 3)}

    def f(x):
        return x if x in NAMES else TABLE["a"]
    """
    m = load(source, name="fp_seeded")
    folder = os.path.dirname(m.__file__)
    code = f"import sys; sys.path.insert(0, {folder!r}); import fp_seeded; from rulelab.core.fingerprint import fingerprint; print(fingerprint(fp_seeded.f))"
    outs = []
    for seed in ("1", "2"):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": seed}, timeout=120)
        assert res.returncode == 0, res.stderr
        outs.append(res.stdout.strip())
    assert outs == [fp(m), fp(m)]


# --- what a function reads ----------------------------------------------------------------------


def test_editing_a_helper_changes_the_digest(load):
    a, b = load(USES_HELPER.format(k=1)), load(USES_HELPER.format(k=2))
    assert inspect.getsource(a.f) == inspect.getsource(b.f)  # the top-level source is the same
    assert fp(a) != fp(b)


def test_a_helper_of_a_helper_is_followed(load):
    source = """
    def inner(x):
        return x * {k}

    def helper(x):
        return inner(x) + 1

    def f(x):
        return helper(x)
    """
    assert fp(load(source.format(k=3))) != fp(load(source.format(k=4)))


def test_a_module_constant_it_reads_changes_the_digest(load):
    source = """
    SCALE = {k}
    OTHER = {other}

    def f(x):
        return SCALE * x
    """
    base = fp(load(source.format(k=3.0, other=0)))
    assert fp(load(source.format(k=3.5, other=0))) != base
    # a constant it does not read is no part of it
    assert fp(load(source.format(k=3.0, other=99))) == base


def test_an_array_constant_is_keyed_by_its_contents(load):
    source = """
    import numpy as np

    COEFFS = np.array([1.0, 2.0, {last}])

    def f(x):
        return np.polyval(COEFFS, x)
    """
    base = fp(load(source.format(last=3.0)))
    assert fp(load(source.format(last=3.0))) == base
    assert fp(load(source.format(last=3.0000001))) != base


def test_a_helper_used_as_module_attribute_is_followed(load):
    helper = """
    def g(x):
        return x - {k}
    """
    user = """
    import fp_helpmod

    def f(x):
        return fp_helpmod.g(x)
    """
    load(helper.format(k=1), name="fp_helpmod")
    a = load(user)
    load(helper.format(k=2), name="fp_helpmod")
    b = load(user)
    assert fp(a) != fp(b)


def test_mutual_recursion_terminates_and_follows_both(load):
    source = """
    def even(n):
        return n == 0 or odd(n - 1)

    def odd(n):
        return n != {base} and even(n - 1)
    """
    a, b = load(source.format(base=0)), load(source.format(base=1))
    assert fp(a, "even") == fp(load(source.format(base=0)), "even")
    assert fp(a, "even") != fp(b, "even")


def test_a_default_argument_that_is_a_function_is_followed(load):
    source = """
    def helper(x):
        return x ** {k}

    def f(x, g=helper):
        return g(x)
    """
    assert fp(load(source.format(k=2))) != fp(load(source.format(k=3)))


# --- closures and callables ---------------------------------------------------------------------


def make_scaled(c):
    def f(x):
        return c * x

    return f


def make_composed(g):
    def f(x):
        return g(x) + 1

    return f


def test_closure_values_are_keyed():
    assert fingerprint(make_scaled(2.0)) == fingerprint(make_scaled(2.0))
    assert fingerprint(make_scaled(2.0)) != fingerprint(make_scaled(3.0))


def test_a_function_captured_in_a_closure_is_followed(load):
    a, b = load(USES_HELPER.format(k=1)), load(USES_HELPER.format(k=5))
    assert fingerprint(make_composed(a.helper)) != fingerprint(make_composed(b.helper))
    assert fingerprint(make_composed(a.helper)) == fingerprint(make_composed(load(USES_HELPER.format(k=1)).helper))


def test_a_callable_object_of_a_users_class_is_followed(load):
    source = """
    OFFSET = {k}

    class Shift:
        def __call__(self, x):
            return x + OFFSET

    f = Shift()
    """
    assert fp(load(source.format(k=1))) != fp(load(source.format(k=2)))


def test_a_callable_objects_attributes_are_keyed(load):
    source = """
    class Scale:
        def __init__(self, k):
            self.k = k

        def __call__(self, x):
            return self.k * x

    f = Scale({k})
    """
    assert fp(load(source.format(k=2))) != fp(load(source.format(k=3)))


# --- libraries: keyed by name, not followed -----------------------------------------------------


def test_a_library_function_is_keyed_by_name(load):
    source = """
    from textwrap import {name} as op

    def f(s):
        return op(s)
    """
    assert fp(load(source.format(name="dedent"))) != fp(load(source.format(name="indent")))


def test_a_numpy_ufunc_is_keyed_by_name(load):
    source = """
    from numpy import {name} as op

    def f(x):
        return op(x)
    """
    a, b = load(source.format(name="sin")), load(source.format(name="cos"))
    assert fp(a) != fp(b)
    assert fp(a) == fp(load(source.format(name="sin")))


def test_a_library_functions_internals_are_not_followed(load, monkeypatch):
    """Installed libraries are keyed by their versions elsewhere: a change inside one
    (here a module global that textwrap.dedent reads) leaves the digest alone."""
    import re
    import textwrap as tw

    m = load("""
    from textwrap import dedent

    def f(s):
        return dedent(s)
    """)
    before = fp(m)
    monkeypatch.setattr(tw, "_whitespace_only_re", re.compile("^[ \t]+$", re.MULTILINE | re.DOTALL))
    assert fp(m) == before


def test_a_builtin_function_bound_to_a_name_is_keyed(load):
    source = """
    import math

    OP = math.{name}

    def f(x):
        return OP(x)
    """
    assert fp(load(source.format(name="sin"))) != fp(load(source.format(name="cos")))


# --- functools.partial ----------------------------------------------------------------------------


def scaled_sum(x, a=0.0, b=0.0):
    return a * x + b


def test_partial_arguments_are_followed(load):
    assert fingerprint(functools.partial(scaled_sum, 1.0, 2.0)) == fingerprint(functools.partial(scaled_sum, 1.0, 2.0))
    assert fingerprint(functools.partial(scaled_sum, 1.0, 2.0)) != fingerprint(functools.partial(scaled_sum, 1.0, 3.0))
    assert fingerprint(functools.partial(scaled_sum, a=2.0)) != fingerprint(functools.partial(scaled_sum, a=3.0))
    # the wrapped function, and a function passed as an argument, are followed
    a, b = load(USES_HELPER.format(k=1)), load(USES_HELPER.format(k=2))
    assert fingerprint(functools.partial(a.f, 1.0)) != fingerprint(functools.partial(b.f, 1.0))
    assert fingerprint(functools.partial(make_composed, a.helper)) != fingerprint(functools.partial(make_composed, b.helper))


def test_partial_keyword_names_are_keyed():
    assert fingerprint(functools.partial(scaled_sum, a=2.0)) != fingerprint(functools.partial(scaled_sum, b=2.0))


# --- jax wrappers ---------------------------------------------------------------------------------

CUSTOM_JVP = """
import jax
import jax.numpy as jnp

@jax.custom_jvp
def f(x):
    return jnp.{primal}(x)

@f.defjvp
def f_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return f(x), {k} * jnp.cos(x) * t
"""


def test_custom_jvp_rule_edits_change_the_digest(load):
    base = fp(load(CUSTOM_JVP.format(primal="sin", k=1.0)))
    assert fp(load(CUSTOM_JVP.format(primal="sin", k=1.0))) == base
    assert fp(load(CUSTOM_JVP.format(primal="sin", k=2.0))) != base  # the rule
    assert fp(load(CUSTOM_JVP.format(primal="tan", k=1.0))) != base  # the primal


def test_custom_jvp_defjvps_rule_edits_change_the_digest(load):
    source = """
    import jax
    import jax.numpy as jnp

    @jax.custom_jvp
    def f(x):
        return jnp.sin(x)

    f.defjvps(lambda t, ans, x: {k} * jnp.cos(x) * t)
    """
    assert fp(load(source.format(k=1.0))) != fp(load(source.format(k=2.0)))


def test_custom_vjp_rule_edits_change_the_digest(load):
    source = """
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    def f_fwd(x):
        return f(x), x

    def f_bwd(x, g):
        return ({k} * jnp.cos(x) * g,)

    f.defvjp(f_fwd, f_bwd)
    """
    assert fp(load(source.format(k=1.0))) != fp(load(source.format(k=2.0)))


def test_jit_wrapped_code_is_followed(load):
    a, b = load(USES_HELPER.format(k=1)), load(USES_HELPER.format(k=2))
    assert fingerprint(jax.jit(a.f)) != fingerprint(jax.jit(b.f))
    assert fingerprint(jax.jit(a.f)) == fingerprint(jax.jit(load(USES_HELPER.format(k=1)).f))


def test_a_jax_library_function_is_keyed_by_name():
    assert fingerprint(jnp.sin) == fingerprint(jnp.sin)
    assert fingerprint(jnp.sin) != fingerprint(jnp.cos)
    assert fingerprint(np.sin) != fingerprint(np.cos)


def test_fingerprints_are_the_same_in_every_process():
    """What the caches are keyed by must not depend on the process (a memory address in
    a repr, a set's order): two processes give every catalog variant, reference and the
    code that measures, blames and times the same digests."""
    import subprocess
    import sys

    script = """
from rulelab.core.fingerprint import fingerprint
from rulelab.jaxrun import cost
from rulelab.model.case import cases
from rulelab.runs import sampled, study
from rulelab.scoring.blame import blame_job
for c in cases():
    print(c.name, fingerprint(c.reference, *c.derivatives.values()), *(fingerprint(v.fn) for v in c.variants.values()))
print(fingerprint(blame_job), fingerprint(sampled.measure_group, sampled.group_keys), fingerprint(cost.target, cost.measure, study.timing_rows))
"""
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300) for _ in range(2)]
    assert runs[0].returncode == 0, runs[0].stderr[-2000:]
    assert len(runs[0].stdout.splitlines()) > 30
    assert runs[0].stdout == runs[1].stdout


def test_registering_a_case_leaves_the_digest_of_the_code_that_looks_cases_up_unchanged(registered):
    """The cache of measured results keys every group by the code that measures (which
    looks cases up by name): loading a user's module must not make the catalog's
    entries miss."""
    import rulelab
    from rulelab.runs import sampled
    from rulelab.scoring.blame import blame_job

    before = fingerprint(sampled.measure_group), fingerprint(blame_job)
    registered(rulelab.make_case("tregistered", "x", ("x",), rulelab.REALS, lambda mp, x: x, {"naive": lambda x: x}, source="test"))
    assert (fingerprint(sampled.measure_group), fingerprint(blame_job)) == before
