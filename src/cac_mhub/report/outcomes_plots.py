"""The Kaplan-Meier plot of ``cac-mhub outcomes``, with the numbers at risk under it.

Pure: the result dict (as in ``outcomes.json``) in, PNG bytes out (matplotlib's Agg backend).
"""

from __future__ import annotations

import io
from typing import Any

#: One colour per CAC group, lowest first (reference grey-blue, then rising warmth).
GROUP_COLOURS = ("#0a84ff", "#34c759", "#ff9500", "#ff3b30", "#af52de", "#8e8e93", "#5e5ce6", "#a2845e")


def kaplan_meier_png(result: dict[str, Any], time_label: str = "time") -> bytes:
    """Survival curves per group with their 95 % bands, and a numbers-at-risk table below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g["group"] for g in result["groups"]]
    figure, (axis, table) = plt.subplots(2, 1, figsize=(7.2, 5.8), height_ratios=(4, 1.3), layout="constrained")
    for index, group in enumerate(groups):
        colour = GROUP_COLOURS[index % len(GROUP_COLOURS)]
        curve = result["kaplan_meier"][group]["curve"]
        points = [(t, s, lo, hi) for t, s, lo, hi in zip(curve["time"], curve["survival"], curve["lower"], curve["upper"])
                  if s is not None]
        if not points:
            continue
        times, survival, lower, upper = (list(v) for v in zip(*points))
        n = next(g["n"] for g in result["groups"] if g["group"] == group)
        axis.step(times, survival, where="post", color=colour, lw=1.6, label=f"CAC {group} (n = {n})")
        if all(v is not None for v in lower + upper):
            axis.fill_between(times, lower, upper, step="post", color=colour, alpha=0.15, lw=0)
    axis.set_ylim(0, 1.02)
    axis.set_ylabel("survival (Kaplan-Meier)")
    axis.set_xlabel(time_label)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left", fontsize=8, frameon=False)
    risk = result["at_risk"]
    table.set_axis_off()
    table.set_title("numbers at risk", fontsize=9, loc="left")
    cells = [[str(v) for v in risk["groups"][g]] for g in groups]
    drawn = table.table(cellText=cells, rowLabels=[f"CAC {g}" for g in groups],
                        colLabels=[f"{t:g}" for t in risk["times"]], cellLoc="center", bbox=(0.18, 0.0, 0.82, 0.85))
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(8)
    for (row, _), cell in drawn.get_celld().items():
        cell.set_linewidth(0.3)
        if row > 0:
            cell.get_text().set_color(GROUP_COLOURS[(row - 1) % len(GROUP_COLOURS)])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()
