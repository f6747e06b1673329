"""``dnorm inspect --plot``: heatmaps of one element under each scheme and the received-mass distributions."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _validate as check
from .. import masks, normalize
from ..diagnostics import Report
from . import CommandError, text


def write(
    path: str, x: np.ndarray, mask: np.ndarray | None, result: Report, /, *, head: int, alpha: float, title: str
) -> None:
    """Save the figure to ``path`` (format from its suffix) with matplotlib's non-interactive Agg canvas."""
    try:
        from matplotlib.colors import PowerNorm
        from matplotlib.figure import Figure
    except ImportError:
        msg = "--plot needs matplotlib (pip install matplotlib)"
        raise CommandError(msg) from None
    t, k = x.shape[-2:]
    flat = x.reshape(-1, t, k)
    head %= flat.shape[0]
    flat_mask = None if mask is None else np.broadcast_to(mask, x.shape).reshape(-1, t, k)
    allowed = flat != -np.inf if result.kind == "scores" else np.ones(flat.shape, dtype=bool)
    if flat_mask is not None:
        allowed = allowed & masks.allowed(flat_mask)
    if result.kind == "weights":
        panels = {"weights": flat[head]}
    else:
        one_mask = None if flat_mask is None else flat_mask[head]
        panels = {
            name: normalize(flat[head], name, mask=one_mask, alpha=alpha, causal=_causal(name))
            for name in result.schemes
        }
    # show the queries and keys up to the last allowed pair (padding left out)
    rows, cols = np.flatnonzero(allowed[head].any(axis=1)), np.flatnonzero(allowed[head].any(axis=0))
    extent = (rows[-1] + 1 if rows.size else t, cols[-1] + 1 if cols.size else k)
    fig = Figure(figsize=(max(8.0, 3.2 * len(panels)), 7.0), layout="constrained")
    grid = fig.add_gridspec(2, len(panels), height_ratios=(1.4, 1.0))
    norm = PowerNorm(0.5, vmin=0.0, vmax=max(float(np.nanmax(w)) for w in panels.values()))
    for column, (name, w) in enumerate(panels.items()):
        ax = fig.add_subplot(grid[0, column])
        image = ax.imshow(w[: extent[0], : extent[1]], norm=norm, cmap="viridis", interpolation="nearest")
        least = float(result.schemes[name].least_mass.reshape(-1)[head])
        ax.set_title(f"{name}\nleast mass {text.mass(least)}", fontsize=10)
        ax.set_xlabel("key j")
        if column == 0:
            ax.set_ylabel("query i")
    fig.colorbar(image, ax=fig.axes, shrink=0.8, label="weight A[i, j] (square-root scale)")
    _distributions(fig.add_subplot(grid[1, :]), result, allowed)
    element = f"element {head} of {flat.shape[0]}" if flat.shape[0] > 1 else "the only element"
    fig.suptitle(f"{title}: {element} (top), received mass of all elements (bottom)")
    try:
        fig.savefig(path, dpi=110)
    except (OSError, ValueError) as exc:
        msg = f"cannot write the plot {path}: {exc}"
        raise CommandError(msg) from None


def _distributions(ax: Any, result: Report, allowed: np.ndarray, /) -> None:
    """Histograms of ``m_j / mean`` over the visible keys of every element, one step line per scheme.

    ``allowed`` is ``(elements, T, K)``; the mean is active queries over visible keys, as in the report.
    """
    visible = allowed.any(axis=-2)
    mean = allowed.any(axis=-1).sum(axis=-1, keepdims=True) / np.maximum(visible.sum(axis=-1, keepdims=True), 1)
    floor = 1e-9
    relative = {}
    for name, r in result.schemes.items():
        mass = np.asarray(r.mass, dtype=np.float64).reshape(visible.shape)
        relative[name] = np.maximum(mass / mean, floor)[visible]
    values = np.concatenate(list(relative.values()))
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    bins = np.geomspace(low / 2, high * 2, 40) if high < 1.1 * low else np.geomspace(low, high, 40)
    for name, rel in relative.items():
        ax.hist(rel, bins=bins, histtype="step", linewidth=1.6, label=name)
    ax.axvline(result.threshold, color="black", linestyle="--", label=f"explained away below {result.threshold:g}")
    ax.set_xscale("log")
    ax.set_xlabel("received mass m_j / mean mass T/K (visible keys of every element)")
    ax.set_ylabel("keys")
    ax.legend(fontsize=9)


def _causal(name: str, /) -> str | bool:
    """Stick-breaking's causal form (its only one), top-left as the report takes it; the others bidirectional."""
    return "top-left" if not check.described(name).bidirectional else False
