"""matplotlib figures as PNG bytes: dULP per input binade (failure regions marked), the
computed value or derivative against the reference, grouped bars and line charts for
benchmark results.

Figures are drawn on their own Agg canvas, never through pyplot, so building a report
leaves no open figures and changes no global backend; they are sized for a page (about
a thousand pixels wide) so a whole report stays a few megabytes.

Inputs are placed on a symmetric binade axis: a finite nonzero x sits at
``sign(x) * (log2|x| - lo + 1)`` where ``lo`` is the smallest binade shown, so every
binade (subnormals included) gets the same width, zero sits at 0 and infinities just
beyond the largest binade.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator
from matplotlib.transforms import blended_transform_factory
from PIL import Image

from rulelab.report.figcache import cached
from rulelab.store.vocabulary import Bucket

DPI = 80
PANEL_W, PANEL_H = 4.2, 2.8
MAX_W = 16.0
FAIL_COLOUR = "#a50026"
STYLES = ("-", "--", "-.", ":")
"""Line styles by variant, with widths decreasing, so coinciding lines stay visible."""


_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def power(base: int, exponent: int, sign: str = "") -> str:
    """``base^exponent`` in plain text with superscript digits (no mathtext: it is
    slow to lay out and these labels are many)."""
    return f"{sign}{base}{str(int(exponent)).translate(_SUPERSCRIPT)}"


def _symlog_label(y: float, _pos: int = 0) -> str:
    if y == 0:
        return "0"
    e = math.log10(abs(y))
    if abs(e - round(e)) > 1e-9:
        return ""
    e = int(round(e))
    sign = "-" if y < 0 else ""
    return f"{sign}{10 ** e:g}" if -2 <= e <= 3 else power(10, e, sign)


def _log_label(y: float, _pos: int = 0) -> str:
    """Labels at 1, 2 and 5 times powers of ten, so a short log axis still reads."""
    if y <= 0:
        return ""
    e = math.floor(math.log10(y) + 1e-9)
    m = y / 10**e
    if not any(abs(m - k) < 1e-6 for k in (1, 2, 5)):
        return ""
    return f"{y:g}" if -3 <= e <= 4 else f"{m:g}\u00d7{power(10, e)}"


def _plain_log(ax: Axes, axis: str = "y") -> None:
    """Label a log axis (``y`` or ``x``) in plain text at 1, 2 and 5 times powers of ten."""
    a = ax.yaxis if axis == "y" else ax.xaxis
    a.set_major_formatter(FuncFormatter(_log_label))
    a.set_minor_formatter(FuncFormatter(_log_label))


def _plain_symlog(ax: Axes, quiet_below: float = 0.0) -> None:
    """Label a symlog y axis at powers of ten in plain text, none but 0 below
    ``quiet_below`` (where labels would crowd the zero); no minor ticks (a symlog axis
    spanning many decades has hundreds, and drawing them dominates)."""
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, pos: "" if 0 < abs(y) < quiet_below else _symlog_label(y, pos)))
    ax.yaxis.set_minor_locator(NullLocator())


PALETTE = 128
"""Colours kept in each PNG: plots use a handful, and a palette image is a third the
size of full colour with no visible change."""


def png(fig: Figure, dpi: int = DPI) -> bytes:
    """Render ``fig`` (Agg) as a palette PNG."""
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    image = Image.fromarray(rgba[..., :3]).quantize(colors=PALETTE, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    image.save(buf, format="png")  # default compression: "optimize" is 10% smaller and 8x slower
    return buf.getvalue()


def colours(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per name (variants), in the order given."""
    cmap = matplotlib.colormaps["tab10"]
    return {n: to_hex(cmap(i % 10)) for i, n in enumerate(names)}


def _panels(n: int) -> tuple[Figure, list[Axes]]:
    """A row (or rows of four) of ``n`` panels with fixed margins for tick labels, a
    title above and a legend below (fixed margins: tight_layout costs more than the
    drawing)."""
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    width = min(PANEL_W * cols, MAX_W)
    height = PANEL_H * rows + 1.5
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, bottom=1.0 / height, top=1 - 0.5 / height, wspace=0.38, hspace=0.5)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


LEGEND_ROW = 0.18
"""Inches per row of the legend (fontsize 8)."""


def legend_columns(width: float, labels: Sequence[str], ncol: int = 8) -> int:
    """How many legend entries fit side by side in ``width`` inches (at most ``ncol``):
    an entry is its marker and gap (about half an inch) and its text (about 0.065 inch a
    character at fontsize 8), all as wide as the longest."""
    entry = 0.5 + 0.065 * max((len(str(t)) for t in labels), default=1)
    return max(1, min(len(labels), ncol, int(width // entry)))


def _finish(fig: Figure, handles: list[Any], title: str, ncol: int = 8) -> bytes:
    """Legend below the panels (as many columns as the width holds, at most ``ncol``;
    the figure grows by the rows beyond the first, the panels keeping their size), title
    above, then render."""
    cols = legend_columns(fig.get_figwidth(), [h.get_label() for h in handles], ncol)
    extra = (math.ceil(len(handles) / cols) - 1) * LEGEND_ROW if handles else 0.0
    if extra:
        w, h = fig.get_size_inches()
        sp = fig.subplotpars
        bottom, top = sp.bottom * h + extra, (1 - sp.top) * h
        fig.set_size_inches(w, h + extra)
        fig.subplots_adjust(bottom=bottom / (h + extra), top=1 - top / (h + extra))
    fig.legend(handles=handles, loc="lower center", ncol=cols, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title, fontsize=10)
    return png(fig)


@dataclass(frozen=True)
class BinadeAxis:
    """The symmetric binade axis of one panel: binades ``lo`` to ``hi`` shown."""

    lo: float
    hi: float

    def position(self, sign: np.ndarray, binade: np.ndarray) -> np.ndarray:
        """Centre of each (sign, binade) bin; zero at 0, infinity beyond ``hi``."""
        b = np.asarray(binade, dtype=np.float64)
        s = np.asarray(sign, dtype=np.float64)
        out = s * (b - self.lo + 1.5)
        out = np.where(b == -np.inf, 0.0, out)
        return np.where(b == np.inf, s * (self.hi - self.lo + 3.0), out)

    def of(self, x: np.ndarray) -> np.ndarray:
        """Position of inputs ``x`` (continuous within a binade)."""
        x = np.asarray(x, dtype=np.float64)
        ax = np.abs(x)
        s = np.where(np.signbit(x), -1.0, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log = np.log2(np.where(ax > 0, ax, 1.0))
        out = np.where(ax >= 2.0**self.lo, s * (log - self.lo + 1.0), s * ax / 2.0**self.lo)
        return np.where(np.isinf(x), s * (self.hi - self.lo + 3.0), out)

    def ticks(self, ax: Axes, negative: bool, infinite: bool) -> None:
        """Ticks at powers of two, ``0`` and ``inf`` where shown, thinned so that no
        two labels crowd each other."""
        span = self.hi - self.lo
        step = next((s for s in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if span / s <= 5), 1024)
        first = math.ceil(self.lo / step) * step
        far = self.hi - self.lo + 3.0
        ticks: list[tuple[float, str, int]] = [(0.0, "0", 0)]  # (position, label, priority)
        if infinite:
            ticks += [(far, "inf", 0)] + ([(-far, "-inf", 0)] if negative else [])
        for b in np.arange(first, self.hi + 1, step):
            ticks.append((b - self.lo + 1.0, power(2, b), 1))
            if negative:
                ticks.append((-(b - self.lo + 1.0), power(2, b, "-"), 1))
        extent = far if infinite else span + 2.0
        gap = (2 * extent if negative else extent) / 9
        kept: list[tuple[float, str, int]] = []
        for t in sorted(ticks, key=lambda t: (t[2], abs(t[0]))):
            if all(abs(t[0] - k[0]) >= gap for k in kept):
                kept.append(t)
        kept.sort()
        ax.set_xticks([t[0] for t in kept], [t[1] for t in kept], fontsize=7)


def _axis(binades: np.ndarray) -> BinadeAxis:
    finite = binades[np.isfinite(binades)]
    if finite.size == 0:
        return BinadeAxis(0.0, 0.0)
    return BinadeAxis(float(finite.min()), float(finite.max()))


def _binade(x: np.ndarray) -> np.ndarray:
    ax = np.abs(np.asarray(x, dtype=np.float64))
    ok = np.isfinite(ax) & (ax > 0)
    _, e = np.frexp(np.where(ok, ax, 1.0))
    return np.where(ok, e - 1.0, np.where(ax == 0, -np.inf, np.inf))


def spans(centres: np.ndarray, half: float = 0.5) -> list[tuple[float, float]]:
    """Merge intervals ``[c - half, c + half]`` into (start, width) runs."""
    out: list[list[float]] = []
    for c in np.unique(np.asarray(centres, dtype=np.float64)):
        if out and c - half <= out[-1][1] + 1e-9:
            out[-1][1] = c + half
        else:
            out.append([c - half, c + half])
    return [(a, b - a) for a, b in out]


def _strip_axes(ax: Axes, rows: int, title: str) -> Axes:
    """A thin axes above ``ax`` (shared x) with one row per variant for non-finite
    results, carrying the panel's title."""
    strip = ax.inset_axes((0.0, 1.03, 1.0, STRIP_ROW * rows / PANEL_H), sharex=ax)
    strip.set_ylim(rows - 0.5, -0.5)
    strip.set_yticks([])
    strip.tick_params(labelbottom=False, bottom=False)
    strip.set_ylabel("non-\nfinite", rotation=0, fontsize=6, ha="right", va="center")
    strip.set_title(title, fontsize=9)
    return strip


def _mark(strip: Axes, positions: np.ndarray, row: int, colour: str, half: float) -> None:
    runs = spans(positions, half)
    if runs:
        strip.broken_barh(runs, (row - 0.4, 0.8), color=colour)


def _panel_title(dtype: str, backend: str, panels: Sequence[tuple[str, str]]) -> str:
    return dtype if len({b for _, b in panels}) == 1 else f"{dtype} · {backend}"


STRIP_ROW = 0.09
"""Inches per variant in the non-finite strip."""


def _grid(rows: int, cols: int, strip_rows: int) -> tuple[Figure, list[list[Axes]]]:
    """``rows`` x ``cols`` panels sharing x per column, room above for the strips and
    the title and below for the legend (fixed margins)."""
    width = min(PANEL_W * cols, MAX_W)
    strip = STRIP_ROW * strip_rows + 0.1
    top, bottom, gap = 0.8 + strip, 0.95, 0.3
    height = top + bottom + rows * PANEL_H + (rows - 1) * gap
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, sharex="col")
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, bottom=bottom / height, top=1 - top / height, wspace=0.38, hspace=gap / PANEL_H)
    return fig, [list(r) for r in axes]


def _error_panel(ax: Axes, strip: Axes, d: pd.DataFrame, axis: BinadeAxis, variants: Sequence[str], col: Mapping[str, str]) -> None:
    ymax = 1.0
    failing: list[np.ndarray] = []
    for row, v in enumerate(variants):
        dv = d[d["variant"] == v]
        if dv.empty:
            continue
        x = axis.position(dv["sign"].to_numpy(), dv["binade"].to_numpy())
        y = dv["max_ulp"].to_numpy(dtype=np.float64)
        order = np.argsort(x)
        ax.plot(x[order], y[order], STYLES[row % len(STYLES)], marker=".", markersize=3, linewidth=max(2.6 - 0.4 * row, 0.8), color=col[v], alpha=0.9)
        if np.isfinite(y).any():
            ymax = max(ymax, float(np.nanmax(y[np.isfinite(y)])))
        bad = x[dv["nonfinite"].to_numpy() > 0]
        _mark(strip, bad, row, col[v], 0.5)
        failing.append(bad)
    for start, width in spans(np.concatenate(failing) if failing else np.array([])):
        ax.axvspan(start, start + width, color=FAIL_COLOUR, alpha=0.12, linewidth=0)
    ax.set_yscale("symlog", linthresh=1.0)
    _plain_symlog(ax)
    ax.set_ylim(-0.3, 10 ** (math.log10(max(ymax, 10.0)) + 0.5))
    ax.set_ylabel("max dULP per binade", fontsize=8)


def _values_panel(ax: Axes, strip: Axes | None, d: pd.DataFrame, column: str, axis: BinadeAxis, variants: Sequence[str], col: Mapping[str, str], line: bool) -> None:
    x_all = pd.to_numeric(d[column], errors="coerce").to_numpy(dtype=np.float64)
    ref = pd.to_numeric(d["ref_hi"], errors="coerce").to_numpy(dtype=np.float64)
    fin = np.isfinite(ref) & np.isfinite(x_all)
    nz = np.abs(ref[fin & (ref != 0)])
    linthresh = float(np.clip(nz.min(), 1e-300, 1.0)) if nz.size else 1.0  # log scale down to the smallest value
    if fin.any():
        rx, ry = axis.of(x_all[fin]), ref[fin]
        if line:
            order = np.argsort(rx, kind="stable")
            ax.plot(rx[order], ry[order], "-", color="#888", linewidth=2.5, alpha=0.6)
        else:
            ax.plot(rx, ry, "o", color="#888", markersize=4, alpha=0.4)
    tr = blended_transform_factory(ax.transData, ax.transAxes)
    for row, v in enumerate(variants):
        dv = d[d["variant"] == v]
        if dv.empty:
            continue
        x = axis.of(pd.to_numeric(dv[column], errors="coerce").to_numpy(dtype=np.float64))
        y = pd.to_numeric(dv["computed"], errors="coerce").to_numpy(dtype=np.float64)
        ok = np.isfinite(y)
        ax.plot(x[ok], y[ok], ".", color=col[v], markersize=2.5)
        bad = x[~ok & np.isfinite(x)]
        if bad.size:  # non-finite samples: ticks on the panel's top edge
            ax.plot(bad, np.full(bad.shape, 0.98), "|", color=col[v], markersize=6, transform=tr, clip_on=False)
            if strip is not None:
                _mark(strip, bad, row, col[v], 0.3)
    ymax = float(np.nanmax(np.abs(ref[fin]))) if fin.any() else 1.0
    ymax = ymax if np.isfinite(ymax) and ymax > 0 else 1.0
    top = 10 ** min(math.log10(max(ymax, linthresh)) + 0.5, 307.0)
    # the linear part around 0 gets about a tenth of the height, so its labels do not collide
    ax.set_yscale("symlog", linthresh=linthresh, linscale=max(1.0, math.log10(top / linthresh) / 6))
    _plain_symlog(ax, quiet_below=10 * linthresh)
    ax.set_ylim(-top if (ref[fin] < 0).any() else -linthresh, top)
    ax.set_ylabel("computed, reference", fontsize=8)


def _quiet(fn: Callable[..., bytes | None]) -> Callable[..., bytes | None]:
    """Run a figure builder with numpy's overflow warnings off: a symlog axis that spans
    most of the float range overflows harmlessly while matplotlib autoscales it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> bytes | None:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return fn(*args, **kwargs)

    return wrapper


@cached
@_quiet
def accuracy_figure(binned: pd.DataFrame, samples: pd.DataFrame, variants: Sequence[str], panels: Sequence[tuple[str, str]], *, column: str, argument: str, title: str, line: bool = True) -> bytes | None:
    """One transform of one case, a column per (dtype, backend): above, the max dULP
    per binade of ``argument`` (symlog), a line per variant, binades with non-finite
    results shaded and marked per variant in the strip on top; below, the computed
    values (dots) against the mpmath reference (grey) over the stored samples (input
    column ``column``). Either row is left out when its table is empty."""
    have_samples = not samples.empty and column in samples
    if binned.empty and not have_samples:
        return None
    kinds = (["error"] if not binned.empty else []) + (["values"] if have_samples else [])
    col = colours(variants)
    fig, grid = _grid(len(kinds), len(panels), len(variants))
    for j, (dtype, backend) in enumerate(panels):
        b = binned[(binned["dtype"] == dtype) & (binned["backend"] == backend) & (binned["count"] > 0)] if not binned.empty else binned
        smp = samples[(samples["dtype"] == dtype) & (samples["backend"] == backend)] if have_samples else samples
        xs = pd.to_numeric(smp[column], errors="coerce").to_numpy(dtype=np.float64) if have_samples else np.array([])
        binades = np.concatenate([b["binade"].to_numpy(dtype=np.float64) if not b.empty else np.array([]), _binade(xs[np.isfinite(xs) & (xs != 0)])])
        axis = _axis(binades)
        strip = _strip_axes(grid[0][j], len(variants), _panel_title(dtype, backend, panels))
        negative = bool((b["sign"] < 0).any()) if not b.empty else False
        infinite = bool((b["binade"] == np.inf).any()) if not b.empty else False
        for i, kind in enumerate(kinds):
            ax = grid[i][j]
            if kind == "error":
                _error_panel(ax, strip, b, axis, variants, col)
            else:
                _values_panel(ax, None if "error" in kinds else strip, smp, column, axis, variants, col, line)
                negative = negative or bool((xs < 0).any())
                infinite = infinite or bool(np.isinf(xs).any())
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(True, alpha=0.3)
            if j:
                ax.set_ylabel("")
        axis.ticks(grid[-1][j], negative, infinite)
        grid[-1][j].set_xlabel(argument, fontsize=8)
    handles: list[Any] = [Line2D([], [], color=col[v], marker=".", linestyle=STYLES[i % len(STYLES)], label=v) for i, v in enumerate(variants)]
    if have_samples:
        handles.append(Line2D([], [], color="#888", linewidth=2.5, label="reference (mpmath)"))
    handles.append(Patch(color=FAIL_COLOUR, alpha=0.25, label="non-finite results"))
    return _finish(fig, handles, title)


@cached
@_quiet
def error_map(cells: pd.DataFrame, variants: Sequence[str], *, args: Sequence[str], title: str) -> bytes | None:
    """The error map of one transform of a case of two arguments in one dtype on one
    backend: a panel per variant, the max dULP per pair of (sign, binade) of the two
    arguments as a colour (log scale: exact is the palest), cells with non-finite results
    (a wrong non-finite or an unexpected finite) in the failure colour. Both axes are
    symmetric binade axes; an empty cell had no points (outside the domain)."""
    cells = cells[cells["count"] > 0]
    present = [v for v in variants if (cells["variant"] == v).any()]
    if cells.empty or not present:
        return None
    axes = []
    for k in ("0", "1"):
        b = cells[f"binade{k}"].to_numpy(dtype=np.float64)
        axis = _axis(b)
        pos = axis.position(cells[f"sign{k}"].to_numpy(), b)
        axes.append((axis, pos, bool((cells[f"sign{k}"] < 0).any()), bool(np.isinf(b).any())))
    (ax_x, px, neg_x, inf_x), (ax_y, py, neg_y, inf_y) = axes
    ux, uy = np.unique(px), np.unique(py)
    fig, panels = _panels(len(present))
    width = fig.get_figwidth()
    fig.subplots_adjust(right=1 - 1.1 / width)  # (room for the colour bar)
    cmap = matplotlib.colormaps["viridis_r"].with_extremes(bad="white")
    top = max(float(np.nanmax(cells["max_ulp"].to_numpy(dtype=np.float64), initial=1.0)), 1.0)
    norm = matplotlib.colors.LogNorm(vmin=1.0, vmax=max(top + 1.0, 2.0))
    image = None
    nonfinite = (cells[Bucket.WRONG_NONFINITE.column] + cells[Bucket.UNEXPECTED_FINITE.column]).to_numpy()
    for ax, v in zip(panels, present):
        sel = (cells["variant"] == v).to_numpy()
        grid = np.full((uy.size, ux.size), np.nan)
        i, j = np.searchsorted(uy, py[sel]), np.searchsorted(ux, px[sel])
        grid[i, j] = cells["max_ulp"].to_numpy(dtype=np.float64)[sel] + 1.0
        bad = np.zeros(grid.shape, dtype=bool)
        bad[i, j] = nonfinite[sel] > 0
        # one column (row) per (sign, binade) present, each at its axis position
        ex = np.concatenate([ux - 0.5, [ux[-1] + 0.5]])
        ey = np.concatenate([uy - 0.5, [uy[-1] + 0.5]])
        image = ax.pcolormesh(ex, ey, np.ma.masked_invalid(grid), cmap=cmap, norm=norm, shading="flat")
        if bad.any():  # (a marker, not only the cell: one binade is less than a pixel wide)
            ax.pcolormesh(ex, ey, np.ma.masked_where(~bad, np.ones(grid.shape)), cmap=matplotlib.colors.ListedColormap([FAIL_COLOUR]), shading="flat")
            rows, cols = np.nonzero(bad)
            ax.scatter(ux[cols], uy[rows], marker="s", s=14, color=FAIL_COLOUR, linewidths=0, clip_on=False)
        ax.set_xlim(ex[0], ex[-1])
        ax.set_ylim(ey[0], ey[-1])
        ax.set_title(v, fontsize=9)
        ax_x.ticks(ax, neg_x, inf_x)
        ax.set_xlabel(args[0], fontsize=8)
        ax.set_ylabel(args[1], fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        _binade_yticks(ax, ax_y, neg_y, inf_y)
    if image is not None:
        sp = fig.subplotpars
        bar = fig.colorbar(image, cax=fig.add_axes((1 - 0.95 / width, sp.bottom, 0.12 / width, sp.top - sp.bottom)))
        bar.set_label("max dULP + 1", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return _finish(fig, [Patch(color=FAIL_COLOUR, label="non-finite results"), Patch(facecolor="white", edgecolor="#999", label="no points")], title)


def _binade_yticks(ax: Axes, axis: BinadeAxis, negative: bool, infinite: bool) -> None:
    """:meth:`BinadeAxis.ticks` on the y axis (drawn on a scratch x axis, then moved)."""
    scratch = ax.figure.add_axes((0, 0, 0, 0))
    axis.ticks(scratch, negative, infinite)
    ax.set_yticks(scratch.get_xticks(), [t.get_text() for t in scratch.get_xticklabels()], fontsize=7)
    scratch.remove()


@cached
def bars(df: pd.DataFrame, *, group: str, bar: str, value: str, panel: str | None, ylabel: str, title: str, logy: bool = False, order: Sequence[str] = (), panel_labels: Mapping[object, str] | None = None) -> bytes | None:
    """Grouped bars: x groups by ``group``, a bar per ``bar`` value (coloured
    consistently), a panel per ``panel`` value."""
    df = df[np.isfinite(pd.to_numeric(df[value], errors="coerce"))]
    if df.empty:
        return None
    bars_ = list(order) or list(dict.fromkeys(df[bar]))
    bars_ = [b for b in bars_ if b in set(df[bar])]
    col = colours(bars_)
    keys = list(dict.fromkeys(df[panel])) if panel else [None]
    fig, axes = _panels(len(keys))
    width = 0.8 / max(len(bars_), 1)
    for ax, key in zip(axes, keys):
        d = df if key is None else df[df[panel] == key]
        groups = list(dict.fromkeys(d[group]))
        for i, b in enumerate(bars_):
            vals = np.asarray([d.loc[(d[group] == g) & (d[bar] == b), value].astype(float).max() for g in groups], dtype=float)
            xs = np.arange(len(groups)) + (i - (len(bars_) - 1) / 2) * width
            shown = np.isfinite(vals) & ((vals > 0) if logy else True)
            ax.bar(xs[shown], vals[shown], width=width, color=col[b], label=str(b))
        ax.set_xticks(np.arange(len(groups)), [str(g) for g in groups], fontsize=8)
        if logy:
            ax.set_yscale("log")
            _plain_log(ax)
            positive = pd.to_numeric(d[value], errors="coerce")
            positive = positive[positive > 0]
            if len(positive):  # bars start at the bottom edge; leave room above the tallest
                ax.set_ylim(float(positive.min()) / 2, float(positive.max()) * 1.5)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(True, axis="y", alpha=0.3)
        if key is not None:
            ax.set_title(panel_labels.get(key, str(key)) if panel_labels else str(key), fontsize=9)
    handles = [Patch(color=col[b], label=str(b)) for b in bars_]
    return _finish(fig, handles, title)


@dataclass(frozen=True)
class HBarRow:
    """One bar of :func:`hbars`: its ``group`` and ``bar`` labels and its ``y`` position
    (rows counted from the top, a gap of half a row between groups)."""

    group: Any
    bar: Any
    y: float


def hbar_rows(df: pd.DataFrame, *, group: str, bar: str, value: str, order: Sequence[str] = ()) -> list[HBarRow]:
    """The rows of a horizontal grouped bar chart: groups sorted by their median
    ``value``, largest first, each with a row for every ``bar`` value it has (in
    ``order``, else first seen), so no group reserves space for bars it lacks."""
    vals = pd.to_numeric(df[value], errors="coerce")
    d = df[np.isfinite(vals)].assign(_v=vals)
    names = list(order) or list(dict.fromkeys(d[bar]))
    rank = {n: i for i, n in enumerate(names)}
    medians = d.groupby(group, sort=False)["_v"].median().sort_values(ascending=False, kind="stable")
    rows: list[HBarRow] = []
    y = 0.0
    for g in medians.index:
        present = sorted(set(d.loc[d[group] == g, bar]), key=lambda b: rank.get(b, len(rank)))
        for b in present:
            rows.append(HBarRow(g, b, y))
            y += 1.0
        y += 0.5
    return rows


HBAR_ROW_H = 0.11
"""Inches per bar row of :func:`hbars`: eight-point labels never overlap."""


@cached
def hbars(df: pd.DataFrame, *, group: str, bar: str, value: str, panel: str | None, xlabel: str, title: str, logx: bool = False, order: Sequence[str] = ()) -> bytes | None:
    """Horizontal grouped bars, readable however many groups there are: a row per
    ``group`` x ``bar`` (:func:`hbar_rows`, groups sorted by value), the group's label
    beside its rows, a bar colour per ``bar`` value, a panel per ``panel`` value side
    by side on the same rows."""
    df = df[np.isfinite(pd.to_numeric(df[value], errors="coerce"))]
    if df.empty:
        return None
    rows = hbar_rows(df, group=group, bar=bar, value=value, order=order)
    names = list(dict.fromkeys(r.bar for r in rows))
    col = colours([str(n) for n in names])
    keys = list(dict.fromkeys(df[panel])) if panel else [None]
    span = rows[-1].y + 1.0
    width = min(1.6 + PANEL_W * len(keys), MAX_W)
    height = span * HBAR_ROW_H + 1.0 + 0.2 * math.ceil(len(names) / max(1, int(width // 1.9)))
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(keys), squeeze=False, sharey=True)[0]
    fig.subplots_adjust(left=1.5 / width, right=1 - 0.2 / width, bottom=(height - span * HBAR_ROW_H - 0.6) / height + 0.1 / height, top=1 - 0.6 / height, wspace=0.08)
    centres = {}
    for r in rows:
        centres.setdefault(r.group, []).append(r.y)
    for ax, key in zip(axes, keys):
        d = df if key is None else df[df[panel] == key]
        got = d.assign(_v=pd.to_numeric(d[value], errors="coerce")).groupby([group, bar], sort=False)["_v"].max()
        shown = [(r, got.get((r.group, r.bar), np.nan)) for r in rows]
        shown = [(r, v) for r, v in shown if np.isfinite(v) and (v > 0 or not logx)]
        ax.barh([r.y for r, _ in shown], [v for _, v in shown], height=0.85, color=[col[str(r.bar)] for r, _ in shown])
        if logx:
            ax.set_xscale("log")
            _plain_log(ax, axis="x")
            if max(v for _, v in shown) > 1e3 * min(v for _, v in shown):  # minor labels would collide
                ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(span - 0.5, -1.0)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(True, axis="x", alpha=0.3)
        if key is not None:
            ax.set_title(str(key), fontsize=9)
    axes[0].set_yticks([float(np.mean(ys)) for ys in centres.values()], [str(g) for g in centres], fontsize=8)
    axes[0].tick_params(axis="y", length=0)
    handles = [Patch(color=col[str(n)], label=str(n)) for n in names]
    return _finish(fig, handles, title, ncol=max(1, int(width // 1.9)))


@cached
def lines(df: pd.DataFrame, *, x: str, line: str, value: str, panel: str | None, xlabel: str, ylabel: str, title: str, logx: bool = False, logy: bool = False, xlabels: Sequence[str] | None = None, panel_labels: Mapping[object, str] | None = None) -> bytes | None:
    """A line per ``line`` value of ``value`` against ``x``, a panel per ``panel``
    value. ``xlabels`` names categorical x positions 0, 1, ... (commits)."""
    df = df[np.isfinite(pd.to_numeric(df[value], errors="coerce"))]
    if df.empty:
        return None
    names = list(dict.fromkeys(df[line]))
    col = colours([str(n) for n in names])
    keys = list(dict.fromkeys(df[panel])) if panel else [None]
    fig, axes = _panels(len(keys))
    for ax, key in zip(axes, keys):
        d = df if key is None else df[df[panel] == key]
        for n in names:
            dn = d[d[line] == n].sort_values(x)
            if dn.empty:
                continue
            ax.plot(dn[x].astype(float), dn[value].astype(float), "-o", markersize=3, color=col[str(n)], label=str(n))
        if logx:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        if logy:
            ax.set_yscale("log")
            _plain_log(ax)
        if xlabels is not None:
            ax.set_xticks(range(len(xlabels)), xlabels, fontsize=7, rotation=45, ha="right")
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if key is not None:
            ax.set_title(panel_labels.get(key, str(key)) if panel_labels else str(key), fontsize=9)
    handles = [Line2D([], [], color=col[str(n)], marker="o", label=str(n)) for n in names]
    return _finish(fig, handles, title)
