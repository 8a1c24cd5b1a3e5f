"""Plots of comparison curves: the test metric against FE and against wall time, a band from the worst to the best seed.

matplotlib is imported here only (the ``plot`` extra), with the non-interactive Agg backend.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

__all__ = ["pyplot", "curves"]


def _band(runs, column: int, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, minimum and maximum over seeds of the metric interpolated onto ``grid``."""
    values = np.stack([np.interp(grid, [p[column] for p in r.curve], [p[2] for p in r.curve]) for r in runs])
    return values.mean(0), values.min(0), values.max(0)


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend.

    Raises:
        ImportError: matplotlib is missing (install the ``plot`` extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plots need matplotlib: pip install 'evograd-torch[plot]'") from err
    return plt


def curves(results: Sequence, metric_name: str, title: str, path: str | pathlib.Path) -> pathlib.Path:
    """Write a PNG with two panels (metric vs FE, metric vs seconds), one line per method.

    Raises:
        ImportError: matplotlib is missing (install the ``plot`` extra).
    """
    plt = pyplot()
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = [m for m in dict.fromkeys(r.method for r in results)]
    for method in methods:
        runs = [r for r in results if r.method == method and r.curve]
        if not runs:
            continue
        for ax, column, label in ((axes[0], 0, "forward-pass equivalents"), (axes[1], 1, "wall time (s)")):
            # log axes: backprop and evolution differ by orders of magnitude in cost
            start = max(min(r.curve[1][column] for r in runs if len(r.curve) > 1), 1e-9)
            end = min(r.curve[-1][column] for r in runs)
            grid = np.geomspace(start, max(end, start), 60)
            mean, low, high = _band(runs, column, grid)
            (line,) = ax.plot(grid, mean, label=method)
            ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(label)
            ax.set_ylabel(metric_name)
            ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
