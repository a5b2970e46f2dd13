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
