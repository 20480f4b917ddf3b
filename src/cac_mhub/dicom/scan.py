"""Find DICOM series in any folder layout and select the ones to score, by explicit rules.

Pure functions: :func:`scan` walks a folder and groups files into :class:`~cac_mhub.types.Series`;
:func:`select` applies the selection rules and records, for every series, whether it was
selected and why not. Nothing here decodes pixel data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ..types import Series

log = logging.getLogger("cac_mhub")

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
LOCALIZER_TYPES = {"LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM"}
REFORMAT_TYPES = {"REFORMATTED", "MPR", "MIP", "MINIP", "PROJECTION IMAGE", "VOLUME", "CURVED", "VRT"}


@dataclass
class ScanResult:
    series: list[Series]
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    """Files that are not usable DICOM objects, with the reason (not DICOM, unreadable, DICOMDIR)."""


def iter_files(root: Path, exclude: Iterable[Path] = ()) -> Iterable[Path]:
    """Every regular file below ``root`` in a stable order, skipping ``exclude`` folders."""
    excluded = {Path(p).resolve() for p in exclude}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if (here / d).resolve() not in excluded)
        for name in sorted(files):
            path = here / name
            if path.is_file():
                yield path


def sop_class_of(ds: Any) -> str:
    """SOPClassUID, falling back to the file meta header (some anonymisers blank the former)."""
    value = str(ds.get("SOPClassUID", "") or "").strip()
    meta = getattr(ds, "file_meta", None)
    return value or str(getattr(meta, "MediaStorageSOPClassUID", "") or "").strip()


def sop_instance_of(ds: Any) -> str | None:
    """SOPInstanceUID, falling back to the file meta header; None when both are empty."""
    value = str(ds.get("SOPInstanceUID", "") or "").strip()
    meta = getattr(ds, "file_meta", None)
    return value or str(getattr(meta, "MediaStorageSOPInstanceUID", "") or "").strip() or None


def read_header(path: Path) -> tuple[Any | None, str]:
    """(header-only dataset, "") or (None, reason) for files that are not image DICOM."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError, AttributeError) as error:
        return None, f"unreadable DICOM ({type(error).__name__})"
    except Exception as error:  # noqa: BLE001 - any parser failure means: not usable
        return None, f"unreadable DICOM ({type(error).__name__})"
    sop_class = sop_class_of(ds)
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return None, "DICOMDIR (index file; the files it lists are scanned directly)"
    if not sop_class and "Modality" not in ds:
        return None, "not a DICOM file"
    return ds, ""


def _fallback_uid(ds: Any, path: Path) -> str:
    """A stable series id for files without SeriesInstanceUID, from what identifies a series."""
    parts = [
        str(ds.get(k, "")) for k in (
            "PatientID", "StudyInstanceUID", "StudyDate", "FrameOfReferenceUID", "Modality",
            "SeriesNumber", "SeriesDescription", "AcquisitionNumber", "Rows", "Columns", "PixelSpacing",
        )
    ]
    iop = ds.get("ImageOrientationPatient")
    parts.append(",".join(f"{float(v):.3f}" for v in iop) if iop else "")
    parts.append(str(path.parent))
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()
    return f"2.25.{int(digest[:30], 16)}"


def scan(root: Path, exclude: Iterable[Path] = ()) -> ScanResult:
    """Read every file's header below ``root`` and group image files into series."""
    groups: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    ignored: list[tuple[Path, str]] = []
    for path in iter_files(root, exclude):
        ds, reason = read_header(path)
        if ds is None:
            ignored.append((path, reason))
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip() or _fallback_uid(ds, path)
        groups[uid].append((path, ds))
    series = []
    for uid, items in groups.items():
        first = items[0][1]
        series.append(
            Series(
                uid=uid,
                study_uid=str(first.get("StudyInstanceUID", "") or ""),
                files=[p for p, _ in items],
                headers=[d for _, d in items],
                modality=str(first.get("Modality", "") or ""),
                description=str(first.get("SeriesDescription", "") or ""),
            )
        )
    series.sort(key=lambda s: (s.study_uid, _int(s.first.get("SeriesNumber")), s.uid))
    return ScanResult(series=series, ignored=ignored)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# --- geometry from headers (no pixels) -------------------------------------------------------


def slice_normal(ds: Any) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if not iop or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else None


def header_geometry(series: Series) -> dict[str, Any]:
    """Slice count, increment (median gap along the slice normal), thickness, pixel spacing."""
    images = [d for d in series.headers if d.get("ImagePositionPatient") is not None]
    info: dict[str, Any] = {"files": len(series.files), "slices": len(images)}
    first = series.first
    if first.get("PixelSpacing"):
        info["pixel_spacing_mm"] = [round(float(v), 4) for v in first.PixelSpacing]
    if first.get("Rows"):
        info["rows"], info["columns"] = int(first.Rows), int(first.get("Columns", 0))
    thickness = first.get("SliceThickness")
    info["slice_thickness_mm"] = round(float(thickness), 4) if thickness not in (None, "") else None
    normal = slice_normal(first)
    if normal is not None and len(images) >= 2:
        positions = np.array([np.asarray(x.ImagePositionPatient, float) for x in images])
        positions = positions[np.argsort(positions @ normal)]
        # distance between neighbouring slice positions: the increment along the table, also
        # for gantry-tilted series, where it is longer than the step along the slice normal
        gaps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        nonzero = gaps[gaps > 1e-3]
        info["increment_mm"] = round(float(np.median(nonzero)), 4) if nonzero.size else 0.0
        info["extent_mm"] = round(float(np.linalg.norm(positions[-1] - positions[0])), 3)
    if normal is not None:
        info["normal_angle_to_z_deg"] = round(float(np.degrees(np.arccos(min(1.0, abs(normal[2]))))), 2)
    return info


# --- kernels ---------------------------------------------------------------------------------

_SOFT = re.compile(r"SOFT|STANDARD|\bSTD|SMOOTH|BODY|MEDIASTIN|CARDIAC|^[BIQHDJ]R?\d{2}|^FC0\d|^FC1\d|^[ABC]$", re.I)
_SHARP = re.compile(r"LUNG|BONE|SHARP|DETAIL|EDGE|HIGH|ULTRA|^Y[A-D]$|^[DEL]$|^FC[3-9]\d", re.I)


def kernel_class(kernel: str) -> str:
    """'soft', 'sharp' or 'unknown' for a ConvolutionKernel value (vendor conventions, documented).

    Siemens ``B/Br/I/Q/H/D/J`` + number: < 40 soft, >= 50 sharp (e.g. B30f soft, B70f lung);
    GE STANDARD/SOFT soft, LUNG/BONE/DETAIL/EDGE sharp; Philips A/B/C soft, D/E/L/YA-YD sharp;
    Canon FC01-FC19 soft, FC30+ sharp.
    """
    text = kernel.strip().upper()
    siemens = re.match(r"^[BIQHDJ]R?(\d{2})", text)
    if siemens:
        number = int(siemens.group(1))
        return "soft" if number < 40 else "sharp" if number >= 50 else "unknown"
    if _SHARP.search(text):
        return "sharp"
    if _SOFT.search(text):
        return "soft"
    return "unknown"


def kernel_text(ds: Any) -> str:
    value = ds.get("ConvolutionKernel", "")
    if isinstance(value, (list, tuple)) or value.__class__.__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value or "")


# --- selection -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectionRules:
    """The series-selection rules; every one of them is named in the log and the report."""

    min_slices: int = 10
    max_increment_mm: float = 3.0
    max_normal_angle_deg: float = 30.0
    allow_derived: bool = False
    per_study: str = "best"
    """'best': one reconstruction per study (see :func:`preference_key`); 'all': every eligible one."""
    preferred_increment_mm: tuple[float, float] = (2.5, 3.0)

    def describe(self) -> list[str]:
        return [
            "modality CT, CT Image Storage (single-frame)",
            "ImageType ORIGINAL" + ("" if not self.allow_derived else " or DERIVED") + ", not localizer/scout, not reformat/MIP",
            f"axial: slice normal within {self.max_normal_angle_deg:g} deg of patient z",
            f"at least {self.min_slices} slices",
            f"slice increment at most {self.max_increment_mm:g} mm",
            (
                "one reconstruction per study: increment closest to "
                f"{self.preferred_increment_mm[0]:g}-{self.preferred_increment_mm[1]:g} mm, then soft-tissue kernel "
                "over sharp/lung kernel, then more slices"
                if self.per_study == "best" else "all eligible reconstructions of a study"
            ),
        ]


def _image_type(ds: Any) -> list[str]:
    value = ds.get("ImageType") or []
    if isinstance(value, str):
        value = value.split("\\")
    return [str(v).strip().upper() for v in value]


def eligibility(series: Series, rules: SelectionRules) -> str:
    """Empty string when the series may be scored, else the one-line reason why not."""
    first = series.first
    if series.modality != "CT":
        return f"modality {series.modality or 'missing'}, not CT"
    sop_class = sop_class_of(first)
    if sop_class == ENHANCED_CT_STORAGE:
        return "Enhanced CT (multi-frame) object: not supported, needs single-frame CT Image Storage"
    if sop_class != CT_IMAGE_STORAGE:
        return f"SOP class {sop_class or 'missing'} is not CT Image Storage"
    types = [_image_type(d) for d in series.headers]
    if all(set(t) & LOCALIZER_TYPES for t in types):
        return "localizer/scout images only"
    kept = [t for t in types if not set(t) & LOCALIZER_TYPES]
    for image_type in kept:
        shown = "\\".join(image_type)
        if set(image_type) & REFORMAT_TYPES:
            return f"reformatted/projection images (ImageType {shown})"
        derived = image_type[:1] != ["ORIGINAL"] or image_type[1:2] == ["SECONDARY"]
        if derived and not rules.allow_derived:
            return f"derived or secondary images (ImageType {shown}), not original acquisitions"
    geometry = header_geometry(series)
    angle = geometry.get("normal_angle_to_z_deg")
    if angle is None:
        return "no ImageOrientationPatient/ImagePositionPatient: geometry unknown"
    if angle > rules.max_normal_angle_deg:
        return f"not axial: slice normal {angle:g} deg from patient z (sagittal/coronal or oblique)"
    if geometry["slices"] < rules.min_slices:
        return f"too few slices: {geometry['slices']} < {rules.min_slices}"
    increment = geometry.get("increment_mm", 0.0)
    if increment > rules.max_increment_mm + 1e-3:
        return f"slice increment {increment:g} mm exceeds {rules.max_increment_mm:g} mm"
    return ""


def preference_key(series: Series, rules: SelectionRules) -> tuple[float, int, int]:
    """Smaller is better: distance of the increment to the preferred range, kernel class, -slices."""
    geometry = header_geometry(series)
    low, high = rules.preferred_increment_mm
    inc = geometry.get("increment_mm", 0.0)
    distance = 0.0 if low <= inc <= high else min(abs(inc - low), abs(inc - high))
    kernel_rank = {"soft": 0, "unknown": 1, "sharp": 2}[kernel_class(kernel_text(series.first))]
    return (round(distance, 3), kernel_rank, -geometry["slices"])


def select(all_series: list[Series], rules: SelectionRules) -> list[Series]:
    """Mark each series selected or not (with its reason); return the selected ones."""
    by_study: dict[str, list[Series]] = defaultdict(list)
    for series in all_series:
        series.rules = rules.describe()
        series.reason = eligibility(series, rules)
        series.selected = not series.reason
        if series.selected:
            by_study[series.study_uid or series.uid].append(series)
    if rules.per_study == "best":
        for candidates in by_study.values():
            candidates.sort(key=lambda s: preference_key(s, rules))
            best = candidates[0]
            for other in candidates[1:]:
                other.selected = False
                other.reason = f"another reconstruction of this study is preferred: {best.uid} ({best.description or 'no description'})"
    return [s for s in all_series if s.selected]
