"""QC pictures: what was scored, where, so a reader can check a result at a glance.

Pure: arrays and the score dictionary in, PNG bytes out (matplotlib's Agg backend, no display).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

#: Colour per artery (also used in the legend); unassigned calcium is magenta.
ARTERY_COLOURS = {"LM": "#ff3b30", "LAD": "#34c759", "LCX": "#0a84ff", "RCA": "#ffd60a", "CAC": "#ff2dfc"}


def lesion_overview(
    hu: np.ndarray,
    labels: np.ndarray,
    names: dict[int, str],
    scores: dict[str, Any],
    spacing_zyx: tuple[float, float, float],
    max_slices: int = 6,
    title: str = "",
) -> bytes:
    """PNG of the axial slices with the most Agatston score, scored calcium outlined by artery.

    Slices are shown in a soft-tissue window (-200..600 HU) and cropped to the calcium with a
    margin, so small plaques stay visible; a series without calcium shows its middle slice.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    lesions = scores.get("lesions") or []
    per_slice: dict[int, float] = {}
    for lesion in lesions:
        per_slice[int(lesion["slice"])] = per_slice.get(int(lesion["slice"]), 0.0) + float(lesion["agatston"])
    chosen = sorted(sorted(per_slice, key=per_slice.get, reverse=True)[:max_slices])
    if not chosen:
        chosen = [hu.shape[0] // 2]
    columns = min(3, len(chosen))
    rows = int(np.ceil(len(chosen) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.6 * rows + 0.8), squeeze=False,
                                layout="constrained")
    threshold = float((scores.get("profile") or {}).get("threshold_hu") or 130.0)
    box = _crop_box(labels, hu.shape, spacing_zyx)
    for axis, z in zip(axes.ravel(), chosen):
        (y0, y1), (x0, x1) = box
        axis.imshow(hu[z, y0:y1, x0:x1], cmap="gray", vmin=-200, vmax=600, interpolation="nearest")
        for value, artery in names.items():
            scored = (labels[z, y0:y1, x0:x1] == value) & (hu[z, y0:y1, x0:x1] >= threshold)
            if scored.any():
                axis.contour(scored, levels=[0.5], colors=[ARTERY_COLOURS.get(artery, "#ff2dfc")], linewidths=1.2)
        subtitle = f"slice {z}" + (f": Agatston {per_slice[z]:.1f}" if z in per_slice else ": no calcium")
        axis.set_title(subtitle, fontsize=9)
        axis.set_axis_off()
    for axis in axes.ravel()[len(chosen):]:
        axis.set_axis_off()
    total = scores.get("agatston")
    headline = title or "CAC QC"
    if total is not None:
        headline += f" | Agatston {float(total):.1f} ({scores.get('risk_category', '')}), {scores.get('lesion_count', 0)} lesions"
    figure.suptitle(headline, fontsize=10)
    present = sorted({name for name in names.values()})
    figure.legend(handles=[Patch(color=ARTERY_COLOURS.get(n, "#ff2dfc"), label=n) for n in present],
                  loc="outside lower center", ncol=len(present), fontsize=8, frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _crop_box(labels: np.ndarray, shape: tuple[int, ...], spacing_zyx: tuple[float, float, float],
              margin_mm: float = 60.0) -> tuple[tuple[int, int], tuple[int, int]]:
    """In-plane box around all labelled voxels plus a margin; the whole slice when none."""
    found = np.nonzero(labels.any(axis=0))
    if not found[0].size:
        return (0, shape[1]), (0, shape[2])
    my, mx = int(margin_mm / spacing_zyx[1]), int(margin_mm / spacing_zyx[2])
    y0, y1 = max(0, found[0].min() - my), min(shape[1], found[0].max() + my + 1)
    x0, x1 = max(0, found[1].min() - mx), min(shape[2], found[1].max() + mx + 1)
    return (int(y0), int(y1)), (int(x0), int(x1))
