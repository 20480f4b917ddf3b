"""Check CT header values before anything trusts them: one place, one-line reasons.

Pure functions over pydicom datasets (header-only or full). They never raise: a reader gets
``None`` for a value that is absent or malformed, a checker gets ``""`` or the reason. Series
selection (:mod:`.scan`), volume assembly and decoding (:mod:`.volume`) all use them, so a header
that selection accepted is also one the decoder can use, and a bad one is refused with the file
named instead of a traceback or a silently wrong HU value (a CT slice without RescaleIntercept
read as intercept 0 is +1024 HU everywhere).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: Largest Rows or Columns accepted: bounds what decoding may allocate (clinical CT is <= 1024).
MAX_MATRIX = 4096
#: Largest deviation from unit length / orthogonality of ImageOrientationPatient's two vectors
#: (1e-3 is 0.06 deg; scanners write 5-6 decimals, so real headers sit far below it).
ORTHONORMAL_TOLERANCE = 1e-3
BITS_ALLOCATED = (8, 16, 32)
#: Transfer syntaxes whose PixelData is native (not encapsulated): its length is checkable.
NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian (inflated on reading)
    "1.2.840.10008.1.2.2",  # explicit VR big endian
}


def value(ds: Any, keyword: str) -> Any:
    """``ds.get(keyword)`` that never raises (a malformed raw value can fail on conversion)."""
    try:
        return ds.get(keyword)
    except Exception:  # noqa: BLE001 - any conversion failure means: unusable
        return None


def _is_empty(raw: Any) -> bool:
    return raw is None or (isinstance(raw, (str, bytes)) and not str(raw).strip()) or (
        hasattr(raw, "__len__") and not isinstance(raw, (str, bytes)) and len(raw) == 0
    )


def _floats(raw: Any) -> list[float] | None:
    items = list(raw) if hasattr(raw, "__iter__") and not isinstance(raw, (str, bytes)) else [raw]
    if len(items) == 1 and isinstance(items[0], str) and "\\" in items[0]:
        items = items[0].split("\\")
    try:
        out = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def numbers(ds: Any, keyword: str, count: int) -> list[float] | None:
    """Exactly ``count`` finite numbers, or None (absent, text, wrong multiplicity, NaN)."""
    raw = value(ds, keyword)
    if _is_empty(raw):
        return None
    out = _floats(raw)
    return out if out is not None and len(out) == count else None


def number(ds: Any, keyword: str) -> float | None:
    """One finite number, or None."""
    found = numbers(ds, keyword, 1)
    return found[0] if found else None


def integer(ds: Any, keyword: str) -> int | None:
    found = number(ds, keyword)
    return int(found) if found is not None and float(found).is_integer() else None


def numbers_problem(ds: Any, keyword: str, count: int, required: bool = False) -> str:
    """'' when ``keyword`` is absent (and not required) or holds ``count`` finite numbers."""
    raw = value(ds, keyword)
    if _is_empty(raw):
        return f"no {keyword}" if required else ""
    found = _floats(raw)
    if found is None:
        return f"{keyword} is not numeric (text or NaN/inf)"
    if len(found) != count:
        return f"{keyword} has {len(found)} value(s), expected {count}"
    return ""


def orientation_problem(iop: Sequence[float]) -> str:
    """'' when the row and column vectors are unit length and orthogonal within tolerance."""
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    lengths = (float(np.linalg.norm(row)), float(np.linalg.norm(col)))
    dot = float(row @ col) / max(lengths[0] * lengths[1], 1e-12)
    if max(abs(lengths[0] - 1), abs(lengths[1] - 1)) > ORTHONORMAL_TOLERANCE or abs(dot) > ORTHONORMAL_TOLERANCE:
        angle = math.degrees(math.acos(max(-1.0, min(1.0, dot))))
        return (
            f"ImageOrientationPatient is not orthonormal (row/column {angle:.2f} deg apart, "
            f"lengths {lengths[0]:.4f}/{lengths[1]:.4f}): geometry cannot be trusted"
        )
    return ""


def rescale(ds: Any) -> tuple[tuple[float, float] | None, str]:
    """((slope, intercept), '') or (None, reason): both present, finite, slope > 0.

    There is no safe default: without RescaleIntercept a stored value is not HU (usually off by
    1024), so a missing one is a refusal, not slope 1 / intercept 0.
    """
    for keyword in ("RescaleIntercept", "RescaleSlope"):
        problem = numbers_problem(ds, keyword, 1, required=True)
        if problem:
            return None, problem + (" (stored values cannot be made HU)" if problem.startswith("no ") else "")
    slope, intercept = number(ds, "RescaleSlope"), number(ds, "RescaleIntercept")
    assert slope is not None and intercept is not None
    if slope <= 0:
        return None, f"RescaleSlope {slope:g} is not positive"
    if abs(intercept) > 65536:
        return None, f"RescaleIntercept {intercept:g} is implausible for CT"
    return (slope, intercept), ""


def matrix_problem(ds: Any) -> str:
    """Rows/Columns present and bounded, BitsAllocated usable: checked before any allocation."""
    rows, columns = integer(ds, "Rows"), integer(ds, "Columns")
    if rows is None or columns is None:
        return "no valid Rows/Columns"
    if not (1 <= rows <= MAX_MATRIX and 1 <= columns <= MAX_MATRIX):
        return f"image size {rows} x {columns} is outside 1..{MAX_MATRIX}"
    bits = integer(ds, "BitsAllocated")
    if bits not in BITS_ALLOCATED:
        return f"BitsAllocated {bits if bits is not None else 'missing'} is not one of {list(BITS_ALLOCATED)}"
    samples = integer(ds, "SamplesPerPixel")
    if samples not in (None, 1):
        return f"SamplesPerPixel {samples}: a CT slice has one sample per pixel"
    return ""


def slice_problem(ds: Any) -> str:
    """'' when one CT slice's header can be trusted for HU and geometry, else the first reason.

    ImagePositionPatient / ImageOrientationPatient may be absent (the caller decides what a
    missing geometry means) but, when present, must be 3 / 6 finite numbers, the orientation
    orthonormal; PixelSpacing 2 positive numbers; SliceThickness a number or absent.
    """
    problem = matrix_problem(ds) or rescale(ds)[1]
    if problem:
        return problem
    for keyword, count in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6), ("SliceThickness", 1)):
        problem = numbers_problem(ds, keyword, count)
        if problem:
            return problem
    iop = numbers(ds, "ImageOrientationPatient", 6)
    if iop is not None:
        problem = orientation_problem(iop)
        if problem:
            return problem
    problem = numbers_problem(ds, "PixelSpacing", 2, required=True)
    if problem:
        return problem
    spacing = numbers(ds, "PixelSpacing", 2)
    if spacing is not None and min(spacing) <= 0:
        return "PixelSpacing is not positive"
    thickness = number(ds, "SliceThickness")
    if thickness is not None and thickness < 0:
        return "SliceThickness is negative"
    return ""


def series_problem(files: Sequence[Path], headers: Sequence[Any]) -> str:
    """'' or '<file>: <reason>' for the first slice that fails :func:`slice_problem`, or the
    rescale values differing between slices (one slice's header would then be wrong by a
    constant: nothing in the pixels can tell which)."""
    values: dict[tuple[float, float], list[str]] = {}
    for path, ds in zip(files, headers):
        problem = slice_problem(ds)
        if problem:
            return f"{Path(path).name}: {problem}"
        pair, _ = rescale(ds)
        values.setdefault(pair, []).append(Path(path).name)  # type: ignore[arg-type]
    if len(values) > 1:
        common = max(values, key=lambda k: len(values[k]))
        odd = next(k for k in values if k != common)
        return (
            f"{values[odd][0]}: RescaleSlope/RescaleIntercept {odd[0]:g}/{odd[1]:g} differ from "
            f"{common[0]:g}/{common[1]:g} in {len(values[common])} other slice(s): HU would not be consistent"
        )
    return ""


def pixel_data_problem(ds: Any) -> str:
    """'' when native PixelData has exactly the length the header declares (odd length padded
    by one byte); encapsulated data is left to the decoder. Never padded nor cut here."""
    problem = matrix_problem(ds)
    if problem:
        return problem
    if "PixelData" not in ds:
        return "no PixelData"
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
    if syntax not in NATIVE_SYNTAXES:
        return ""
    frames = integer(ds, "NumberOfFrames") or 1
    samples = integer(ds, "SamplesPerPixel") or 1
    expected = int(ds.Rows) * int(ds.Columns) * frames * samples * int(ds.BitsAllocated) // 8
    try:
        actual = len(ds.PixelData)
    except Exception:  # noqa: BLE001
        return "PixelData cannot be read"
    if actual not in (expected, expected + expected % 2):
        what = "truncated" if actual < expected else "longer than declared"
        return (
            f"PixelData is {actual} bytes but Rows x Columns x BitsAllocated declare {expected} "
            f"({what}): not decoded"
        )
    return ""
