"""Assemble a CT series into a HU volume with exact geometry, checking what can go wrong.

Pure: takes a :class:`~cac_mhub.types.Series`, returns a :class:`~cac_mhub.types.Volume`
plus warnings, or raises :class:`VolumeRejected` with a one-line reason.

Geometry is taken from ImagePositionPatient / ImageOrientationPatient, never from
SliceThickness or SliceLocation. Slices are sorted along the slice normal. Then:

* duplicate positions (several slices at one place) -> rejected: not one volume;
* missing slices or uneven spacing -> rejected, or (``irregular='resample'``) linearly
  interpolated onto a regular grid at the median increment, with a warning naming the gaps;
* gantry tilt (slices stacked along a direction that is not their normal, a sheared grid) ->
  resampled (default, linear) onto an orthogonal grid whose z axis is the stacking direction
  (the table axis), or rejected (``gantry_tilt='reject'``).

HU = stored * RescaleSlope + RescaleIntercept, per slice; PixelPaddingValue (and
PixelPaddingRangeLimit) voxels and anything below -1024 HU become -1024 (air).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from ..types import Series, Volume
from . import identity, validate
from .scan import header_geometry, kernel_class, kernel_text

log = logging.getLogger("cac_mhub")

AIR_HU = -1024
_NO_CONTRAST = {"", "NONE", "NO", "N", "0", "NONE USED", "WITHOUT"}


class VolumeRejected(ValueError):
    """The series cannot be made into a trustworthy volume; the message says why (one line)."""


@dataclass(frozen=True)
class GeometryRules:
    irregular: str = "reject"
    """'reject' or 'resample' for missing slices / uneven spacing."""
    gantry_tilt: str = "resample"
    """'resample' (orthogonal grid, linear) or 'reject'."""
    min_slices: int = 3
    spacing_tolerance: float = 0.02
    """Relative tolerance on slice gaps before they count as uneven (plus 0.01 mm absolute)."""
    tilt_tolerance_deg: float = 0.05


# --- decoding ---------------------------------------------------------------------------------


def decode_hu(path: Path) -> tuple[np.ndarray, Any]:
    """Decode one slice to HU (int16 when exact, else float32; padding -> air) with its dataset.

    pydicom's handlers (pylibjpeg, GDCM) come first; SimpleITK/GDCM is the fallback for
    codecs they refuse (e.g. 12-bit extended JPEG). Headers are checked first
    (:mod:`.validate`): no usable rescale or an unbounded image size raises
    :class:`VolumeRejected`; native pixel data of another length than declared, a truncated or
    corrupt file raise ValueError. Every reason names the file; nothing is padded or guessed.
    """
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{path.name}: unreadable ({type(error).__name__})") from error
    pair, problem = validate.rescale(ds)
    problem = validate.matrix_problem(ds) or problem
    if problem or pair is None:
        raise VolumeRejected(f"{path.name}: {problem}")
    slope, intercept = pair
    problem = validate.pixel_data_problem(ds)
    if problem:
        raise ValueError(f"{path.name}: {problem}")
    try:
        if _needs_gdcm(ds):
            raise NotImplementedError("12-bit extended JPEG: pydicom's plugins refuse it")
        stored = np.asarray(ds.pixel_array)
        if slope.is_integer() and intercept.is_integer() and stored.dtype.kind in "iu":
            # exact integer path (the usual case): no float round trip, int16 result
            hu = stored.astype(np.int32) * int(slope) + int(intercept)
        else:
            hu = stored.astype(np.float32) * slope + intercept
    except Exception as first_error:  # noqa: BLE001 - fall back to GDCM through SimpleITK
        stored = None
        try:
            import SimpleITK as sitk

            hu = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
            hu = hu.reshape(hu.shape[-2:]) if hu.size == int(ds.Rows) * int(ds.Columns) else hu
        except Exception:  # noqa: BLE001
            reason = str(first_error).splitlines()[0][:160] if str(first_error) else type(first_error).__name__
            raise ValueError(f"{path.name}: pixel data cannot be decoded ({reason})") from first_error
    if hu.ndim != 2 or hu.shape != (int(ds.Rows), int(ds.Columns)):
        raise ValueError(f"{path.name}: decoded shape {hu.shape} does not match Rows x Columns")
    padding = validate.number(ds, "PixelPaddingValue")
    if padding is not None:
        limit = validate.number(ds, "PixelPaddingRangeLimit")
        low, high = sorted((padding, limit if limit is not None else padding))
        if stored is not None:
            pad_mask = (stored >= low) & (stored <= high)
        else:
            pad_mask = (hu >= low * slope + intercept) & (hu <= high * slope + intercept)
        hu[pad_mask] = AIR_HU
    np.maximum(hu, AIR_HU, out=hu)
    if hu.dtype == np.int32:
        hu = np.minimum(hu, np.iinfo(np.int16).max).astype(np.int16)
    return hu, ds


def _needs_gdcm(ds: Any) -> bool:
    """12-bit JPEG Extended (.4.51/.4.55) decodes only through SimpleITK's GDCM here."""
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    return syntax in {"1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.55"} and int(ds.get("BitsStored", 8)) > 8


# --- acquisition info ---------------------------------------------------------------------------


def contrast_from_header(ds: Any) -> str:
    """Non-empty evidence string when the header says contrast was given."""
    for keyword in ("ContrastBolusAgent", "ContrastBolusIngredient", "ContrastBolusRoute", "ContrastBolusVolume"):
        value = str(ds.get(keyword, "") or "").strip()
        if value.upper() not in _NO_CONTRAST:
            return f"{keyword}={value}"
    return ""


def contrast_from_image(hu: np.ndarray, spacing_zyx: tuple[float, float, float], min_volume_cm3: float = 350.0) -> str:
    """Non-empty evidence string when the image looks contrast-enhanced (a heuristic, documented).

    Iodine-filled blood (heart chambers, aorta) forms one large connected region whose HU,
    smoothed over ~6 mm, lies in 180-600 HU away from dense bone. In non-contrast chest CT the
    largest such region is cancellous bone of the spine (<= ~170 cm3 over a whole thorax in the
    shared real scans); in the CTA crops of totalseg_refs it is >= 660 cm3. Work is done at about
    2 mm in-plane to stay fast.
    """
    from scipy import ndimage

    step = max(1, int(round(2.0 / max(spacing_zyx[1], 1e-3))))
    small = hu[:, ::step, ::step].astype(np.float32)
    spacing = (spacing_zyx[0], spacing_zyx[1] * step, spacing_zyx[2] * step)
    size = [max(1, int(round(6.0 / s))) for s in spacing]
    smooth = ndimage.uniform_filter(small, size=size)
    near_bone = ndimage.binary_dilation(small > 700, iterations=max(1, int(round(3.0 / spacing[1]))))
    blood_like = (smooth > 180) & (smooth < 600) & ~near_bone
    labels, count = ndimage.label(blood_like)
    if not count:
        return ""
    largest_cm3 = float(np.bincount(labels.ravel())[1:].max() * np.prod(spacing) / 1000.0)
    if largest_cm3 >= min_volume_cm3:
        return f"image: {largest_cm3:.0f} cm3 connected blood-pool-like region at 180-600 HU"
    return ""


def acquisition_info(series: Series) -> dict[str, Any]:
    """The acquisition parameters scoring depends on, from the first header."""
    ds = series.first
    geometry = header_geometry(series)

    def number(keyword: str) -> float | None:
        value = ds.get(keyword)
        try:
            return round(float(value), 4) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    kernel = kernel_text(ds)
    contrast = contrast_from_header(ds)
    return {
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "model": str(ds.get("ManufacturerModelName", "") or ""),
        "kvp": number("KVP"),
        "tube_current_ma": number("XRayTubeCurrent"),
        "exposure_mas": number("Exposure"),
        "kernel": kernel,
        "kernel_class": kernel_class(kernel) if kernel else "unknown",
        "slice_thickness_mm": geometry.get("slice_thickness_mm"),
        "increment_mm": geometry.get("increment_mm"),
        "pixel_spacing_mm": geometry.get("pixel_spacing_mm"),
        "rows": geometry.get("rows"),
        "columns": geometry.get("columns"),
        "slices": geometry.get("slices"),
        "gantry_tilt_header_deg": number("GantryDetectorTilt"),
        "ecg_gated": bool(str(ds.get("CardiacSynchronizationTechnique", "") or "").strip() not in ("", "NONE"))
        or ds.get("TriggerTime") not in (None, ""),
        "contrast": bool(contrast),
        "contrast_evidence": contrast,
        "series_description": series.description,
    }


# --- geometry ---------------------------------------------------------------------------------


def _orientation(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    iop = np.asarray(validate.numbers(ds, "ImageOrientationPatient", 6), dtype=float)
    return iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])


def assemble(series: Series, rules: GeometryRules = GeometryRules()) -> tuple[Volume, list[str]]:
    """Decode and stack the series; return the volume and the warnings to report."""
    warnings: list[str] = []
    problem = validate.series_problem(series.files, series.headers)
    if problem:
        raise VolumeRejected(problem)
    slices: dict[str, tuple[np.ndarray, Any]] = {}
    duplicates_same_uid = 0
    for path in series.files:
        hu, ds = decode_hu(path)
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise VolumeRejected(f"{path.name}: no ImagePositionPatient/ImageOrientationPatient")
        problem = validate.slice_problem(ds)
        if problem:
            raise VolumeRejected(f"{path.name}: {problem}")
        uid = identity.sop_uid(ds, path, series.uid)
        if uid in slices:
            duplicates_same_uid += 1
            continue
        slices[uid] = (hu, ds)
    if duplicates_same_uid:
        warnings.append(f"{duplicates_same_uid} file(s) repeat a SOPInstanceUID already read; copies ignored")
    if len(slices) < rules.min_slices:
        raise VolumeRejected(f"too few slices for a volume: {len(slices)} < {rules.min_slices}")
    items = list(slices.items())
    row, col = _orientation(items[0][1][1])
    shape = items[0][1][0].shape
    spacing_yx = tuple(validate.numbers(items[0][1][1], "PixelSpacing", 2) or ())
    for _, (hu, ds) in items:
        r, c = _orientation(ds)
        if not (np.allclose(r, row, atol=1e-3) and np.allclose(c, col, atol=1e-3)):
            raise VolumeRejected("slices have different orientations: not one volume")
        if hu.shape != shape or not np.allclose(validate.numbers(ds, "PixelSpacing", 2), spacing_yx, atol=1e-4):
            raise VolumeRejected("slices differ in size or pixel spacing: not one volume")
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    positions = np.array([validate.numbers(ds, "ImagePositionPatient", 3) for _, (_, ds) in items], float)
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    arrays = [items[i][1][0] for i in order]
    uids: list[str | None] = [items[i][0] for i in order]
    steps = np.diff(positions, axis=0)
    gaps = np.linalg.norm(steps, axis=1)
    along_normal = steps @ normal
    if np.any(along_normal < 1e-3):
        distinct = len(np.unique(np.round(positions @ normal, 2)))
        raise VolumeRejected(
            f"duplicate slice positions: {len(positions)} slices at {distinct} distinct positions "
            "(several acquisitions or phases in one series?): not one volume"
        )
    increment = float(np.median(gaps))
    stack_dir = (positions[-1] - positions[0]) / np.linalg.norm(positions[-1] - positions[0])
    tilt_deg = float(np.degrees(np.arccos(np.clip(abs(stack_dir @ normal), -1, 1))))
    irregular = np.abs(gaps - increment) > rules.spacing_tolerance * increment + 0.01
    hu_stack = np.stack(arrays)
    stored_dtype = "int16" if hu_stack.dtype == np.int16 else "float32"  # before any resampling below
    if hu_stack.dtype != np.int16 or irregular.any() or tilt_deg > rules.tilt_tolerance_deg:
        hu_stack = hu_stack.astype(np.float32)
    resampled = False
    if irregular.any():
        multiples = np.round(gaps / increment)
        missing = int(np.sum(np.maximum(multiples - 1, 0)[irregular]))
        is_missing = np.all(np.abs(gaps[irregular] - multiples[irregular] * increment) <= rules.spacing_tolerance * gaps[irregular] + 0.01)
        if is_missing and missing > 0:
            what = f"missing slices: {missing} slice(s) absent in {int(irregular.sum())} gap(s) at increment {increment:.3g} mm"
        else:
            what = f"uneven slice spacing: gaps {gaps.min():.3g}-{gaps.max():.3g} mm (median {increment:.3g} mm)"
        if rules.irregular != "resample":
            raise VolumeRejected(what)
        warnings.append(what + "; linearly resampled to a regular grid (interpolated slices are not measured data)")
        hu_stack, positions, uids = _regularise(hu_stack, positions, uids, increment)
        resampled = True
    if tilt_deg > rules.tilt_tolerance_deg:
        if rules.gantry_tilt != "resample":
            raise VolumeRejected(f"gantry tilt {tilt_deg:.2f} deg (sheared slice stack)")
        warnings.append(f"gantry tilt {tilt_deg:.2f} deg: resampled (linear) to an orthogonal grid along the table axis")
        volume = _untilt(hu_stack, positions, row, col, spacing_yx, increment)
    else:
        direction = np.column_stack([row, col, normal])
        volume = Volume(
            hu=hu_stack,
            spacing_zyx=(increment, spacing_yx[0], spacing_yx[1]),
            origin_lps=tuple(float(v) for v in positions[0]),
            direction=tuple(float(v) for v in direction.ravel()),
            sop_instance_uids=uids,
        )
    volume.resampled = volume.resampled or resampled
    volume.stored_dtype = stored_dtype
    volume.hu = _compact(volume.hu)
    volume.slice_thickness = validate.number(series.first, "SliceThickness")
    volume.acquisition = acquisition_info(series)
    volume.acquisition["increment_mm"] = round(float(volume.spacing_zyx[0]), 4)
    volume.acquisition["gantry_tilt_deg"] = round(tilt_deg, 3)
    return volume, warnings


def _compact(hu: np.ndarray) -> np.ndarray:
    """int16 when every value is an integer in range (the usual case), else float32."""
    if hu.dtype == np.int16:
        return hu
    rounded = np.rint(hu)
    if np.array_equal(rounded, hu) and hu.min() >= -32768 and hu.max() <= 32767:
        return rounded.astype(np.int16)
    return hu.astype(np.float32, copy=False)


def _regularise(
    hu: np.ndarray, positions: np.ndarray, uids: list[str | None], increment: float
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Linear interpolation along the stack onto positions first + j * increment."""
    distance = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(positions, axis=0), axis=1))])
    count = int(np.floor(distance[-1] / increment + 1e-6)) + 1
    target = np.arange(count) * increment
    upper = np.clip(np.searchsorted(distance, target, side="right"), 1, len(distance) - 1)
    lower = upper - 1
    weight = ((target - distance[lower]) / (distance[upper] - distance[lower])).astype(np.float32)
    out = hu[lower] * (1 - weight)[:, None, None] + hu[upper] * weight[:, None, None]
    direction = (positions[-1] - positions[0]) / distance[-1]
    new_positions = positions[0] + target[:, None] * direction
    new_uids: list[str | None] = []
    for t in target:
        hit = np.nonzero(np.abs(distance - t) < 1e-3)[0]
        new_uids.append(uids[hit[0]] if hit.size else None)
    return out.astype(np.float32), new_positions, new_uids


def _untilt(
    hu: np.ndarray,
    positions: np.ndarray,
    row: np.ndarray,
    col: np.ndarray,
    spacing_yx: tuple[float, float],
    increment: float,
) -> Volume:
    """Resample a sheared (gantry-tilted) regular stack onto an orthogonal grid.

    Source voxel (i, j, k) sits at P0 + i*dx*row + j*dy*col + k*step (step = stacking vector).
    The target grid keeps x = row, takes z = the stacking direction (table axis) and
    y = z x x, with the same spacings; it covers the whole sheared stack.
    """
    from scipy.ndimage import affine_transform

    dy, dx = spacing_yx
    step = (positions[-1] - positions[0]) / (len(positions) - 1)
    z_axis = step / np.linalg.norm(step)
    y_axis = np.cross(z_axis, row)
    y_axis /= np.linalg.norm(y_axis)
    x_axis = np.cross(y_axis, z_axis)
    source = np.column_stack([dx * row, dy * col, step])  # index (i, j, k) -> mm
    target_axes = np.column_stack([x_axis, y_axis, z_axis])
    nz, ny, nx = hu.shape
    corners = np.array([[i, j, k] for i in (0, nx - 1) for j in (0, ny - 1) for k in (0, nz - 1)], float)
    corner_mm = corners @ source.T  # relative to P0
    in_target = corner_mm @ target_axes  # coordinates along target axes
    low, high = in_target.min(axis=0), in_target.max(axis=0)
    target_spacing = np.array([dx, dy, np.linalg.norm(step)])
    size = np.floor((high - low) / target_spacing + 1e-6).astype(int) + 1
    # target index (x, y, z) -> mm relative to P0 -> source index (i, j, k)
    to_mm = target_axes @ np.diag(target_spacing)
    matrix_xyz = np.linalg.solve(source, to_mm)
    offset_xyz = np.linalg.solve(source, target_axes @ low)
    flip = [2, 1, 0]  # scipy works in array order (z, y, x)
    matrix = matrix_xyz[np.ix_(flip, flip)]
    offset = offset_xyz[flip]
    out = affine_transform(
        hu, matrix, offset=offset, output_shape=tuple(size[flip]), order=1, cval=float(AIR_HU), output=np.float32
    )
    origin = positions[0] + target_axes @ low
    return Volume(
        hu=out,
        spacing_zyx=(float(target_spacing[2]), float(dy), float(dx)),
        origin_lps=tuple(float(v) for v in origin),
        direction=tuple(float(v) for v in target_axes.ravel()),
        sop_instance_uids=[None] * int(size[2]),
        resampled=True,
    )
