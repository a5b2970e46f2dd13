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

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

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


def _plain_log(ax: Axes) -> None:
    """Label a log y axis in plain text at 1, 2 and 5 times powers of ten."""
    ax.yaxis.set_major_formatter(FuncFormatter(_log_label))
    ax.yaxis.set_minor_formatter(FuncFormatter(_log_label))


def _plain_symlog(ax: Axes) -> None:
    """Label a symlog y axis at powers of ten in plain text; no minor ticks (a symlog
    axis spanning many decades has hundreds, and drawing them dominates)."""
    ax.yaxis.set_major_formatter(FuncFormatter(_symlog_label))
    ax.yaxis.set_minor_locator(NullLocator())


def png(fig: Figure, dpi: int = DPI) -> bytes:
    """Render ``fig`` as PNG bytes (Agg)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    fig.clear()
    return buf.getvalue()


def colours(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per name (variants), in the order given."""
    cmap = matplotlib.colormaps["tab10"]
    return {n: matplotlib.colors.to_hex(cmap(i % 10)) for i, n in enumerate(names)}


def _panels(n: int, strip_rows: int = 0) -> tuple[Figure, list[Axes]]:
    """A row (or rows of four) of ``n`` panels with fixed margins for tick labels, a
    title above and a legend below (fixed margins: tight_layout costs more than the
    drawing)."""
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    width = min(PANEL_W * cols, MAX_W)
    strip = (0.1 + 0.1 * strip_rows) if strip_rows else 0.0  # inches of non-finite strip per row
    height = (PANEL_H + strip) * rows + 0.9
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, bottom=1.0 / height, top=1 - (0.55 + strip) / height, wspace=0.38, hspace=0.5 + strip / PANEL_H)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _finish(fig: Figure, handles: list[Any], title: str) -> bytes:
    """Legend below the panels, title above, then render."""
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
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
    strip = ax.inset_axes((0.0, 1.02, 1.0, 0.05 + 0.035 * rows), sharex=ax)
    strip.set_ylim(-0.5, rows - 0.5)
    strip.invert_yaxis()
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


def error_figure(binned: pd.DataFrame, variants: Sequence[str], panels: Sequence[tuple[str, str]], title: str) -> bytes | None:
    """dULP (max per binade, symlog) against the input on the symmetric binade axis, a
    line per variant and a panel per (dtype, backend). Binades where a variant returned
    non-finite values are shaded, and marked per variant in the strip above the panel."""
    if binned.empty:
        return None
    col = colours(variants)
    fig, axes = _panels(len(panels), strip_rows=len(variants))
    for ax, (dtype, backend) in zip(axes, panels):
        d = binned[(binned["dtype"] == dtype) & (binned["backend"] == backend) & (binned["count"] > 0)]
        strip = _strip_axes(ax, len(variants), _panel_title(dtype, backend, panels))
        axis = _axis(d["binade"].to_numpy(dtype=np.float64))
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
        axis.ticks(ax, bool((d["sign"] < 0).any()), bool((d["binade"] == np.inf).any()))
        ax.set_ylabel("max dULP in binade", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=col[v], marker=".", linestyle=STYLES[i % len(STYLES)], label=v) for i, v in enumerate(variants)]
    handles.append(Patch(color=FAIL_COLOUR, alpha=0.25, label="non-finite results"))
    return _finish(fig, handles, title)


def values_figure(samples: pd.DataFrame, variants: Sequence[str], panels: Sequence[tuple[str, str]], column: str, argument: str, title: str, line: bool) -> bytes | None:
    """Computed values (dots, a colour per variant) against the reference (grey) over
    the sampled inputs ``column``, symlog y, a panel per (dtype, backend). Non-finite
    results are marked per variant in the strip above the panel."""
    if samples.empty or column not in samples:
        return None
    col = colours(variants)
    fig, axes = _panels(len(panels), strip_rows=len(variants))
    for ax, (dtype, backend) in zip(axes, panels):
        d = samples[(samples["dtype"] == dtype) & (samples["backend"] == backend)]
        strip = _strip_axes(ax, len(variants), _panel_title(dtype, backend, panels))
        x_all = pd.to_numeric(d[column], errors="coerce").to_numpy(dtype=np.float64)
        axis = _axis(_binade(x_all[np.isfinite(x_all) & (x_all != 0)]) if x_all.size else np.array([]))
        ref = pd.to_numeric(d["ref_hi"], errors="coerce").to_numpy(dtype=np.float64)
        fin = np.isfinite(ref) & np.isfinite(x_all)
        nz = np.abs(ref[fin & (ref != 0)])
        linthresh = float(np.clip(np.quantile(nz, 0.05), 1e-300, 1.0)) if nz.size else 1.0
        if fin.any():
            rx = axis.of(x_all[fin])
            ry = ref[fin]
            order = np.argsort(rx, kind="stable")
            if line:
                ax.plot(rx[order], ry[order], "-", color="#888", linewidth=2.5, alpha=0.6)
            else:
                ax.plot(rx, ry, "o", color="#888", markersize=4, alpha=0.4)
        for row, v in enumerate(variants):
            dv = d[d["variant"] == v]
            if dv.empty:
                continue
            x = axis.of(pd.to_numeric(dv[column], errors="coerce").to_numpy(dtype=np.float64))
            y = pd.to_numeric(dv["computed"], errors="coerce").to_numpy(dtype=np.float64)
            ok = np.isfinite(y)
            ax.plot(x[ok], y[ok], ".", color=col[v], markersize=2.5)
            _mark(strip, x[~ok & np.isfinite(x)], row, col[v], 0.3)
        ax.set_yscale("symlog", linthresh=linthresh)
        _plain_symlog(ax)
        ymax = np.nanmax(np.abs(ref[fin])) if fin.any() else 1.0
        if np.isfinite(ymax) and ymax > 0:
            top = 10 ** (math.log10(max(ymax, linthresh)) + 0.5)
            ax.set_ylim(-top if (ref[fin] < 0).any() else -linthresh, top)
        axis.ticks(ax, bool((x_all < 0).any()), bool(np.isinf(x_all).any()))
        ax.set_xlabel(argument, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color="#888", linewidth=2.5, label="reference (mpmath)")]
    handles += [Line2D([], [], color=col[v], marker=".", linestyle="", label=v) for v in variants]
    return _finish(fig, handles, title)


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
            vals = [d.loc[(d[group] == g) & (d[bar] == b), value].astype(float).max() for g in groups]
            xs = np.arange(len(groups)) + (i - (len(bars_) - 1) / 2) * width
            ax.bar(xs, np.nan_to_num(np.asarray(vals, dtype=float), nan=0.0), width=width, color=col[b], label=str(b))
        ax.set_xticks(np.arange(len(groups)), [str(g) for g in groups], fontsize=8)
        if logy:
            ax.set_yscale("log")
            _plain_log(ax)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(True, axis="y", alpha=0.3)
        if key is not None:
            ax.set_title(panel_labels.get(key, str(key)) if panel_labels else str(key), fontsize=9)
    handles = [Patch(color=col[b], label=str(b)) for b in bars_]
    return _finish(fig, handles, title)


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
