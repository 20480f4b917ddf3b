"""Agatston, volume and mass scores from an HU volume and a calcium label map.

Pure numpy/scipy; no chain imports. Geometry: the arrays are an axial ``[z, y, x]`` grid
(``spacing_zyx[0]`` is the slice increment); tilted or non-axial series must be resampled
to such a grid before scoring (the NiftiConverter does this).

Standard profile, step by step (see docs/scoring.md for the reasons):

1. calcium voxels = mask voxels (label > 0) with HU >= threshold (130 HU);
2. lesions = 2D 8-connected components of calcium voxels within each axial slice
   (voxels touching only across slices belong to different lesions);
3. lesions smaller than the minimum area (1 mm^2, inclusive) are dropped;
4. weight = 1, 2, 3, 4 for a lesion peak HU in [130, 200), [200, 300), [300, 400), >= 400;
5. lesion Agatston = area_mm2 x weight x (increment / 3 mm);
6. lesion volume = voxels x (dx * dy * increment); lesion mass = c x sum(HU) x voxel volume;
7. a lesion's artery = its voxels' majority label (ties: the smallest label value).

The implementation is sparse: it finds the mask voxels once, then labels the components of
the calcium voxels as a graph (in-slice 8-neighbours) and reduces per lesion with bincount,
so its cost is one pass over the label map plus O(calcium voxels), with no loop per lesion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..types import ARTERIES, UNASSIGNED
from .categories import cac_drs, risk_category, risk_group
from .profiles import Profile, make_profile

#: Order of the per-artery entries in results.
ARTERY_ORDER: tuple[str, ...] = (*ARTERIES, UNASSIGNED)

#: Lesion-table columns, in report order.
LESION_COLUMNS: tuple[str, ...] = (
    "slice", "artery", "label", "pixels", "area_mm2", "peak_hu", "mean_hu", "weight",
    "agatston", "volume_mm3", "mass_mg", "centroid_zyx", "mixed_labels",
)

_DIGITS = 6
"""Decimals kept in ``to_dict`` / ``summary_row`` (far below any clinical significance)."""


@dataclass
class ArteryScore:
    agatston: float = 0.0
    volume_mm3: float = 0.0
    mass_mg: float | None = None
    lesions: int = 0


@dataclass
class CacResult:
    """All scores of one series, with the conventions that produced them."""

    profile: Profile
    agatston: float
    volume_mm3: float
    mass_mg: float | None
    """Calcium mass in mg; None when no calibration factor was given."""
    mass_hu_mm3: float
    """Uncalibrated mass: sum over calcium voxels of HU x voxel volume (always reported)."""
    mass_calibration: float | None
    """mg hydroxyapatite per cm^3 per HU, as given by the user."""
    per_artery: dict[str, ArteryScore]
    lesions: dict[str, np.ndarray]
    """Lesion table as columns (see :data:`LESION_COLUMNS`), one row per 2D lesion."""
    spacing_zyx: tuple[float, float, float]
    slice_thickness: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def lesion_count(self) -> int:
        return int(len(self.lesions["slice"]))

    @property
    def calibrated(self) -> bool:
        return self.mass_mg is not None

    @property
    def risk_group(self) -> int:
        return risk_group(self.agatston)

    @property
    def risk_category(self) -> str:
        return risk_category(self.agatston)

    @property
    def cac_drs(self) -> str:
        per = {name: score.agatston for name, score in self.per_artery.items()}
        return cac_drs(self.agatston, per, ARTERIES)

    def to_dict(self) -> dict[str, Any]:
        """Full, JSON-serialisable result (key names documented in docs/scoring.md)."""
        return {
            "profile": self.profile.to_dict(),
            "agatston": _r(self.agatston),
            "volume_mm3": _r(self.volume_mm3),
            "mass_mg": _r(self.mass_mg),
            "mass_calibrated": self.calibrated,
            "mass_calibration_mg_per_cm3_per_hu": self.mass_calibration,
            "mass_hu_mm3": _r(self.mass_hu_mm3),
            "lesion_count": self.lesion_count,
            "risk_group": self.risk_group,
            "risk_category": self.risk_category,
            "cac_drs": self.cac_drs,
            "per_artery": {
                name: {
                    "agatston": _r(s.agatston),
                    "volume_mm3": _r(s.volume_mm3),
                    "mass_mg": _r(s.mass_mg),
                    "lesions": s.lesions,
                }
                for name, s in self.per_artery.items()
            },
            "geometry": {
                "spacing_zyx_mm": [float(s) for s in self.spacing_zyx],
                "increment_mm": float(self.spacing_zyx[0]),
                "slice_thickness_mm": self.slice_thickness,
            },
            "lesions": self.lesion_rows(),
            "warnings": list(self.warnings),
        }

    def lesion_rows(self) -> list[dict[str, Any]]:
        """The lesion table as one dict per lesion (for JSON; not used while scoring)."""
        columns = {name: self.lesions[name].tolist() for name in LESION_COLUMNS}
        rows = []
        for values in zip(*(columns[name] for name in LESION_COLUMNS)):
            row = dict(zip(LESION_COLUMNS, values))
            for key in ("area_mm2", "peak_hu", "mean_hu", "agatston", "volume_mm3", "mass_mg"):
                row[key] = _r(row[key]) if row[key] is not None and not _isnan(row[key]) else None
            row["centroid_zyx"] = [round(c, 3) for c in row["centroid_zyx"]]
            rows.append(row)
        return rows

    def summary_row(self) -> dict[str, Any]:
        """Flat scalars for the cohort CSV."""
        row: dict[str, Any] = {
            "agatston": _r(self.agatston),
            "volume_mm3": _r(self.volume_mm3),
            "mass_mg": _r(self.mass_mg),
            "lesions": self.lesion_count,
            "risk_category": self.risk_category,
            "cac_drs": self.cac_drs,
        }
        for name in ARTERY_ORDER:
            row[f"agatston_{name}"] = _r(self.per_artery[name].agatston)
        row["profile"] = self.profile.name
        return row


def score(
    hu: np.ndarray,
    spacing_zyx: Sequence[float],
    labels: np.ndarray,
    label_names: Mapping[int, str],
    *,
    profile: str = "standard",
    threshold_hu: float | None = None,
    kvp: float | None = None,
    kvp_adjusted_threshold: bool = False,
    min_area_mm2: float | None = None,
    min_area_pixels: int | None = None,
    normalise_to_mm: float | None = None,
    mass_calibration: float | None = None,
    slice_thickness: float | None = None,
) -> CacResult:
    """Score a CAC label map on an HU volume (both ``[z, y, x]``, same axial grid).

    ``label_names`` maps every label value present to an artery (LM, LAD, LCX, RCA) or to
    ``CAC`` (unassigned). ``mass_calibration`` is in mg HA / cm^3 / HU; without it the mass
    is reported as uncalibrated (``mass_mg`` None, ``mass_hu_mm3`` given).
    ``slice_thickness`` is only reported: scores use the increment ``spacing_zyx[0]``.
    """
    spacing = _check_inputs(hu, spacing_zyx, labels, mass_calibration)
    prof, warnings = make_profile(
        profile,
        threshold_hu=threshold_hu,
        kvp=kvp,
        kvp_adjusted_threshold=kvp_adjusted_threshold,
        min_area_mm2=min_area_mm2,
        min_area_pixels=min_area_pixels,
        normalise_to_mm=normalise_to_mm,
    )
    dz, dy, dx = spacing
    shape = hu.shape

    index = _mask_indices(labels)
    z, y, x = np.unravel_index(index, shape)
    values = _gather(hu, index, (z, y, x)).astype(np.float64)
    label_values = _gather(labels, index, (z, y, x)).astype(np.int64)
    if not np.all(np.isfinite(values)):
        raise ValueError("hu contains NaN or infinite values inside the calcium mask")
    names_of = _label_name_lookup(label_values, label_names)

    if prof.threshold_hu is not None:
        calcium = values >= prof.threshold_hu
        index, z, y, x = index[calcium], z[calcium], y[calcium], x[calcium]
        values, label_values = values[calcium], label_values[calcium]

    component, n_components = _components_2d(index, y, x, shape)
    pixels = np.bincount(component, minlength=n_components)
    peak = np.full(n_components, -np.inf)
    np.maximum.at(peak, component, values)
    weight = np.searchsorted(np.asarray(prof.weight_cuts_hu), peak, side="right")
    if prof.threshold_hu is not None:
        weight = np.maximum(weight, 1)  # every voxel passed the threshold: at least weight 1
    weight = np.maximum(weight, prof.min_weight)
    pixel_area = dy * dx
    if prof.min_area_pixels is not None:
        big_enough = pixels >= prof.min_area_pixels
    else:
        big_enough = pixels * pixel_area >= prof.min_area_mm2 * (1 - 1e-9)  # type: ignore[operator]
    keep = big_enough & (weight > 0)

    # Renumber kept lesions 0..k-1 and drop the voxels of the others.
    new_id = np.full(n_components, -1, dtype=np.int64)
    new_id[keep] = np.arange(int(keep.sum()))
    lesion_of_voxel = new_id[component]
    in_lesion = lesion_of_voxel >= 0
    lesion = lesion_of_voxel[in_lesion]
    n = int(keep.sum())
    vz, vy, vx = z[in_lesion], y[in_lesion], x[in_lesion]
    v_values, v_labels = values[in_lesion], label_values[in_lesion]

    pixels, peak, weight = pixels[keep], peak[keep], weight[keep].astype(np.int64)
    area = pixels * pixel_area
    voxel_volume = dz * dy * dx
    if prof.published_arithmetic:  # DeepCAC2: its spacing, its factor, numpy's rounding per component
        factor = published_factor(spacing, prof.normalise_to_mm, prof.round_decimals or 3)
        agatston = np.round(pixels * factor * weight, prof.round_decimals or 3)
    elif prof.round_decimals is not None:  # DeepCAC: round(px volume / 3) and each lesion score
        factor = round(dz * dy * dx / prof.normalise_to_mm, prof.round_decimals)
        agatston = np.round(pixels * factor * weight, prof.round_decimals)
    else:
        agatston = area * weight * (dz / prof.normalise_to_mm)
    sum_hu = np.bincount(lesion, weights=v_values, minlength=n)
    volume = pixels * voxel_volume
    mass_hu_mm3 = sum_hu * voxel_volume
    mass = None if mass_calibration is None else mass_calibration * mass_hu_mm3 / 1000.0

    lesion_label, mixed = _majority_label(lesion, v_labels, n)
    artery_of_lesion = _artery_index(lesion_label, names_of)
    count = np.maximum(pixels, 1)
    table = {
        "slice": np.zeros(n, dtype=np.int64),
        "artery": np.array(ARTERY_ORDER, dtype=object)[artery_of_lesion],
        "label": lesion_label,
        "pixels": pixels,
        "area_mm2": area,
        "peak_hu": peak,
        "mean_hu": sum_hu / count,
        "weight": weight,
        "agatston": agatston,
        "volume_mm3": volume,
        "mass_mg": mass if mass is not None else np.full(n, np.nan),
        "centroid_zyx": np.stack(
            [np.bincount(lesion, weights=c, minlength=n) / count for c in (vz, vy, vx)], axis=1
        ) if n else np.zeros((0, 3)),
        "mixed_labels": mixed,
    }
    table["slice"][lesion] = vz

    per_artery = _per_artery(artery_of_lesion, agatston, volume, mass)
    if prof.published_arithmetic:
        total = published_total(agatston, published_order(lesion, vz, vy, vx, n, shape))
    else:
        total = float(agatston.sum())
    decimals = prof.total_decimals if prof.total_decimals is not None else prof.round_decimals
    if decimals is not None:
        total = float(round(total, decimals))
    if mixed.any():
        warnings.append(f"{int(mixed.sum())} lesion(s) span several labels; artery by majority")
    return CacResult(
        profile=prof,
        agatston=total,
        volume_mm3=float(volume.sum()),
        mass_mg=None if mass is None else float(mass.sum()),
        mass_hu_mm3=float(mass_hu_mm3.sum()),
        mass_calibration=mass_calibration,
        per_artery=per_artery,
        lesions=table,
        spacing_zyx=(dz, dy, dx),
        slice_thickness=None if slice_thickness is None else float(slice_thickness),
        warnings=warnings,
    )


# --------------------------------------------------------------------------- helpers


def published_factor(spacing_zyx: Sequence[float], divisor: float = 3.0, decimals: int = 3) -> float:
    """DeepCAC2's pixel factor ``round(sx * sy * sz / 3, 3)``.

    Its spacing is what SimpleITK reads back from the NIfTI file the pipeline wrote, i.e. float32
    values, multiplied in x, y, z order: the same steps here, so the rounding lands the same way.
    """
    dz, dy, dx = (float(np.float32(s)) for s in spacing_zyx)
    return round(dx * dy * dz / divisor, decimals)


def published_order(lesion: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray, n: int,
                    shape: tuple[int, ...]) -> np.ndarray:
    """Lesion order of DeepCAC2's loop: by slice, then as ``ndimage.label`` numbers the components
    of an ``[x, y]`` slice (raster order of each component's first voxel, x before y)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, ny, nx = shape
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, lesion, (z.astype(np.int64) * nx + x) * ny + y)
    return np.argsort(first, kind="stable")


def published_total(agatston: np.ndarray, order: np.ndarray) -> float:
    """Sum one by one in ``order`` (``AG += objectAG``), not pairwise: the last bit can decide an
    integer rounding at .5."""
    if len(order) == 0:
        return 0.0
    return float(np.cumsum(agatston[order])[-1])


def _check_inputs(
    hu: np.ndarray, spacing_zyx: Sequence[float], labels: np.ndarray, calibration: float | None
) -> tuple[float, float, float]:
    """Fail early and clearly on anything that would make a wrong score."""
    if not isinstance(hu, np.ndarray) or hu.ndim != 3:
        raise ValueError(f"hu must be a 3D [z, y, x] array, got {getattr(hu, 'shape', type(hu))}")
    if not isinstance(labels, np.ndarray) or labels.shape != hu.shape:
        raise ValueError(
            f"labels shape {getattr(labels, 'shape', None)} does not match hu shape {hu.shape}"
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"labels must be an integer or bool array, got {labels.dtype}")
    if not (np.issubdtype(hu.dtype, np.integer) or np.issubdtype(hu.dtype, np.floating)):
        raise ValueError(f"hu must be an integer or float array, got {hu.dtype}")
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_zyx must be 3 positive finite numbers, got {spacing_zyx!r}")
    if calibration is not None and not (math.isfinite(calibration) and calibration > 0):
        raise ValueError(f"mass_calibration must be a positive number, got {calibration!r}")
    return spacing  # type: ignore[return-value]


_BLOCK_WORDS = 512
"""64-bit words per block in the mask scan (4 KiB of uint8 labels)."""


def _mask_indices(labels: np.ndarray) -> np.ndarray:
    """Sorted flat indices of the non-zero voxels.

    A label map is almost all zeros, so it is scanned hierarchically: the maximum of each
    4 KiB block (as 64-bit words), then the words of the non-zero blocks, then the bytes of
    the non-zero words. That is several times faster than ``np.flatnonzero`` on uint8.
    """
    mask = labels.view(np.uint8) if labels.dtype == bool else labels
    if mask.dtype.itemsize != 1:
        mask = (mask != 0).view(np.uint8)
    if not mask.flags.c_contiguous:
        return np.flatnonzero(mask)
    flat = mask.reshape(-1)
    block_bytes = _BLOCK_WORDS * 8
    whole = flat.size // block_bytes * block_bytes
    blocks = flat[:whole].view(np.uint64).reshape(-1, _BLOCK_WORDS)
    busy = np.flatnonzero(blocks.max(axis=1)) if len(blocks) else np.zeros(0, dtype=np.int64)
    word_in_block = np.flatnonzero(blocks[busy])
    words = busy[word_in_block // _BLOCK_WORDS] * _BLOCK_WORDS + word_in_block % _BLOCK_WORDS
    candidates = (words[:, None] * 8 + np.arange(8)).reshape(-1)
    head = candidates[flat[candidates] != 0]
    tail = whole + np.flatnonzero(flat[whole:])
    return np.concatenate([head, tail]).astype(np.int64)


def _gather(array: np.ndarray, index: np.ndarray, zyx: tuple[np.ndarray, ...]) -> np.ndarray:
    """``array`` at the voxels ``index`` (flat) / ``zyx``; flat indexing when contiguous."""
    return array.reshape(-1)[index] if array.flags.c_contiguous else array[zyx]


def _components_2d(
    index: np.ndarray, y: np.ndarray, x: np.ndarray, shape: tuple[int, ...]
) -> tuple[np.ndarray, int]:
    """2D 8-connected components of the voxels ``index`` (sorted flat indices), per slice.

    Components are numbered in raster order of their first voxel (as ``ndimage.label``).
    """
    _, ny, nx = shape
    count = len(index)
    if count == 0:
        return np.zeros(0, dtype=np.int64), 0
    sources, targets = [], []
    for step_y, step_x in ((0, 1), (1, -1), (1, 0), (1, 1)):  # forward half of the 8-neighbourhood
        inside = (y + step_y < ny) & (x + step_x >= 0) & (x + step_x < nx)
        neighbour = index + step_y * nx + step_x
        position = np.minimum(np.searchsorted(index, neighbour), count - 1)
        linked = inside & (index[position] == neighbour)
        sources.append(np.flatnonzero(linked))
        targets.append(position[linked])
    source, target = np.concatenate(sources), np.concatenate(targets)
    graph = coo_matrix((np.ones(len(source), dtype=np.int8), (source, target)), shape=(count, count))
    n, component = connected_components(graph, directed=False)
    first = np.full(n, count, dtype=np.int64)
    np.minimum.at(first, component, np.arange(count))
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(n)
    return rank[component], int(n)


def _label_name_lookup(label_values: np.ndarray, label_names: Mapping[int, str]) -> dict[int, str]:
    """Check that every label value present has a known name; return value -> name."""
    present = [int(v) for v in np.unique(label_values)]
    names = {int(k): str(v) for k, v in label_names.items()}
    missing = [v for v in present if v not in names]
    if missing:
        raise ValueError(f"label values {missing} have no name in label_names {names}")
    unknown = sorted({names[v] for v in present} - set(ARTERY_ORDER))
    if unknown:
        raise ValueError(f"label names {unknown} are not one of {list(ARTERY_ORDER)}")
    return names


def _majority_label(lesion: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each lesion's most frequent label value (ties: smallest value) and a 'mixed' flag."""
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    values, code = np.unique(labels, return_inverse=True)
    k = len(values)
    counts = np.bincount(lesion * k + code, minlength=n * k).reshape(n, k)
    majority = counts.argmax(axis=1)
    mixed = (counts > 0).sum(axis=1) > 1
    return values[majority], mixed


def _artery_index(lesion_label: np.ndarray, names_of: Mapping[int, str]) -> np.ndarray:
    """Position in :data:`ARTERY_ORDER` of each lesion's label (one lookup per label value)."""
    values = np.unique(lesion_label)
    position = np.array([ARTERY_ORDER.index(names_of[int(v)]) for v in values], dtype=np.int64)
    return position[np.searchsorted(values, lesion_label)]


def _per_artery(
    artery: np.ndarray, agatston: np.ndarray, volume: np.ndarray, mass: np.ndarray | None
) -> dict[str, ArteryScore]:
    k = len(ARTERY_ORDER)
    ag = np.bincount(artery, weights=agatston, minlength=k)
    vol = np.bincount(artery, weights=volume, minlength=k)
    ms = None if mass is None else np.bincount(artery, weights=mass, minlength=k)
    count = np.bincount(artery, minlength=k)
    return {
        name: ArteryScore(
            agatston=float(ag[i]),
            volume_mm3=float(vol[i]),
            mass_mg=None if ms is None else float(ms[i]),
            lesions=int(count[i]),
        )
        for i, name in enumerate(ARTERY_ORDER)
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), _DIGITS)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
