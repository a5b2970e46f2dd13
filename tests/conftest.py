import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own reference cache unless it sets one itself, and measures
    everything: a second run in a test is compared with the first, so the cache of
    measured results is off unless a test turns it on (test_result_cache.py)."""
    if "RULELAB_CACHE" not in os.environ or os.environ.get("RULELAB_TEST_SHARED_CACHE") != "1":
        monkeypatch.setenv("RULELAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("RULELAB_NO_CACHE", "1")


@pytest.fixture
def registered():
    """Register cases for one test (replacing any of the same name), removed after it."""
    import rulelab

    made = []

    def reg(case):
        rulelab.register(case, replace=True)
        made.append(case.name)
        return case

    yield reg
    for n in made:
        rulelab.unregister(n)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Environment of command-line subprocess runs: one reference cache per test module."""
    return {**os.environ, "RULELAB_CACHE": str(tmp_path_factory.mktemp("cache")), "RULELAB_TEST_SLOW": "0.3", "RULELAB_NO_CACHE": "1"}


collect_ignore = ["user_project"]  # a user's own project, run by test_testing.py in a subprocess
