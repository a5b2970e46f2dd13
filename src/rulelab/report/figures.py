"""matplotlib figures as PNG bytes: dULP per input binade (failure regions marked), the
computed value or derivative against the reference, grouped bars and line charts for
benchmark results.

Figures use the Agg backend, are closed once rendered, and are sized for a page (about
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

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

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


def _plain_log(ax: plt.Axes) -> None:
    """Label a log y axis in plain text at 1, 2 and 5 times powers of ten."""
    ax.yaxis.set_major_formatter(FuncFormatter(_log_label))
    ax.yaxis.set_minor_formatter(FuncFormatter(_log_label))


def _plain_symlog(ax: plt.Axes) -> None:
    """Label a symlog y axis at powers of ten in plain text, no minor labels."""
    ax.yaxis.set_major_formatter(FuncFormatter(_symlog_label))
    ax.yaxis.set_minor_formatter(NullFormatter())


def png(fig: Figure, dpi: int = DPI) -> bytes:
    """Render ``fig`` as PNG bytes and close it."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()


def colours(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per name (variants), in the order given."""
    cmap = plt.get_cmap("tab10")
    return {n: matplotlib.colors.to_hex(cmap(i % 10)) for i, n in enumerate(names)}


def _panels(n: int) -> tuple[Figure, list[plt.Axes]]:
    """A row (or rows of four) of ``n`` panels with fixed margins for tick labels, a
    title above and a legend below (fixed margins: tight_layout costs more than the
    drawing)."""
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    width = min(PANEL_W * cols, MAX_W)
    height = PANEL_H * rows + 0.9
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, bottom=1.0 / height, top=1 - 0.55 / height, wspace=0.38, hspace=0.5)
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

    def ticks(self, ax: plt.Axes, negative: bool, infinite: bool) -> None:
        """Ticks at powers of two, ``0`` and ``inf`` where shown."""
        span = self.hi - self.lo
        step = next((s for s in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if span / s <= 5), 1024)
        first = math.ceil(self.lo / step) * step
        binades = [b for b in np.arange(first, self.hi + 1, step)]
        pos, labels = [0.0], ["0"]
        for b in binades:
            pos.append(b - self.lo + 1.0)
            labels.append(power(2, b))
            if negative:
                pos.append(-(b - self.lo + 1.0))
                labels.append(power(2, b, "-"))
        if infinite:
            pos += [self.hi - self.lo + 3.0] + ([-(self.hi - self.lo + 3.0)] if negative else [])
            labels += ["inf"] + (["-inf"] if negative else [])
        ax.set_xticks(pos, labels, fontsize=7)


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


def _strip(ax: plt.Axes, xs: np.ndarray, row: int, colour: str) -> None:
    """Non-finite markers in a strip at the top of the panel, one row per variant."""
    if xs.size == 0:
        return
    tr = blended_transform_factory(ax.transData, ax.transAxes)
    ax.plot(xs, np.full(xs.shape, 0.96 - 0.035 * row), "x", color=colour, transform=tr, markersize=5, clip_on=False)


def error_figure(binned: pd.DataFrame, variants: Sequence[str], panels: Sequence[tuple[str, str]], title: str) -> bytes | None:
    """dULP (max per binade, symlog) against the input on the symmetric binade axis, a
    line per variant and a panel per (dtype, backend). Binades where a variant returned
    non-finite values are shaded, with an x per variant in the strip at the top."""
    if binned.empty:
        return None
    col = colours(variants)
    fig, axes = _panels(len(panels))
    for ax, (dtype, backend) in zip(axes, panels):
        d = binned[(binned["dtype"] == dtype) & (binned["backend"] == backend) & (binned["count"] > 0)]
        axis = _axis(d["binade"].to_numpy(dtype=np.float64))
        ymax = 1.0
        failing = set()
        for row, v in enumerate(variants):
            dv = d[d["variant"] == v]
            if dv.empty:
                continue
            x = axis.position(dv["sign"].to_numpy(), dv["binade"].to_numpy())
            y = dv["max_ulp"].to_numpy(dtype=np.float64)
            order = np.argsort(x)
            ax.plot(x[order], y[order], STYLES[row % len(STYLES)], marker=".", markersize=3, linewidth=max(2.6 - 0.4 * row, 0.8), color=col[v], label=v, alpha=0.9)
            if np.isfinite(y).any():
                ymax = max(ymax, float(np.nanmax(y[np.isfinite(y)])))
            bad = dv["nonfinite"].to_numpy() > 0
            _strip(ax, x[bad], row, col[v])
            failing.update(x[bad].tolist())
        for xc in failing:
            ax.axvspan(xc - 0.5, xc + 0.5, color=FAIL_COLOUR, alpha=0.12, linewidth=0)
        ax.set_yscale("symlog", linthresh=1.0)
        _plain_symlog(ax)
        ax.set_ylim(-0.3, 10 ** (math.log10(max(ymax, 10.0)) * 1.35 + 0.6))
        axis.ticks(ax, bool((d["sign"] < 0).any()), bool(np.isinf(d["binade"]).any() & (d["binade"] > 0).any()))
        ax.set_title(dtype if len({b for _, b in panels}) == 1 else f"{dtype} · {backend}", fontsize=9)
        ax.set_ylabel("max dULP in binade", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=col[v], marker=".", linestyle=STYLES[i % len(STYLES)], label=v) for i, v in enumerate(variants)]
    handles.append(Line2D([], [], color="#444", marker="x", linestyle="", label="non-finite (strip, shaded)"))
    return _finish(fig, handles, title)


def values_figure(samples: pd.DataFrame, variants: Sequence[str], panels: Sequence[tuple[str, str]], column: str, argument: str, title: str, line: bool) -> bytes | None:
    """Computed values (dots, a colour per variant) against the reference (grey) over
    the sampled inputs ``column``, symlog y, a panel per (dtype, backend). Non-finite
    results are marked x in the strip at the top."""
    if samples.empty or column not in samples:
        return None
    col = colours(variants)
    fig, axes = _panels(len(panels))
    for ax, (dtype, backend) in zip(axes, panels):
        d = samples[(samples["dtype"] == dtype) & (samples["backend"] == backend)]
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
                ax.plot(rx[order], ry[order], "-", color="#888", linewidth=2.5, alpha=0.6, label="reference")
            else:
                ax.plot(rx, ry, "o", color="#888", markersize=4, alpha=0.4, label="reference")
        for row, v in enumerate(variants):
            dv = d[d["variant"] == v]
            if dv.empty:
                continue
            x = axis.of(pd.to_numeric(dv[column], errors="coerce").to_numpy(dtype=np.float64))
            y = pd.to_numeric(dv["computed"], errors="coerce").to_numpy(dtype=np.float64)
            ok = np.isfinite(y)
            ax.plot(x[ok], y[ok], ".", color=col[v], markersize=2.5, label=v)
            _strip(ax, x[~ok & np.isfinite(x)], row, col[v])
        ax.set_yscale("symlog", linthresh=linthresh)
        _plain_symlog(ax)
        ymax = np.nanmax(np.abs(ref[fin])) if fin.any() else 1.0
        if np.isfinite(ymax) and ymax > 0:
            top = 10 ** (math.log10(ymax) + 1.2)
            ax.set_ylim(-top if (ref[fin] < 0).any() else -linthresh, top)
        axis.ticks(ax, bool((x_all < 0).any()), bool(np.isinf(x_all).any()))
        ax.set_title(dtype if len({b for _, b in panels}) == 1 else f"{dtype} · {backend}", fontsize=9)
        ax.set_xlabel(argument, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color="#888", linewidth=2.5, label="reference (mpmath)")]
    handles += [Line2D([], [], color=col[v], marker=".", linestyle="", label=v) for v in variants]
    handles.append(Line2D([], [], color="#444", marker="x", linestyle="", label="non-finite (strip)"))
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
