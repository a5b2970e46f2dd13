"""Tests for the report's figures (rulelab.report.figures): they render as PNG, mark
failure regions, and place inputs on the symmetric binade axis."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from helpers import standard_specs, write_asv, write_run

from rulelab.report import figures
from rulelab.report.load import load_accuracy, load_asv

SHADE = np.array([0.88 + 0.12 * 0xA5 / 255, 0.88, 0.88 + 0.12 * 0x26 / 255])
"""Colour of a binade shaded as failing (FAIL_COLOUR at alpha 0.12 on white)."""


def decode(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert image.shape[0] > 50 and image.shape[1] > 100
    return image


def shaded_pixels(image: np.ndarray) -> int:
    return int((np.abs(image[..., :3] - SHADE).max(axis=-1) < 0.01).sum())


@pytest.fixture
def acc(tmp_path: Path):
    return load_accuracy([write_run(tmp_path / "run", standard_specs())])


def test_accuracy_figure_shades_nonfinite_binades(acc) -> None:
    b = acc.binned[(acc.binned["case"] == "toy") & (acc.binned["transform"] == "grad")]
    s = acc.samples[(acc.samples["case"] == "toy") & (acc.samples["transform"] == "grad")]
    panels = [("float32", "cpu"), ("bfloat16", "cpu")]
    kw = {"column": "in0", "argument": "x", "title": "grad"}
    failing = decode(figures.accuracy_figure(b, s, ["naive", "custom_jvp", "library"], panels, **kw))
    fine = decode(figures.accuracy_figure(b[b["variant"] != "naive"], s[s["variant"] != "naive"], ["custom_jvp", "library"], panels, **kw))
    assert shaded_pixels(failing) > 1000
    assert shaded_pixels(fine) == 0
    assert plt.get_fignums() == []  # drawn without pyplot: nothing left open


def test_accuracy_figure_with_one_table(acc) -> None:
    b = acc.binned[(acc.binned["case"] == "toy") & (acc.binned["transform"] == "grad")]
    s = acc.samples[(acc.samples["case"] == "toy") & (acc.samples["transform"] == "grad")]
    kw = {"column": "in0", "argument": "x", "title": "grad"}
    both = decode(figures.accuracy_figure(b, s, ["naive"], [("float32", "cpu")], **kw))
    errors_only = decode(figures.accuracy_figure(b, s.iloc[:0], ["naive"], [("float32", "cpu")], **kw))
    values_only = decode(figures.accuracy_figure(b.iloc[:0], s, ["naive"], [("float32", "cpu")], **kw))
    assert errors_only.shape[0] < both.shape[0] and values_only.shape[0] < both.shape[0]
    assert both.shape[1] <= 1400


def test_empty_inputs_give_no_figure() -> None:
    kw = {"column": "in0", "argument": "x", "title": "t"}
    assert figures.accuracy_figure(pd.DataFrame(), pd.DataFrame(), ["a"], [("float32", "cpu")], **kw) is None
    empty = pd.DataFrame({"g": ["a"], "b": ["v"], "y": [math.nan]})
    assert figures.bars(empty, group="g", bar="b", value="y", panel=None, ylabel="", title="") is None


def test_spans_merge_neighbouring_binades() -> None:
    assert figures.spans(np.array([3.5, 1.5, 2.5, 7.5])) == [(1.0, 3.0), (7.0, 1.0)]
    assert figures.spans(np.array([])) == []


def test_binade_axis_positions() -> None:
    axis = figures.BinadeAxis(-3.0, 5.0)
    pos = axis.position(np.array([1, -1, 1, 1]), np.array([-3.0, -3.0, -np.inf, np.inf]))
    assert pos.tolist() == [1.5, -1.5, 0.0, 11.0]  # binade 5 spans [9, 10); infinity one gap beyond
    assert axis.of(np.array([0.125, -0.25, 0.0, -np.inf, 0.0625])).tolist() == [1.0, -2.0, 0.0, -11.0, 0.5]


def test_performance_figures_render(tmp_path: Path) -> None:
    bench = load_asv(write_asv(tmp_path))
    r = bench.results
    t = r[(r["benchmark"] == "bench_time.toy.time_call") & (r["status"] == "ok") & (r["size"] == 65536)]
    decode(figures.bars(t, group="transform", bar="variant", value="value", panel="dtype", ylabel="s", title="time", logy=True))
    s = r[(r["case"] == "newton") & (r["status"] == "ok")]
    decode(figures.lines(s, x="steps", line="variant", value="value", panel="metric", xlabel="steps", ylabel="", title="steps", logx=True, logy=True))


def test_plain_tick_labels() -> None:
    assert figures.power(2, -126) == "2\u207b\u00b9\u00b2\u2076"
    assert [figures._symlog_label(v) for v in (0, 10, -1000, 1e6, 3)] == ["0", "10", "-1000", "10\u2076", ""]
    assert [figures._log_label(v) for v in (2e-6, 5, 3, 1e9)] == ["2\u00d710\u207b\u2076", "5", "", "1\u00d710\u2079"]


def test_hbar_rows_sort_groups_and_leave_no_empty_slots() -> None:
    # Group "slow" has median 300, "fast" 2, "mid" 20: slowest first. "fast" lacks
    # variant b, so it gets one row, not two; a non-finite value gets no row.
    df = pd.DataFrame({
        "case": ["fast", "mid", "mid", "slow", "slow", "fast"],
        "variant": ["a", "b", "a", "a", "b", "b"],
        "us": [2.0, 30.0, 10.0, 200.0, 400.0, math.nan],
    })
    rows = figures.hbar_rows(df, group="case", bar="variant", value="us", order=["a", "b"])
    assert [(r.group, r.bar) for r in rows] == [("slow", "a"), ("slow", "b"), ("mid", "a"), ("mid", "b"), ("fast", "a")]
    ys = [r.y for r in rows]
    assert ys == sorted(ys) and len(set(ys)) == len(ys)
    # Rows of one group are one apart; a new group starts half a row further.
    assert np.diff(ys).tolist() == [1.0, 1.5, 1.0, 1.5]


def test_hbars_height_grows_with_the_rows() -> None:
    def height(n: int) -> int:
        df = pd.DataFrame({"case": [f"c{i}" for i in range(n)], "variant": "naive", "us": np.arange(1.0, n + 1), "t": "value"})
        return decode(figures.hbars(df, group="case", bar="variant", value="us", panel="t", xlabel="us", title="t", logx=True)).shape[0]

    few, many = height(5), height(60)
    # 55 more rows of HBAR_ROW_H inches plus half a row of gap each, at the figures' dpi.
    assert many - few == pytest.approx(55 * 1.5 * figures.HBAR_ROW_H * figures.DPI, abs=4)


def test_a_long_legend_wraps_inside_a_single_panel(acc) -> None:
    # three and six variants of long names under one panel 4.2 inches wide (and the
    # "non-finite results" entry): two entries fit side by side, so the legends take 2 and 4
    # rows; no legend text may reach the image's edges (cut off), and the six-variant image
    # is taller by three strip rows and two legend rows
    b = acc.binned[(acc.binned["case"] == "toy") & (acc.binned["transform"] == "grad") & (acc.binned["variant"] == "naive")]
    kw = {"column": "in0", "argument": "x", "title": "grad"}
    names = [f"custom_jvp_defjvps_{i}" for i in range(6)]
    assert figures.legend_columns(4.2, [*names, "non-finite results"]) == 2
    images = []
    for n in (3, 6):
        many = pd.concat([b.assign(variant=v) for v in names[:n]], ignore_index=True)
        images.append(decode(figures.accuracy_figure(many, many.iloc[:0], names[:n], [("float32", "cpu")], **kw)))
    for img in images:
        assert (img[:, 0, :3] == 1.0).all() and (img[:, -1, :3] == 1.0).all()
    assert images[0].shape[1] == images[1].shape[1]
    grown = (3 * figures.STRIP_ROW + 2 * figures.LEGEND_ROW) * figures.DPI
    assert abs(images[1].shape[0] - images[0].shape[0] - grown) <= 1
