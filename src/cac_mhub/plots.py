"""QC pictures: what was scored, where, and what the guard left out, for a reader to check at a glance.

Pure: arrays and the score dictionary in, PNG bytes out (matplotlib's Agg backend, no display).
"""

from __future__ import annotations

import io
from typing import Any, Mapping

import numpy as np

#: Colour per artery (also used in the legend); unassigned calcium is magenta.
ARTERY_COLOURS = {"LM": "#ff3b30", "LAD": "#34c759", "LCX": "#0a84ff", "RCA": "#ffd60a", "CAC": "#ff2dfc"}
#: Heart region outline and excluded (not scored) candidates.
REGION_COLOUR = "#5ac8fa"
EXCLUDED_COLOUR = "#ff9500"
#: Non-coronary calcium (reported apart, never in the coronary score): aortic valve, mitral annulus, aorta.
NONCORONARY_COLOURS = {"aortic_valve": "#bf5af2", "mitral_annulus": "#a2845e", "aorta_ascending": "#00c7be",
                       "aorta_arch": "#00c7be", "aorta_descending": "#00c7be"}
#: Calcium lesions in the heart region that neither the model nor the detector took (listed, not scored).
UNLABELLED_COLOUR = "#ffffff"
NONCORONARY_LEGEND = {"#bf5af2": "aortic valve (apart)", "#a2845e": "mitral annulus (apart)",
                      "#00c7be": "thoracic aorta (apart)"}


def lesion_overview(
    hu: np.ndarray,
    labels: np.ndarray,
    names: dict[int, str],
    scores: dict[str, Any],
    spacing_zyx: tuple[float, float, float],
    max_slices: int = 6,
    title: str = "",
    region: np.ndarray | None = None,
    excluded: Mapping[str, np.ndarray] | None = None,
    max_excluded_slices: int = 3,
    noncoronary: Mapping[str, np.ndarray] | None = None,
    unlabelled: np.ndarray | None = None,
    confidence: str = "",
) -> bytes:
    """PNG of the axial slices with the most Agatston score, scored calcium outlined by artery.

    Slices are shown in a soft-tissue window (-200..600 HU) and cropped to the heart region
    (or the calcium) with a margin, so small plaques stay visible. ``region`` (the heart region,
    outlined in light blue) and ``excluded`` (reason -> label map of the candidates the guard
    left out) add a second row: the slices where most was excluded, each candidate outlined in
    orange and named by its reason. ``noncoronary`` (site -> map of the aortic valve, mitral
    annulus and aorta calcium scored apart) adds a third row in the sites' own colours;
    ``unlabelled`` (lesions of the heart region nobody counted) a fourth, outlined in white, so a
    reader can judge them. ``confidence`` (the verdict and its reasons' codes) goes into the
    headline. A series without calcium shows the middle of the region.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    threshold = float((scores.get("profile") or {}).get("threshold_hu") or 130.0)
    lesions = scores.get("lesions") or []
    per_slice: dict[int, float] = {}
    for lesion in lesions:
        per_slice[int(lesion["slice"])] = per_slice.get(int(lesion["slice"]), 0.0) + float(lesion["agatston"])
    chosen = sorted(sorted(per_slice, key=per_slice.get, reverse=True)[:max_slices])
    excluded = {k: v for k, v in (excluded or {}).items() if v is not None and v.any()}
    excluded_slices = _busiest_slices(excluded, hu, threshold, max_excluded_slices)
    noncoronary = {k: v for k, v in (noncoronary or {}).items() if v is not None and v.any()}
    apart_slices = _busiest_slices(noncoronary, hu, threshold, max_excluded_slices)
    missed = {"unlabelled": unlabelled} if unlabelled is not None and unlabelled.any() else {}
    missed_slices = _busiest_slices(missed, hu, threshold, max_excluded_slices)
    if not chosen and not excluded_slices and not apart_slices and not missed_slices:
        chosen = [_middle_slice(region, hu.shape[0])]
    panels = [(z, "scored") for z in chosen] + [(z, "excluded") for z in excluded_slices] + \
        [(z, "apart") for z in apart_slices] + [(z, "unlabelled") for z in missed_slices]
    groups = (chosen, excluded_slices, apart_slices, missed_slices)
    columns = min(3, max(*(len(g) for g in groups), 1))
    rows = sum(int(np.ceil(len(group) / columns)) for group in groups)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * max(columns, 2), 4.6 * rows + 0.8), squeeze=False,
                                layout="constrained")
    union = labels > 0
    for array in (*excluded.values(), *noncoronary.values(), *missed.values()):
        union = union | (array > 0)
    (y0, y1), (x0, x1) = _crop_box(region if region is not None and region.any() else union, hu.shape, spacing_zyx)
    flat = list(axes.ravel())
    slots, start = [], 0
    for group in groups:
        slots += [start + i for i in range(len(group))]
        start += int(np.ceil(len(group) / columns)) * columns
    for slot, (z, kind) in zip(slots, panels):
        axis = flat[slot]
        axis.imshow(hu[z, y0:y1, x0:x1], cmap="gray", vmin=-200, vmax=600, interpolation="nearest")
        if region is not None and region[z, y0:y1, x0:x1].any():
            axis.contour(region[z, y0:y1, x0:x1], levels=[0.5], colors=[REGION_COLOUR], linewidths=0.8,
                         linestyles="dashed")
        for value, artery in names.items():
            scored = (labels[z, y0:y1, x0:x1] == value) & (hu[z, y0:y1, x0:x1] >= threshold)
            if scored.any():
                axis.contour(scored, levels=[0.5], colors=[ARTERY_COLOURS.get(artery, "#ff2dfc")], linewidths=1.2)
        if kind == "scored":
            axis.set_title(f"slice {z}: Agatston {per_slice[z]:.1f}" if z in per_slice else f"slice {z}: no calcium",
                           fontsize=9)
        elif kind == "apart":
            found = []
            for site, array in noncoronary.items():
                cut = (array[z, y0:y1, x0:x1] > 0) & (hu[z, y0:y1, x0:x1] >= threshold)
                if cut.any():
                    axis.contour(cut, levels=[0.5], colors=[NONCORONARY_COLOURS.get(site, "#bf5af2")], linewidths=1.2)
                    found.append(site.replace("_", " "))
            axis.set_title(f"slice {z}: non-coronary, apart ({', '.join(found)})", fontsize=8, color="#6e3d8c")
        elif kind == "unlabelled":
            cut = missed["unlabelled"][z, y0:y1, x0:x1] & (hu[z, y0:y1, x0:x1] >= threshold)
            if cut.any():
                axis.contour(cut, levels=[0.5], colors=[UNLABELLED_COLOUR], linewidths=1.4)
            axis.set_title(f"slice {z}: in the heart region, not counted (check)", fontsize=8, color="#444444")
        else:
            reasons = []
            for reason, array in excluded.items():
                cut = (array[z, y0:y1, x0:x1] > 0) & (hu[z, y0:y1, x0:x1] >= threshold)
                if cut.any():
                    axis.contour(cut, levels=[0.5], colors=[EXCLUDED_COLOUR], linewidths=1.2)
                    reasons.append(reason.replace("_", " "))
            axis.set_title(f"slice {z}: not scored ({', '.join(reasons)})", fontsize=8, color="#b35900")
        axis.set_axis_off()
    used = set(slots)
    for index, axis in enumerate(flat):
        if index not in used:
            axis.set_axis_off()
    total = scores.get("agatston")
    headline = title or "CAC QC"
    if total is not None:
        headline += f" | Agatston {float(total):.1f} ({scores.get('risk_category', '')}), {scores.get('lesion_count', 0)} lesions"
    if confidence:
        headline += f" | confidence {confidence}"
    figure.suptitle(headline, fontsize=10)
    present = sorted({name for name in names.values()})
    handles: list[Any] = [Patch(color=ARTERY_COLOURS.get(n, "#ff2dfc"), label=n) for n in present]
    if region is not None:
        handles.append(Line2D([0], [0], color=REGION_COLOUR, linestyle="dashed", label="heart region"))
    if excluded:
        handles.append(Patch(color=EXCLUDED_COLOUR, label="not scored (guard)"))
    if missed:
        handles.append(Patch(facecolor=UNLABELLED_COLOUR, edgecolor="#444444", label="not counted (check)"))
    for colour in dict.fromkeys(NONCORONARY_COLOURS.get(site, "#bf5af2") for site in noncoronary):
        handles.append(Patch(color=colour, label=NONCORONARY_LEGEND.get(colour, "non-coronary")))
    figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _busiest_slices(excluded: Mapping[str, np.ndarray], hu: np.ndarray, threshold: float, count: int) -> list[int]:
    """Slices holding the most excluded calcium voxels, one per candidate blob where possible."""
    if not excluded:
        return []
    per_slice = np.zeros(hu.shape[0], np.int64)
    for array in excluded.values():
        per_slice += ((array > 0) & (hu >= threshold)).sum(axis=(1, 2))
    order = [int(z) for z in np.argsort(per_slice)[::-1] if per_slice[z] > 0]
    picked: list[int] = []
    for z in order:  # spread the picks: neighbouring slices show the same blob
        if all(abs(z - p) > 3 for p in picked):
            picked.append(z)
        if len(picked) == count:
            break
    return sorted(picked)


def _middle_slice(region: np.ndarray | None, depth: int) -> int:
    if region is not None and region.any():
        zs = np.nonzero(region.any(axis=(1, 2)))[0]
        return int((zs[0] + zs[-1]) // 2)
    return depth // 2


def _crop_box(mask: np.ndarray, shape: tuple[int, ...], spacing_zyx: tuple[float, float, float],
              margin_mm: float = 60.0) -> tuple[tuple[int, int], tuple[int, int]]:
    """In-plane box around all voxels of ``mask`` plus a margin; the whole slice when none."""
    found = np.nonzero(mask.any(axis=0))
    if not found[0].size:
        return (0, shape[1]), (0, shape[2])
    my, mx = int(margin_mm / spacing_zyx[1]), int(margin_mm / spacing_zyx[2])
    y0, y1 = max(0, found[0].min() - my), min(shape[1], found[0].max() + my + 1)
    x0, x1 = max(0, found[1].min() - mx), min(shape[2], found[1].max() + mx + 1)
    return (int(y0), int(y1)), (int(x0), int(x1))
