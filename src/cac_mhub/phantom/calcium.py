"""QRM-like calcium phantom: calcium inserts of known HU and size in a water body.

Why: scores must be proven against ground truth that does not come from the scorer. The
phantom is built from geometry alone and returns, next to the HU volume and the label map, the
reference scores computed analytically from that geometry.

Layout (defaults): a water cylinder (0 HU) in air; a 5 x 5 grid of calcium cylinders along z,
rows = HU 150/250/350/450/800 (Agatston weights 1/2/3/4/4), columns = diameter 1..5 mm,
15 mm long (z 15..30 mm); in ``partial_volume`` mode also 5 spheres (diameter 1..5 mm,
800 HU) centred at z = 37.5 mm. Slice k is centred at ``z = (k + 0.5) * increment``; the
reconstructed slice has a rectangular sensitivity profile of width ``slice_thickness``
(>= increment; larger = overlapping reconstructions).

Modes:

* ``exact``: inserts are voxel-aligned: a pixel is calcium when its centre lies within the
  insert radius (a lattice disc, counted with a closed formula), so in-plane areas are exact.
  Along z the slice profile gives each slice the covered fraction ``f`` of its window and the
  value ``round(f * HU)``. The reference (standard profile: 130 HU, 1 mm^2, weights by peak,
  increment / 3) is then exact; for ``slice_thickness == increment`` it equals
  ``area * weight * length / 3`` whatever the increment.
* ``partial_volume``: pixel values are the area fraction covered (8 x 8 x 8 supersampling),
  plus optional Gaussian noise. The reference is the ideal continuous score and rigorous
  lower / upper bounds per insert (noise-free; see :func:`_pv_bounds`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..types import ARTERIES, UNASSIGNED

INSERT_HU: tuple[float, ...] = (150.0, 250.0, 350.0, 450.0, 800.0)
INSERT_DIAMETERS_MM: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0)
#: (increment, thickness) pairs the phantom is written at: contiguous and overlapping.
RECONSTRUCTIONS_MM: tuple[tuple[float, float], ...] = (
    (0.625, 0.625), (1.25, 1.25), (2.5, 2.5), (3.0, 3.0),
    (0.625, 1.25), (1.25, 2.5), (1.5, 3.0),
)
WATER_HU = 0.0
AIR_HU = -1000.0
_CUTS = (130.0, 200.0, 300.0, 400.0)
_ARTERY_CYCLE = (*ARTERIES, UNASSIGNED)


@dataclass(frozen=True)
class Insert:
    """One calcium insert; positions are in mm from the centre of voxel [0, 0] (y, x)."""

    name: str
    hu: float
    diameter_mm: float
    center_yx_mm: tuple[float, float]
    z_range_mm: tuple[float, float]
    """Cylinder: [start, stop) along z. Sphere: its centre is the middle of the range."""
    shape: str = "cylinder"
    artery: str = UNASSIGNED
    label: int = 1

    @property
    def radius_mm(self) -> float:
        return self.diameter_mm / 2.0


@dataclass
class CalciumPhantom:
    """A phantom volume with its label map and analytic reference scores."""

    hu: np.ndarray
    labels: np.ndarray
    label_names: dict[int, str]
    spacing_zyx: tuple[float, float, float]
    slice_thickness: float
    inserts: list[Insert]
    mode: str
    reference: dict[str, Any] = field(default_factory=dict)
    """Totals (``agatston``, ``volume_mm3``, ``lesions``, ``per_artery``) and ``per_insert``
    (by label value). ``exact`` mode: exact standard-profile values; ``partial_volume`` mode:
    ``agatston_ideal`` / ``agatston_min`` / ``agatston_max``."""

    @property
    def origin_lps(self) -> tuple[float, float, float]:
        """Position of voxel [0, 0, 0]: the field of view centred on x/y = 0."""
        _, ny, nx = self.hu.shape
        dz, dy, dx = self.spacing_zyx
        return (-(nx - 1) * dx / 2.0, -(ny - 1) * dy / 2.0, dz / 2.0)


def make_calcium_phantom(
    increment_mm: float = 3.0,
    slice_thickness_mm: float | None = None,
    pixel_mm: float = 0.5,
    size_px: int = 201,
    length_z_mm: float = 45.0,
    mode: str = "exact",
    noise_sd_hu: float = 0.0,
    seed: int = 0,
    mask_margin_px: int = 2,
    hu_values: Sequence[float] = INSERT_HU,
    diameters_mm: Sequence[float] = INSERT_DIAMETERS_MM,
) -> CalciumPhantom:
    """Build the phantom at one reconstruction (increment, thickness) and pixel size."""
    if mode not in ("exact", "partial_volume"):
        raise ValueError(f"mode must be 'exact' or 'partial_volume', got {mode!r}")
    thickness = increment_mm if slice_thickness_mm is None else float(slice_thickness_mm)
    if thickness < increment_mm:
        raise ValueError("slice thickness below the increment leaves gaps; not modelled")
    n_slices = int(round(length_z_mm / increment_mm))
    if not math.isclose(n_slices * increment_mm, length_z_mm):
        raise ValueError(f"length {length_z_mm} mm is not a whole number of {increment_mm} mm slices")
    if noise_sd_hu and mode == "exact":
        raise ValueError("noise makes the reference inexact; use mode='partial_volume'")

    inserts = _layout(hu_values, diameters_mm, with_spheres=(mode == "partial_volume"))
    shape = (n_slices, size_px, size_px)
    centre = (size_px - 1) / 2.0
    yy, xx = np.mgrid[0:size_px, 0:size_px]
    body = (yy - centre) ** 2 + (xx - centre) ** 2 <= (0.46 * size_px) ** 2
    hu = np.where(body, WATER_HU, AIR_HU)[None].repeat(n_slices, axis=0).astype(np.float64)
    labels = np.zeros(shape, dtype=np.uint8)
    spacing = (float(increment_mm), float(pixel_mm), float(pixel_mm))
    centre_mm = (centre * pixel_mm, centre * pixel_mm)
    placed = [  # centred on pixel centres, so that the lattice discs are symmetric
        replace(ins, center_yx_mm=tuple(
            round((c0 + c) / pixel_mm) * pixel_mm for c0, c in zip(centre_mm, ins.center_yx_mm)))
        for ins in inserts
    ]
    per_insert: dict[int, dict[str, Any]] = {}
    for ins in placed:
        if mode == "exact":
            per_insert[ins.label] = _draw_exact(hu, labels, ins, spacing, thickness, mask_margin_px)
        else:
            per_insert[ins.label] = _draw_partial_volume(hu, labels, ins, spacing, thickness, mask_margin_px)
    if noise_sd_hu:
        hu += np.random.default_rng(seed).normal(0.0, noise_sd_hu, size=hu.shape)
    hu_int = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    phantom = CalciumPhantom(
        hu=hu_int,
        labels=labels,
        label_names={ins.label: ins.artery for ins in placed},
        spacing_zyx=spacing,
        slice_thickness=thickness,
        inserts=placed,
        mode=mode,
    )
    phantom.reference = _totals(per_insert, placed, mode)
    return phantom


def write_calcium_phantom_dicom(
    phantom: CalciumPhantom, out_dir: Path, spec: Any = None
) -> list[Path]:
    """Write the phantom as a real DICOM CT series (via :func:`cac_mhub.dicom.synth.write_ct_series`)."""
    from ..dicom.synth import CtSeriesSpec, write_ct_series

    spec = spec or CtSeriesSpec(
        patient_id="QRM-LIKE-PHANTOM",
        series_description=(
            f"Calcium phantom {phantom.mode} {phantom.spacing_zyx[0]:g}/{phantom.slice_thickness:g} mm"
        ),
    )
    spec = replace(spec, slice_thickness=phantom.slice_thickness)
    return write_ct_series(phantom.hu, Path(out_dir), phantom.spacing_zyx, phantom.origin_lps, spec)


def write_phantom_reconstructions(
    out_root: Path,
    reconstructions: Sequence[tuple[float, float]] = RECONSTRUCTIONS_MM,
    mode: str = "exact",
    **phantom_options: Any,
) -> dict[str, CalciumPhantom]:
    """Write one study with a series per (increment, thickness); folder name -> phantom.

    Folders are ``inc<increment>_thk<thickness>`` under ``out_root``; the series share the
    study and frame of reference, as reconstructions of one scan do.
    """
    from pydicom.uid import generate_uid

    from ..dicom.synth import CtSeriesSpec

    study_uid, frame_uid = generate_uid(), generate_uid()
    written: dict[str, CalciumPhantom] = {}
    for number, (increment, thickness) in enumerate(reconstructions, start=1):
        phantom = make_calcium_phantom(increment, thickness, mode=mode, **phantom_options)
        name = f"inc{increment:g}_thk{thickness:g}"
        spec = CtSeriesSpec(
            patient_id="QRM-LIKE-PHANTOM",
            study_uid=study_uid,
            frame_of_reference_uid=frame_uid,
            series_number=number,
            series_description=f"Calcium phantom {mode} {increment:g}/{thickness:g} mm",
        )
        write_calcium_phantom_dicom(phantom, Path(out_root) / name, spec)
        written[name] = phantom
    return written


def lattice_disc_count(radius_px: float) -> int:
    """Number of pixel centres within ``radius_px`` of a pixel centre (Gauss circle count)."""
    if radius_px < 0:
        return 0
    r2 = radius_px * radius_px
    top = int(math.floor(radius_px))
    return sum(2 * math.isqrt(int(math.floor(r2 - a * a + 1e-9))) + 1 for a in range(-top, top + 1))


def slice_fraction(z_centre: np.ndarray, thickness: float, start: float, stop: float) -> np.ndarray:
    """Fraction of each slice's rectangular window [z - T/2, z + T/2] inside [start, stop)."""
    low = np.maximum(z_centre - thickness / 2.0, start)
    high = np.minimum(z_centre + thickness / 2.0, stop)
    return np.clip(high - low, 0.0, None) / thickness


def agatston_weight(peak_hu: float) -> int:
    """Agatston weight of a peak HU (0 below 130 HU)."""
    return int(np.searchsorted(np.asarray(_CUTS), peak_hu, side="right"))


# --------------------------------------------------------------------------- drawing


def _layout(hu_values: Sequence[float], diameters: Sequence[float], with_spheres: bool) -> list[Insert]:
    """Insert grid centred on (0, 0): rows by HU, columns by diameter, 10 mm pitch."""
    pitch = 10.0
    inserts = []
    label = 1
    for row, hu in enumerate(hu_values):
        for col, diameter in enumerate(diameters):
            offset = ((row - (len(hu_values) - 1) / 2) * pitch, (col - (len(diameters) - 1) / 2) * pitch)
            inserts.append(Insert(
                name=f"cyl_{hu:g}HU_{diameter:g}mm", hu=float(hu), diameter_mm=float(diameter),
                center_yx_mm=offset, z_range_mm=(15.0, 30.0), shape="cylinder",
                artery=_ARTERY_CYCLE[(label - 1) % len(_ARTERY_CYCLE)], label=label,
            ))
            label += 1
    if with_spheres:
        for col, diameter in enumerate(diameters):
            offset = (0.0, (col - (len(diameters) - 1) / 2) * pitch)
            inserts.append(Insert(
                name=f"sph_800HU_{diameter:g}mm", hu=800.0, diameter_mm=float(diameter),
                center_yx_mm=offset, z_range_mm=(37.5 - diameter / 2, 37.5 + diameter / 2),
                shape="sphere", artery=_ARTERY_CYCLE[(label - 1) % len(_ARTERY_CYCLE)], label=label,
            ))
            label += 1
    return inserts


def _slice_centres(n: int, increment: float) -> np.ndarray:
    return (np.arange(n) + 0.5) * increment


def _in_plane_box(ins: Insert, pixel: float, margin_px: int, size: int) -> tuple[int, int, int, int]:
    cy, cx = ins.center_yx_mm[0] / pixel, ins.center_yx_mm[1] / pixel
    reach = ins.radius_mm / pixel + margin_px + 1
    y0, y1 = max(0, int(math.floor(cy - reach))), min(size, int(math.ceil(cy + reach)) + 1)
    x0, x1 = max(0, int(math.floor(cx - reach))), min(size, int(math.ceil(cx + reach)) + 1)
    return y0, y1, x0, x1


def _draw_exact(
    hu: np.ndarray, labels: np.ndarray, ins: Insert, spacing: tuple[float, float, float],
    thickness: float, margin_px: int,
) -> dict[str, Any]:
    """Lattice-disc cylinder with the analytic slice profile; returns its exact reference."""
    if ins.shape != "cylinder":
        raise ValueError("exact mode draws cylinders only")
    increment, pixel, _ = spacing
    cy, cx = ins.center_yx_mm[0] / pixel, ins.center_yx_mm[1] / pixel
    if not (math.isclose(cy, round(cy)) and math.isclose(cx, round(cx))):
        raise ValueError(f"{ins.name}: exact inserts must be centred on a pixel centre")
    radius_px = ins.radius_mm / pixel
    y0, y1, x0, x1 = _in_plane_box(ins, pixel, margin_px, hu.shape[1])
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d2 = (yy - round(cy)) ** 2 + (xx - round(cx)) ** 2
    calcium = d2 <= radius_px**2 + 1e-9
    footprint = d2 <= (radius_px + margin_px) ** 2 + 1e-9
    fraction = slice_fraction(_slice_centres(hu.shape[0], increment), thickness, *ins.z_range_mm)
    slice_hu = np.round(WATER_HU + fraction * (ins.hu - WATER_HU))
    for k in np.flatnonzero(fraction > 0):
        hu[k, y0:y1, x0:x1][calcium] = slice_hu[k]
        labels[k, y0:y1, x0:x1][footprint] = ins.label

    # Reference, from geometry and the closed-form lattice count (not from the array).
    pixels = lattice_disc_count(radius_px)
    area = pixels * pixel * pixel
    voxel_volume = pixel * pixel * increment
    counted = (slice_hu >= 130.0) & (area >= 1.0 - 1e-9)
    weights = np.array([agatston_weight(h) for h in slice_hu]) * counted
    return {
        "name": ins.name,
        "artery": ins.artery,
        "pixels_per_slice": pixels,
        "area_mm2": area,
        "agatston": float(np.sum(area * weights * increment / 3.0)),
        "volume_mm3": float(counted.sum() * pixels * voxel_volume),
        "mass_hu_mm3": float(np.sum(counted * slice_hu) * pixels * voxel_volume),
        "lesions": int(counted.sum()),
        "agatston_ideal": math.pi * ins.radius_mm**2 * agatston_weight(ins.hu) * (ins.z_range_mm[1] - ins.z_range_mm[0]) / 3.0,
    }


def _draw_partial_volume(
    hu: np.ndarray, labels: np.ndarray, ins: Insert, spacing: tuple[float, float, float],
    thickness: float, margin_px: int, samples: int = 8,
) -> dict[str, Any]:
    """Insert drawn with its covered fraction per voxel (8 x 8 in-plane x 8 along the profile)."""
    increment, pixel, _ = spacing
    y0, y1, x0, x1 = _in_plane_box(ins, pixel, margin_px, hu.shape[1])
    centres = _slice_centres(hu.shape[0], increment)
    z_lo, z_hi = ins.z_range_mm
    near = np.flatnonzero((centres + thickness / 2 > z_lo) & (centres - thickness / 2 < z_hi))
    sub = (np.arange(samples) + 0.5) / samples - 0.5
    zs = centres[near][:, None] + sub[None, :] * thickness  # (k, s)
    ys = (np.arange(y0, y1)[:, None] + sub[None, :]) * pixel - ins.center_yx_mm[0]  # (y, s)
    xs = (np.arange(x0, x1)[:, None] + sub[None, :]) * pixel - ins.center_yx_mm[1]  # (x, s)
    r2 = ins.radius_mm**2
    plane = ys[:, :, None, None] ** 2 + xs[None, None, :, :] ** 2  # (y, s, x, s)
    if ins.shape == "cylinder":
        in_z = slice_fraction(centres[near], thickness, z_lo, z_hi)  # (k,), exact
        coverage = in_z[:, None, None] * (plane <= r2).mean(axis=(1, 3))[None]
    else:
        dz2 = (zs - (z_lo + z_hi) / 2) ** 2  # (k, s)
        inside = plane[None, None] + dz2[:, :, None, None, None, None] <= r2
        coverage = inside.mean(axis=(1, 3, 5))
    block = hu[near, y0:y1, x0:x1]
    hu[near, y0:y1, x0:x1] = block + coverage * (ins.hu - block)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d2 = ((yy * pixel - ins.center_yx_mm[0]) ** 2 + (xx * pixel - ins.center_yx_mm[1]) ** 2)
    footprint = d2 <= (ins.radius_mm + margin_px * pixel) ** 2
    for k in near:
        labels[k, y0:y1, x0:x1][footprint] = ins.label
    low, high = _pv_bounds(ins, centres, thickness, spacing)
    if ins.shape == "cylinder":
        ideal_volume = math.pi * r2 * (z_hi - z_lo)
    else:
        ideal_volume = math.pi * ins.diameter_mm**3 / 6.0
    return {
        "name": ins.name,
        "artery": ins.artery,
        "agatston_ideal": ideal_volume * agatston_weight(ins.hu) / 3.0,
        "volume_ideal_mm3": ideal_volume,
        "agatston_min": low,
        "agatston_max": high,
    }


def _pv_bounds(
    ins: Insert, centres: np.ndarray, thickness: float, spacing: tuple[float, float, float]
) -> tuple[float, float]:
    """Rigorous noise-free bounds of the standard-profile Agatston score of one insert.

    With in-plane half-diagonal ``a`` (pixels centred on the grid), pixels whose voxel lies
    fully inside the insert cover at least the disc of radius ``r_min - 2a`` (``r_min``: the
    smallest cross-section radius over the slice window) and carry the full HU (so the slice
    weight is exact); any counted pixel touches the insert, so counted pixels lie within
    ``r_max + 2a``. Weights never exceed the insert's weight.
    """
    increment, pixel, _ = spacing
    a = pixel * math.sqrt(2.0) / 2.0
    z_lo, z_hi = ins.z_range_mm
    low_edge, high_edge = centres - thickness / 2, centres + thickness / 2
    r = ins.radius_mm
    if ins.shape == "cylinder":
        full = (low_edge >= z_lo) & (high_edge <= z_hi)
        touch = (high_edge > z_lo) & (low_edge < z_hi)
        r_min = np.where(full, r, 0.0)
        r_max = np.where(touch, r, 0.0)
    else:
        zc = (z_lo + z_hi) / 2
        far = np.maximum(np.abs(low_edge - zc), np.abs(high_edge - zc))
        near = np.where((low_edge <= zc) & (high_edge >= zc), 0.0, np.minimum(np.abs(low_edge - zc), np.abs(high_edge - zc)))
        r_min = np.sqrt(np.clip(r * r - far**2, 0.0, None))
        r_max = np.where(near < r, np.sqrt(np.clip(r * r - near**2, 0.0, None)), 0.0)
    weight = agatston_weight(ins.hu)
    inner = np.where(r_min - 2 * a > 0, np.pi * (r_min - 2 * a) ** 2, 0.0)
    inner = np.where((inner >= 1.0) & (r_min >= a), inner, 0.0)
    outer = np.where(r_max > 0, np.pi * (r_max + 2 * a) ** 2, 0.0)
    scale = increment / 3.0
    return float(inner.sum() * weight * scale), float(outer.sum() * weight * scale)


def _totals(per_insert: dict[int, dict[str, Any]], inserts: list[Insert], mode: str) -> dict[str, Any]:
    names = (*ARTERIES, UNASSIGNED)
    keys = ("agatston", "volume_mm3", "mass_hu_mm3", "lesions") if mode == "exact" else (
        "agatston_ideal", "agatston_min", "agatston_max")
    totals: dict[str, Any] = {key: sum(ref[key] for ref in per_insert.values()) for key in keys}
    totals["per_artery"] = {
        name: {key: sum(ref[key] for ref in per_insert.values() if ref["artery"] == name) for key in keys}
        for name in names
    }
    totals["per_insert"] = per_insert
    totals["profile"] = "standard (130 HU, 1 mm^2, 2D 8-connected, increment/3)"
    return totals
