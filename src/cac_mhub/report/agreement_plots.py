"""PNG plots of ``cac-mhub compare``: scatter, Bland-Altman (raw and log), risk-group confusion matrix.

Pure: the score arrays and the statistics dict in, PNG bytes out (matplotlib's Agg backend).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def _png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5.2, 4.4))


def scatter(reference: np.ndarray, test: np.ndarray, names: tuple[str, str]) -> bytes:
    """Test against reference on log(1 + score) axes with the identity line."""
    figure, axis = _figure()
    x, y = np.log1p(reference), np.log1p(test)
    axis.scatter(x, y, s=10, alpha=0.6, color="#0a84ff", edgecolors="none")
    top = float(max(x.max(initial=1), y.max(initial=1))) * 1.05
    axis.plot([0, top], [0, top], color="#888", lw=1, ls="--", label="identity")
    ticks = [t for t in (0, 1, 10, 100, 1000, 10000) if np.log1p(t) <= top]
    axis.set_xticks(np.log1p(ticks), [str(t) for t in ticks])
    axis.set_yticks(np.log1p(ticks), [str(t) for t in ticks])
    axis.set_xlabel(f"{names[0]} (reference)")
    axis.set_ylabel(f"{names[1]} (test)")
    axis.set_title("Scores (log(1 + score) axes)")
    axis.legend(loc="upper left", frameon=False)
    return _png(figure)


def bland_altman(reference: np.ndarray, test: np.ndarray, stats: dict[str, Any], log: bool = False) -> bytes:
    """Difference (test - reference) against the mean of both, with the mean and 95 % limits."""
    figure, axis = _figure()
    if log:
        reference, test = np.log1p(reference), np.log1p(test)
    suffix = "_log" if log else ""
    mean_difference = stats.get(f"mean_difference{suffix}")
    limits = stats.get(f"limits_of_agreement{suffix}") or [None, None]
    axis.scatter((reference + test) / 2, test - reference, s=10, alpha=0.6, color="#0a84ff", edgecolors="none")
    for value, style, label in ((mean_difference, "-", "mean difference"), (limits[0], "--", "95 % limits"),
                                (limits[1], "--", None)):
        if value is not None:
            axis.axhline(value, color="#ff3b30", ls=style, lw=1, label=label)
    unit = "log(1 + score)" if log else "score"
    axis.set_xlabel(f"mean of both ({unit})")
    axis.set_ylabel(f"test - reference ({unit})")
    axis.set_title("Bland-Altman" + (" on log(1 + score)" if log else ""))
    axis.legend(loc="upper left", frameon=False, fontsize=8)
    return _png(figure)


def confusion(matrix: list[list[int]], groups: list[str]) -> bytes:
    """Risk-group confusion matrix, reference rows, test columns, counts in the cells."""
    figure, axis = _figure()
    values = np.asarray(matrix)
    axis.imshow(values, cmap="Blues")
    for (row, column), count in np.ndenumerate(values):
        colour = "white" if count > values.max() / 2 else "black"
        axis.text(column, row, str(count), ha="center", va="center", color=colour)
    axis.set_xticks(range(len(groups)), groups, rotation=30)
    axis.set_yticks(range(len(groups)), groups)
    axis.set_xlabel("test group")
    axis.set_ylabel("reference group")
    axis.set_title("Risk groups")
    return _png(figure)
