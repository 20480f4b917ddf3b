"""Find DICOM series in any folder layout and select the ones to score, by explicit rules.

Pure functions: :func:`scan` walks a folder and groups files into :class:`~cac_mhub.types.Series`;
:func:`select` applies the selection rules and records, for every series, whether it was
selected and why not. Nothing here decodes pixel data.
"""

from __future__ import annotations

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
from . import identity, stacks, validate
from .uids import CT_IMAGE_STORAGE, ENHANCED_CT_STORAGE, MEDIA_STORAGE_DIRECTORY, sop_class_of

log = logging.getLogger("cac_mhub")

LOCALIZER_TYPES = {"LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM"}
#: Rendered images: never one slice per plane of the patient (rejected whatever their orientation).
PROJECTION_TYPES = {"MIP", "MINIP", "MINIMUM IP", "PROJECTION IMAGE", "VOLUME", "CURVED", "VRT", "SSD"}
#: Multiplanar reformats: derived images, scored only when axial and no original series qualifies.
REFORMAT_TYPES = {"REFORMATTED", "MPR"}
#: Bytes read to tell a DICOM file from anything else before pydicom reads it whole.
SNIFF_BYTES = 132


@dataclass
class ScanResult:
    series: list[Series]
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    """Files (and folders) that are not usable DICOM objects, with the reason (not DICOM,
    unreadable file or folder, broken link, DICOMDIR)."""


def iter_files(
    root: Path, exclude: Iterable[Path] = (), problems: list[tuple[Path, str]] | None = None
) -> Iterable[Path]:
    """Every regular file below ``root`` in a stable order, skipping ``exclude`` folders.

    Symbolic links to folders and files are followed; each real folder and file is visited once
    (a link back to an ancestor cannot loop). Unreadable folders and broken links are appended
    to ``problems`` with the reason instead of being passed over in silence.
    """
    excluded = {Path(p).resolve() for p in exclude}
    seen_dirs: set[Path] = set()
    seen_files: set[Path] = set()

    def folder_error(error: OSError) -> None:
        if problems is not None:
            problems.append((Path(error.filename or root), f"unreadable folder ({type(error).__name__})"))

    for folder, dirs, files in os.walk(root, onerror=folder_error, followlinks=True):
        here = Path(folder)
        real = _real(here)
        if real is None or real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        targets = {d: _real(here / d) for d in dirs}
        dirs[:] = sorted(d for d, r in targets.items() if r is not None and r not in excluded and r not in seen_dirs)
        for name in sorted(files):
            path = here / name
            real_file = _real(path)
            if real_file is None:
                if problems is not None:
                    problems.append((path, "broken symbolic link"))
                continue
            if real_file in seen_files or not path.is_file():
                continue
            seen_files.add(real_file)
            yield path


def _real(path: Path) -> Path | None:
    """The real path behind any links, or None for a dangling link or a link loop."""
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return None


def sniff(head: bytes) -> str:
    """'' when the first bytes of a file can start a DICOM file, else why not.

    DICOM Part 10 files have 'DICM' at offset 128. Files without that preamble are still read
    when they start with a group 0002 or 0008 element (little or big endian), followed by an
    explicit VR or a 4-byte length: how preamble-less DICOM looks. Anything else is not DICOM,
    decided without reading the rest (a 60 MB junk file costs one small read).
    """
    if not head:
        return "empty file"
    if head[128:132] == b"DICM":
        return ""
    if len(head) < 8:
        return "not a DICOM file"
    little, big = int.from_bytes(head[:2], "little"), int.from_bytes(head[:2], "big")
    if little not in (0x0002, 0x0008) and big not in (0x0002, 0x0008):
        return "not a DICOM file"
    explicit_vr = head[4:6].isalpha() and head[4:6].isupper()
    short_length = min(int.from_bytes(head[4:8], "little"), int.from_bytes(head[4:8], "big")) < 0x10000
    return "" if explicit_vr or short_length else "not a DICOM file"


def read_header(path: Path) -> tuple[Any | None, str]:
    """(header-only dataset, "") or (None, reason) for files that are not image DICOM."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as error:
        return None, f"unreadable file ({type(error).__name__})"
    reason = sniff(head)
    if reason:
        return None, reason
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


def scan(root: Path, exclude: Iterable[Path] = ()) -> ScanResult:
    """Read every file's header below ``root`` and group image files into series."""
    ignored: list[tuple[Path, str]] = []
    return scan_files(iter_files(root, exclude, problems=ignored), ignored)


def scan_files(paths: Iterable[Path], ignored: list[tuple[Path, str]] | None = None) -> ScanResult:
    """Read the header of each of ``paths`` and group the image files into series.

    The cohort engine gives one study's files at a time (:mod:`cac_mhub.cohort.catalog`);
    :func:`scan` gives every file below a folder.
    """
    groups: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    ignored = [] if ignored is None else ignored
    for path in paths:
        ds, reason = read_header(path)
        if ds is None:
            ignored.append((path, reason))
            continue
        groups[identity.series_uid(ds, path)].append((path, ds))
    series = []
    for uid, items in groups.items():
        try:
            parts = stacks.split_series(items)
        except Exception:  # noqa: BLE001 - headers too odd to split: one series, as the UID says
            log.debug("splitting %s", uid, exc_info=True)
            parts = [stacks.Part(items, identity="")]
        differs = stacks.what_differs(parts) if len(parts) > 1 else ""
        for index, part in enumerate(parts):
            first = part.items[0][1]
            series.append(
                Series(
                    uid=uid,
                    study_uid=_text(first, "StudyInstanceUID"),
                    files=[p for p, _ in part.items],
                    headers=[d for _, d in part.items],
                    modality=_text(first, "Modality"),
                    description=_text(first, "SeriesDescription"),
                    notes=part.notes,
                    set_aside=part.set_aside,
                    identity=part.identity,
                    folder_suffix=part.identity if index else "",
                    shared_with=differs,
                )
            )
    series.sort(key=lambda s: (s.study_uid, _int(validate.value(s.first, "SeriesNumber")), s.uid, s.folder_suffix))
    return ScanResult(series=series, ignored=ignored)


def unreadable_beside(series: Series, ignored: Iterable[tuple[Path, str]]) -> list[Path]:
    """Files that could not be read in the folders holding ``series``: possibly its slices."""
    folders = {Path(p).parent for p in series.files}
    return [p for p, why in ignored if why.startswith(("unreadable file", "unreadable DICOM"))
            and Path(p).parent in folders]


def _text(ds: Any, keyword: str) -> str:
    raw = validate.value(ds, keyword)
    return "" if raw is None else str(raw).strip()


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# --- geometry from headers (no pixels) -------------------------------------------------------


def slice_normal(ds: Any) -> np.ndarray | None:
    """Unit normal of a slice from ImageOrientationPatient; None when that is absent or malformed."""
    iop = validate.numbers(ds, "ImageOrientationPatient", 6)
    if iop is None:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else None


def header_geometry(series: Series) -> dict[str, Any]:
    """Slice count, increment (median gap along the slice normal), thickness, pixel spacing.

    Total: a malformed value is left out (reports use it for series whose headers were refused),
    never an exception. Slices without 3 numbers in ImagePositionPatient are not counted.
    """
    positions = [validate.numbers(d, "ImagePositionPatient", 3) for d in series.headers]
    points = [p for p in positions if p is not None]
    info: dict[str, Any] = {"files": len(series.files), "slices": len(points)}
    first = series.first
    spacing = validate.numbers(first, "PixelSpacing", 2)
    if spacing is not None:
        info["pixel_spacing_mm"] = [round(v, 4) for v in spacing]
    rows, columns = validate.integer(first, "Rows"), validate.integer(first, "Columns")
    if rows is not None:
        info["rows"], info["columns"] = rows, columns or 0
    thickness = validate.number(first, "SliceThickness")
    info["slice_thickness_mm"] = round(thickness, 4) if thickness is not None else None
    normal = slice_normal(first)
    if normal is not None and len(points) >= 2:
        stack = np.array(points)
        stack = stack[np.argsort(stack @ normal)]
        # distance between neighbouring slice positions: the increment along the table, also
        # for gantry-tilted series, where it is longer than the step along the slice normal
        gaps = np.linalg.norm(np.diff(stack, axis=0), axis=1)
        nonzero = gaps[gaps > 1e-3]
        info["increment_mm"] = round(float(np.median(nonzero)), 4) if nonzero.size else 0.0
        info["extent_mm"] = round(float(np.linalg.norm(stack[-1] - stack[0])), 3)
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
    value = validate.value(ds, "ConvolutionKernel") or ""
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
    """True: DERIVED/SECONDARY series compete with ORIGINAL ones; False: they are scored only
    when their study has no ORIGINAL (or unknown-type) series that qualifies."""
    per_study: str = "best"
    """'best': one reconstruction per study (see :func:`preference_key`); 'all': every eligible one."""
    preferred_increment_mm: tuple[float, float] = (2.5, 3.0)

    def describe(self) -> list[str]:
        derived = (
            "DERIVED/SECONDARY accepted like ORIGINAL" if self.allow_derived else
            "DERIVED/SECONDARY (e.g. an axial MPR) only when the study has no ORIGINAL axial series "
            "that qualifies, with a warning"
        )
        return [
            "modality CT, CT Image Storage (single-frame)",
            "header values valid: rescale present, finite, slope > 0, the same on every slice; "
            "position/orientation/spacing numeric with the right count; orientation orthonormal; "
            f"image size at most {validate.MAX_MATRIX} x {validate.MAX_MATRIX}",
            f"ImageType ORIGINAL; missing ImageType accepted with a warning; {derived}; "
            "not localizer/scout, not MIP/projection",
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
    value = validate.value(ds, "ImageType") or []
    if isinstance(value, str):
        value = value.split("\\")
    return [str(v).strip().upper() for v in value]


def image_kind(series: Series) -> tuple[str, str]:
    """('original' | 'derived' | 'unknown', the ImageType shown in reasons) of the non-localizer
    images: derived when any is DERIVED, SECONDARY or a reformat; unknown when ImageType is
    missing or names neither ORIGINAL nor DERIVED."""
    kind, shown = "original", ""
    for image_type in (_image_type(d) for d in series.headers):
        if set(image_type) & LOCALIZER_TYPES:
            continue
        text = "\\".join(image_type)
        if image_type[:1] == ["DERIVED"] or image_type[1:2] == ["SECONDARY"] or set(image_type) & REFORMAT_TYPES:
            return "derived", text
        if image_type[:1] != ["ORIGINAL"] and kind == "original":
            kind, shown = "unknown", text
        shown = shown or text
    return kind, shown


def eligibility(series: Series, rules: SelectionRules) -> str:
    """Empty string when the series may be scored, else the one-line reason why not.

    Whether a DERIVED series may be scored depends on the other series of its study: that rule
    is applied by :func:`select`.
    """
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
    for image_type in types:
        if set(image_type) & PROJECTION_TYPES and not set(image_type) & LOCALIZER_TYPES:
            shown = "\\".join(image_type)
            return f"reformatted/projection images (ImageType {shown}): not one slice per plane"
    problem = validate.series_problem(series.files, series.headers)
    if problem:
        return f"invalid header: {problem}"
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


def _checked(series: Series, rules: SelectionRules) -> str:
    """:func:`eligibility`, with any surprise in a header turned into a reason, never a crash."""
    try:
        return eligibility(series, rules)
    except Exception as error:  # noqa: BLE001 - one bad series must not stop the run
        log.debug("eligibility of %s", series.uid, exc_info=True)
        return f"invalid header: cannot be checked ({type(error).__name__})"


def select(all_series: list[Series], rules: SelectionRules) -> list[Series]:
    """Mark each series selected or not (with its reason and warnings); return the selected ones."""
    by_study: dict[tuple[str, str], list[Series]] = defaultdict(list)
    for series in all_series:
        series.rules = rules.describe()
        series.warnings = []
        _choose_reconstruction(series, rules)
        series.reason = _checked(series, rules)
        series.selected = not series.reason
        if series.selected:  # one patient's study (two patients may share a careless StudyInstanceUID)
            by_study[(_text(series.first, "PatientID"), series.study_uid or series.uid)].append(series)
    for study, candidates in by_study.items():
        kinds = {id(s): image_kind(s) for s in candidates}
        has_original = any(kinds[id(s)][0] != "derived" for s in candidates)
        for series in candidates:
            kind, shown = kinds[id(series)]
            if kind == "unknown":
                what = f"ImageType {shown} names neither ORIGINAL nor DERIVED" if shown else "no ImageType"
                series.warnings.append(f"{what}: taken as an original acquisition")
            elif kind == "derived" and has_original and not rules.allow_derived:
                series.selected = False
                series.reason = (f"derived or secondary images (ImageType {shown}): an ORIGINAL axial series "
                                 "of this study is preferred")
            elif kind == "derived" and not rules.allow_derived:
                series.warnings.append(f"derived axial reconstruction (ImageType {shown}) scored: the study has no "
                                       "ORIGINAL axial series that qualifies")
        by_study[study] = [s for s in candidates if s.selected]
    if rules.per_study == "best":
        for candidates in by_study.values():
            if not candidates:
                continue
            candidates.sort(key=lambda s: _safe_preference(s, rules))
            best = candidates[0]
            for other in candidates[1:]:
                other.selected = False
                other.warnings = []
                other.reason = (f"another reconstruction of this study is preferred: {label(best)} "
                                f"({best.description or 'no description'})")
    return [s for s in all_series if s.selected]


def _choose_reconstruction(series: Series, rules: SelectionRules) -> None:
    """Several reconstructions under one SeriesInstanceUID (e.g. 2 mm and 5 mm slices, which
    read as one stack with missing slices): keep the one the rules prefer (eligible first, then
    :func:`preference_key`), set the others aside with a note that names them."""
    try:
        groups = stacks.reconstructions(list(zip(series.files, series.headers)))
    except Exception:  # noqa: BLE001 - a stack too odd to split stays as it is
        log.debug("reconstructions of %s", series.uid, exc_info=True)
        return
    if len(groups) < 2:
        return
    candidates = []
    for members in groups:
        candidate = Series(uid=series.uid, study_uid=series.study_uid, files=[p for p, _ in members],
                           headers=[d for _, d in members], modality=series.modality, description=series.description)
        candidates.append((bool(_checked(candidate, rules)), _safe_preference(candidate, rules), members))
    candidates.sort(key=lambda c: (c[0], c[1]))
    _, _, best = candidates[0]
    rest = [members for _, _, members in candidates[1:]]
    series.files, series.headers = [p for p, _ in best], [d for _, d in best]
    for members in rest:
        series.set_aside += [(p, "another reconstruction under the same SeriesInstanceUID") for p, _ in members]
    others = "; ".join(f"{stacks.describe(m)} ({stacks.names(p for p, _ in m)})" for m in rest)
    series.notes.append(f"{len(groups)} reconstructions under this SeriesInstanceUID: {stacks.describe(best)} "
                        f"scored (preferred by the selection rules); set aside: {others}")


def label(series: Series) -> str:
    """The series as reasons name it: its UID, with the folder suffix when it shares the UID."""
    return f"{series.uid}_{series.folder_suffix}" if series.folder_suffix else series.uid


def _safe_preference(series: Series, rules: SelectionRules) -> tuple[float, int, int]:
    try:
        return preference_key(series, rules)
    except Exception:  # noqa: BLE001 - ranking last is enough for a series that cannot be ranked
        return (float("inf"), 9, 0)
