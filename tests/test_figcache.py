"""Report figures are drawn once per content: same data, no drawing; changed data,
drawn again; a damaged or unwritable cache costs only the drawing."""

import numpy as np
import pandas as pd
import pytest

from rulelab.report import figcache, figures


@pytest.fixture
def counted(tmp_path, monkeypatch):
    monkeypatch.setenv("RULELAB_CACHE", str(tmp_path))
    calls = []

    @figcache.cached
    def figure(df, *, title):
        calls.append(title)
        return None if df.empty else f"{title}:{df['y'].sum()}".encode()

    return figure, calls


def frame(y):
    return pd.DataFrame({"x": ["a", "b"], "y": np.array(y, dtype=float)})


def test_the_same_content_is_drawn_once(counted):
    figure, calls = counted
    first = figure(frame([1.0, 2.0]), title="t")
    again = figure(frame([1.0, 2.0]), title="t")
    assert first == again == b"t:3.0"
    assert calls == ["t"]


@pytest.mark.parametrize("change", [
    lambda: (frame([1.0, 2.5]), "t"),                      # one value
    lambda: (frame([1.0, 2.0]), "u"),                      # a keyword
    lambda: (frame([1.0, 2.0]).astype({"y": "float32"}), "t"),  # a dtype
    lambda: (frame([1.0, 2.0]).rename(columns={"y": "z"}).assign(y=[1.0, 2.0]), "t"),  # a column
])
def test_any_change_draws_again(counted, change):
    figure, calls = counted
    figure(frame([1.0, 2.0]), title="t")
    df, title = change()
    figure(df, title=title)
    assert len(calls) == 2


def test_nothing_to_draw_is_remembered_as_nothing(counted):
    figure, calls = counted
    assert figure(pd.DataFrame({"y": []}), title="t") is None
    assert figure(pd.DataFrame({"y": []}), title="t") is None
    assert calls == ["t"]


def test_a_damaged_cache_entry_is_drawn_again(counted, tmp_path):
    figure, calls = counted
    figure(frame([1.0, 2.0]), title="t")
    for f in (tmp_path / "figures").rglob("*.png"):
        f.write_bytes(b"")
    assert figure(frame([1.0, 2.0]), title="t") == b"t:3.0"
    assert len(calls) == 2


def test_an_unwritable_cache_still_gives_the_figure(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RULELAB_CACHE", str(blocker))
    df = pd.DataFrame({"group": ["a", "b"], "bar": ["v", "v"], "value": [1.0, 2.0]})
    image = figures.bars(df, group="group", bar="bar", value="value", panel=None, ylabel="y", title="t")
    assert image is not None and image.startswith(b"\x89PNG")


def test_a_case_page_of_unchanged_rows_is_made_once_and_a_changed_row_makes_it_again(tmp_path, monkeypatch):
    from helpers import Spec, standard_specs, write_run

    from rulelab.report import build

    made = []
    real = build._case_job
    monkeypatch.setattr(build, "_case_job", lambda job: made.append(job[1]) or real(job))
    specs = standard_specs()
    first = build.build_report([write_run(tmp_path / "r1", specs)], None, tmp_path / "a", workers=1)
    assert sorted(made) == ["pair", "toy"]
    made.clear()
    # another run of the same rows (another run id, another start): the pages come from the cache, the same bytes
    second = build.build_report([write_run(tmp_path / "r2", specs, started="2026-02-01T00:00:00+00:00")], None, tmp_path / "b", workers=1)
    assert made == []
    for page in ("case-toy.html", "case-pair.html"):
        assert (first.parent / page).read_bytes() == (second.parent / page).read_bytes()
    changed = [Spec("toy", "naive", "value", dtype="float32", ulp=2, big_from=4) if (s.case, s.variant, s.transform, s.dtype) == ("toy", "naive", "value", "float32") else s
               for s in specs]
    build.build_report([write_run(tmp_path / "r3", changed)], None, tmp_path / "c", workers=1)
    assert made == ["toy"]
