"""Plots of comparison curves: the test metric against FE and against wall time, a band from the worst to the best seed.

Plots are meant to read on their own: the title says what was run, which methods are drawn and
which were skipped and why; legends sit outside the data; each line has its own colour, dash
pattern and markers (:func:`style`), so a line under another still shows.

matplotlib is imported here only (the ``plot`` extra), with the non-interactive Agg backend.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

__all__ = ["pyplot", "curves", "style", "skipped_text", "LINESTYLES", "MARKERS"]


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


#: Line styles and markers cycled over the lines of a panel, so a line drawn under another still shows.
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def style(index: int) -> dict:
    """The line style of the ``index``-th line of a panel: its colour, dashes and marker differ from its neighbours'.

    Examples:
        >>> style(0)["linestyle"], style(1)["marker"]
        ('-', 's')
    """
    return {
        "color": f"C{index % 10}",
        "linestyle": LINESTYLES[index % len(LINESTYLES)],
        "marker": MARKERS[index % len(MARKERS)],
        "markersize": 4,
        "zorder": 3 + index,
    }


def skipped_text(results: Sequence) -> str:
    """``"skipped: adam, sgd (needs a gradient ...)"`` for the methods without a curve, or ``""``."""
    skipped = {r.method: r.note.removeprefix("skipped: ") for r in results if not r.curve}
    return "; ".join(f"skipped {method} ({note})" for method, note in skipped.items())


def curves(results: Sequence, metric_name: str, title: str, path: str | pathlib.Path) -> pathlib.Path:
    """Write a PNG with two panels (metric vs FE, metric vs wall time), one line per method.

    The title names the methods drawn and lists the skipped ones with the reason; the legend sits
    outside the panels. Lines are the mean over seeds, bands the worst and best seed. Wall time is
    counted from the end of each run's first step, which carries one-time costs (allocation, lazy
    initialization) that would otherwise dominate the left of a logarithmic time axis.

    Raises:
        ImportError: matplotlib is missing (install the ``plot`` extra).
    """
    plt = pyplot()
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    drawn = [m for m in dict.fromkeys(r.method for r in results) if any(r.curve for r in results if r.method == m)]
    for index, method in enumerate(drawn):
        runs = [r for r in results if r.method == method and len(r.curve) > 2]
        if not runs:
            continue
        warm = [[(p[0], p[1] - r.curve[1][1], p[2]) for p in r.curve[1:]] for r in runs]  # time after step 1
        for ax, column, curves_of in ((axes[0], 0, [r.curve for r in runs]), (axes[1], 1, warm)):
            # log axes: backprop and evolution differ by orders of magnitude in cost
            start = max(min(next((p[column] for p in c if p[column] > 0), 1e-9) for c in curves_of), 1e-9)
            end = min(c[-1][column] for c in curves_of)
            grid = np.geomspace(start, max(end, start), 60)
            values = np.stack([np.interp(grid, [p[column] for p in c], [p[2] for p in c]) for c in curves_of])
            look = style(index)
            ax.plot(grid, values.mean(0), label=method if column == 0 else None, markevery=(index % 6, 6), **look)
            ax.fill_between(grid, values.min(0), values.max(0), color=look["color"], alpha=0.15, zorder=1)
    for ax, label in ((axes[0], "forward-pass equivalents"), (axes[1], "wall time after each run's first step (s)")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel(metric_name)
        ax.grid(alpha=0.3)
    fig.legend(
        loc="center left",
        bbox_to_anchor=(0.87, 0.5),
        fontsize=9,
        title="mean; band:\nworst-best seed",
        title_fontsize=8,
    )
    lines = [title, f"{len(drawn)} methods drawn: {', '.join(drawn)}" if drawn else "no method has a curve"]
    skipped = skipped_text(results)
    fig.suptitle("\n".join(lines + ([skipped] if skipped else [])), fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.87, 1))
    path = pathlib.Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
