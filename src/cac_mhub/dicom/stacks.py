"""What one SeriesInstanceUID really holds: series, the stack to score, and what is set aside.

A SeriesInstanceUID is not an identity. A careless anonymiser or a phantom copied twice gives
two patients' series one UID; a PACS export files the scouts, a second reconstruction or a dose
screen under the axial series' UID; a series is split over two folders. Pure functions over
header-only datasets (no pixels), used by :func:`cac_mhub.dicom.scan.scan_files`:

* :func:`split_series` groups the files of one UID into :class:`Part`\\ s. Copies of one slice
  (the same SOPInstanceUID in two files) are read once. Objects that are not CT images
  (a dose report, a secondary capture) and localizer images are set aside when the UID also
  holds CT images. Different patients or studies are different series. Within one, each
  geometry (orientation, pixel spacing, matrix) of at least :data:`MIN_STACK` images is a series
  of its own; smaller groups beside a larger one (scouts with another orientation, a stray
  screen capture) are set aside.
* :func:`reconstructions` splits one part by slice thickness and kernel when several
  interleaved reconstructions share it; :func:`cac_mhub.dicom.scan.select` scores the one the
  selection rules prefer and sets the others aside.

Every set-aside file keeps its reason, and the series carries a warning that names the files.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import validate
from .uids import CT_IMAGE_STORAGE, ENHANCED_CT_STORAGE

LOCALIZER_TYPES = {"LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM"}
#: Fewest images of one geometry that count as a series of their own beside a larger group of the
#: same UID; fewer are set aside (two scouts, a dose screen stored as a CT image).
MIN_STACK = 5
#: Fewest images of each thickness/kernel for a UID to count as several reconstructions.
MIN_RECONSTRUCTION = 3

Item = tuple[Path, Any]
"""(file, header-only dataset)."""

_SOP_NAMES = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State",
}


@dataclass
class Part:
    """One series among the files of a SeriesInstanceUID."""

    items: list[Item]
    identity: str
    """Stable short hash of patient, study and geometry: the output folder suffix when the UID is shared."""
    patient: str = ""
    study: str = ""
    geometry: str = ""
    set_aside: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Warnings for the series' report and row (what was set aside or read once)."""


def _text(ds: Any, keyword: str) -> str:
    raw = validate.value(ds, keyword)
    return "" if raw is None else str(raw).strip()


def sop_class(ds: Any) -> str:
    value = _text(ds, "SOPClassUID")
    meta = getattr(ds, "file_meta", None)
    return value or (_text(meta, "MediaStorageSOPClassUID") if meta is not None else "")


def image_type(ds: Any) -> list[str]:
    value = validate.value(ds, "ImageType") or []
    if isinstance(value, str):
        value = value.split("\\")
    try:
        return [str(v).strip().upper() for v in value]
    except TypeError:
        return []


def is_localizer(ds: Any) -> bool:
    return bool(set(image_type(ds)) & LOCALIZER_TYPES)


def geometry_key(ds: Any) -> str | None:
    """Orientation, pixel spacing and matrix of a slice, rounded: what one stack shares. None when
    any is missing or malformed: such a slice stays with the stack, and validation refuses it
    with its file named (a broken header is not another series)."""
    iop = validate.numbers(ds, "ImageOrientationPatient", 6)
    spacing = validate.numbers(ds, "PixelSpacing", 2)
    rows, columns = validate.integer(ds, "Rows"), validate.integer(ds, "Columns")
    if iop is None or spacing is None or validate.orientation_problem(iop) or min(spacing) <= 0 \
            or not (rows and columns and 0 < rows <= validate.MAX_MATRIX and 0 < columns <= validate.MAX_MATRIX):
        return None
    return " ".join([",".join(f"{v:.2f}" for v in iop), ",".join(f"{v:.3f}" for v in spacing), f"{rows}x{columns}"])


def short_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:8]


def names(paths: Iterable[Path], limit: int = 3) -> str:
    """``IM0001.dcm, IM0002.dcm, ... (5 files)``: file names only (never folder names)."""
    listed = sorted({Path(p).name for p in paths})
    shown = ", ".join(listed[:limit])
    return shown + (f", ... ({len(listed)} files)" if len(listed) > limit else "")


def _deduplicate(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """(kept, copies): a SOPInstanceUID found in several files is one slice, read once."""
    kept, copies, seen = [], [], set()
    for path, ds in items:
        uid = _text(ds, "SOPInstanceUID")
        if uid and uid in seen:
            copies.append((path, ds))
            continue
        seen.add(uid)
        kept.append((path, ds))
    return kept, copies


def split_series(items: list[Item]) -> list[Part]:
    """The series among the files of one SeriesInstanceUID (see the module docstring), largest first."""
    common_notes: list[str] = []
    common_aside: list[tuple[Path, str]] = []
    images = [(p, d) for p, d in items if sop_class(d) in (CT_IMAGE_STORAGE, ENHANCED_CT_STORAGE)]
    others = [(p, d) for p, d in items if sop_class(d) not in (CT_IMAGE_STORAGE, ENHANCED_CT_STORAGE)]
    if images and others:
        kinds = sorted({_SOP_NAMES.get(sop_class(d), sop_class(d) or "no SOP class") for _, d in others})
        common_aside += [(p, "not a CT image") for p, _ in others]
        common_notes.append(f"{len(others)} object(s) under this SeriesInstanceUID are not CT images "
                            f"({', '.join(kinds)}) and were set aside: {names(p for p, _ in others)}")
        items = images
    by_owner: dict[tuple[str, str], list[Item]] = defaultdict(list)
    for path, ds in items:
        by_owner[(_text(ds, "PatientID"), _text(ds, "StudyInstanceUID"))].append((path, ds))
    parts: list[Part] = []
    for (patient, study), owned in by_owner.items():
        owned, copies = _deduplicate(owned)
        found = _by_geometry(owned, patient, study)
        if copies:
            found[0].set_aside += [(p, "a copy of another file (same SOPInstanceUID)") for p, _ in copies]
            found[0].notes.insert(0, f"{len(copies)} file(s) are copies of slices found in other files (same "
                                     f"SOPInstanceUID) and were read once: {names(p for p, _ in copies)}")
        parts += found
    order = {id(ds): index for index, (_, ds) in enumerate(items)}
    for part in parts:  # files in the order they were found, as before the split
        part.items.sort(key=lambda item: order.get(id(item[1]), 0))
    parts.sort(key=lambda part: (-len(part.items), part.identity))
    if parts:
        parts[0].notes[:0] = common_notes
        parts[0].set_aside[:0] = common_aside
    return parts


def _by_geometry(items: list[Item], patient: str, study: str) -> list[Part]:
    """One part per geometry of one patient's study; scouts and small odd groups set aside."""
    aside: list[tuple[Path, str]] = []
    notes: list[str] = []
    scouts = [(p, d) for p, d in items if is_localizer(d)]
    if scouts and len(scouts) < len(items):
        items = [(p, d) for p, d in items if not is_localizer(d)]
        aside += [(p, "localizer/scout image") for p, _ in scouts]
        notes.append(f"{len(scouts)} localizer/scout image(s) under this SeriesInstanceUID set aside: "
                     f"{names(p for p, _ in scouts)}")
    groups: dict[str, list[Item]] = defaultdict(list)
    broken: list[Item] = []
    for path, ds in items:
        key = geometry_key(ds)
        (broken if key is None else groups[key]).append((path, ds))
    if not groups:
        groups["-"] = []
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ordered[0][1].extend(broken)
    largest = len(ordered[0][1])
    parts: list[Part] = []
    for geometry, members in ordered:
        if parts and len(members) < MIN_STACK and len(members) < largest:
            aside += [(p, "another orientation, pixel spacing or matrix than the stack") for p, _ in members]
            notes.append(f"{len(members)} image(s) with another orientation, pixel spacing or matrix than the "
                         f"stack set aside (scouts or screen captures?): {names(p for p, _ in members)}")
            continue
        parts.append(Part(members, short_hash(patient, study, geometry), patient, study, geometry))
    parts[0].set_aside += aside
    parts[0].notes += notes
    return parts


def reconstructions(items: list[Item]) -> list[list[Item]]:
    """Interleaved reconstructions of one stack (slice thickness, kernel), largest first; one
    group when there is only one (or when the others are too small to be a reconstruction)."""
    groups: dict[tuple[str, str], list[Item]] = defaultdict(list)
    for path, ds in items:
        thickness = validate.number(ds, "SliceThickness")
        kernel = _text(ds, "ConvolutionKernel")
        groups[(f"{thickness:.2f}" if thickness is not None else "-", kernel)].append((path, ds))
    if len(groups) < 2 or sum(len(g) >= MIN_RECONSTRUCTION for g in groups.values()) < 2:
        return [items]
    if not _overlapping(list(groups.values())):
        return [items]  # one stack whose thickness changes along the table: not several reconstructions
    return sorted(groups.values(), key=len, reverse=True)


def _overlapping(groups: list[list[Item]]) -> bool:
    """True when at least two groups cover a common stretch of the table (interleaved)."""
    spans = []
    for members in groups:
        z = [p[2] for p in (validate.numbers(d, "ImagePositionPatient", 3) for _, d in members) if p is not None]
        if len(z) >= 2:
            spans.append((min(z), max(z)))
    spans.sort()
    return any(b[0] < a[1] for a, b in zip(spans, spans[1:]))


def describe(items: list[Item]) -> str:
    """``5 mm, kernel B30f, 24 images``: a reconstruction as warnings name it."""
    first = items[0][1]
    thickness = validate.number(first, "SliceThickness")
    kernel = _text(first, "ConvolutionKernel")
    bits = [f"{thickness:g} mm" if thickness is not None else "thickness unknown"]
    if kernel:
        bits.append(f"kernel {kernel}")
    bits.append(f"{len(items)} images")
    return ", ".join(bits)


def what_differs(parts: list[Part]) -> str:
    """'patient', 'study', 'geometry' (joined) among the parts of one UID."""
    found = [name for name, values in (("patient", {p.patient for p in parts}), ("study", {p.study for p in parts}),
                                       ("geometry", {p.geometry for p in parts})) if len(values) > 1]
    return "/".join(found) or "headers"
