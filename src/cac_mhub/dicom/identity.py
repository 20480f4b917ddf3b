"""The source CT's identity as the DICOM writers copy it: complete UIDs and valid patient/study values.

Real files lack what the writers need: anonymisers blank Study/Series/SOP Instance UIDs (and
sometimes FrameOfReferenceUID), others write 'UNKNOWN' into StudyDate or PatientBirthDate.
highdicom copies the patient and study attributes of the first source image and references
every source image by its UIDs, so either fails the series after scoring. Here, in one place:

* :func:`derived_uid` makes a stable UID ``2.25.<integer from sha256 of identifying content>``;
  the same files always get the same UIDs, so SEG, SR and report agree and a re-run matches;
* :func:`sop_uid` is a slice's SOPInstanceUID: its own, else the file meta header's, else derived
  (volume assembly and the writers both use it, so SEG frames reference the volume's slices);
* :func:`writer_sources` returns copies of the series headers with the UIDs filled in and the
  copied patient/study attributes made valid (dropped, emptied or rewritten), with warnings that
  name the attributes, never their values. The headers read at import stay untouched.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.datadict import dictionary_VR, tag_for_keyword

from ..types import Series
from .validate import numbers, value

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

#: Attributes highdicom reads directly from the first source image (type 2: present, may be empty).
TYPE2_COPIED = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
    "StudyDate", "StudyTime", "ReferringPhysicianName",
)
_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^(?:[01]\d|2[0-3])(?:[0-5]\d(?:(?:[0-5]\d|60)(?:\.\d{1,6})?)?)?$")
_DT = re.compile(r"^\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?(?:[+-]\d{4})?$")
_AS = re.compile(r"^\d{3}[DWMY]$")
_CONTROL = re.compile(r"[\x00-\x1a\x1c-\x1f]")


def derived_uid(*parts: Any) -> str:
    """``2.25.<int>``: 120 bits of sha256 over the parts (a UUID-derived UID, PS3.5 B.2)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return f"2.25.{int(digest[:30], 16)}"


def _text(ds: Any, keyword: str) -> str:
    raw = value(ds, keyword)
    return "" if raw is None else str(raw).strip()


def _as_before(ds: Any, keyword: str) -> str:
    """``str(ds.get(keyword, ""))`` as ids were always made (so they stay the same), never raising."""
    try:
        return str(ds.get(keyword, ""))
    except Exception:  # noqa: BLE001
        return ""


def series_uid(ds: Any, path: Path) -> str:
    """SeriesInstanceUID, or a stable id for files without one, from what identifies a series
    (patient, study, frame of reference, number, description, acquisition, size, orientation,
    folder)."""
    own = _text(ds, "SeriesInstanceUID")
    if own:
        return own
    keys = ("PatientID", "StudyInstanceUID", "StudyDate", "FrameOfReferenceUID", "Modality",
            "SeriesNumber", "SeriesDescription", "AcquisitionNumber", "Rows", "Columns", "PixelSpacing")
    parts = [_as_before(ds, k) for k in keys]
    iop = numbers(ds, "ImageOrientationPatient", 6)
    parts.append(",".join(f"{v:.3f}" for v in iop) if iop else "")
    parts.append(str(Path(path).parent))
    return derived_uid(*parts)


def sop_uid_source(ds: Any) -> str:
    """Where a slice's SOPInstanceUID comes from: 'own', 'file meta' or 'derived'."""
    if _text(ds, "SOPInstanceUID"):
        return "own"
    meta = getattr(ds, "file_meta", None)
    if meta is not None and _text(meta, "MediaStorageSOPInstanceUID"):
        return "file meta"
    return "derived"


def sop_uid(ds: Any, path: Path, series: str) -> str:
    """SOPInstanceUID of a slice: its own, the file meta header's, or derived from the series id,
    file name and size, and the slice's number, position and times (stable, distinct per slice;
    identical copies of one file get the same one)."""
    source = sop_uid_source(ds)
    if source == "own":
        return _text(ds, "SOPInstanceUID")
    if source == "file meta":
        return _text(ds.file_meta, "MediaStorageSOPInstanceUID")
    try:
        size = Path(path).stat().st_size
    except OSError:
        size = -1
    keys = ("InstanceNumber", "ImagePositionPatient", "AcquisitionNumber", "AcquisitionTime", "ContentTime")
    return derived_uid("sop", series, Path(path).name, size, *(str(value(ds, k)) for k in keys))


def study_uid(series: Series) -> tuple[str, bool]:
    """(StudyInstanceUID, derived?): the files' own, else derived from what identifies a study,
    so that UID-less series of one study share it; with nothing to go on, one per series."""
    for ds in series.headers:
        own = _text(ds, "StudyInstanceUID")
        if own:
            return own, False
    first = series.first
    keys = ("PatientID", "PatientName", "PatientBirthDate", "StudyDate", "StudyTime", "AccessionNumber",
            "StudyID", "StudyDescription")
    parts = [_text(first, k) for k in keys]
    if not any(parts):
        parts.append(series.uid)
    return derived_uid("study", *parts), True


def frame_of_reference_uid(series: Series) -> tuple[str, bool]:
    """(FrameOfReferenceUID, derived?): the files' own, else one derived for this series alone."""
    for ds in series.headers:
        own = _text(ds, "FrameOfReferenceUID")
        if own:
            return own, False
    return derived_uid("frame-of-reference", study_uid(series)[0], series.uid), True


def uid_report(series: Series) -> dict[str, Any]:
    """The UIDs that were not in the files and what replaced them ({} when all are present)."""
    report: dict[str, Any] = {}
    study, study_derived = study_uid(series)
    if study_derived:
        report["StudyInstanceUID"] = study
    if not _text(series.first, "SeriesInstanceUID"):
        report["SeriesInstanceUID"] = series.uid
    frame, frame_derived = frame_of_reference_uid(series)
    if frame_derived:
        report["FrameOfReferenceUID"] = frame
    sources = [sop_uid_source(ds) for ds in series.headers]
    if any(s != "own" for s in sources):
        report["SOPInstanceUID"] = {
            "files": len(sources),
            "from_file_meta": sources.count("file meta"),
            "derived": sources.count("derived"),
        }
    return report


def uid_message(report: dict[str, Any]) -> str:
    """One warning line for :func:`uid_report` ('' when nothing was missing)."""
    if not report:
        return ""
    names = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID") if k in report]
    sop = report.get("SOPInstanceUID")
    if sop:
        how = []
        if sop["from_file_meta"]:
            how.append(f"{sop['from_file_meta']} from the file meta header")
        if sop["derived"]:
            how.append(f"{sop['derived']} derived")
        names.append(f"SOPInstanceUID in {sop['from_file_meta'] + sop['derived']} of {sop['files']} files "
                     f"({', '.join(how)})")
    return (
        f"the source CT files carry no {', '.join(names)}: the missing UIDs are taken from the file meta "
        "header or derived stably (2.25.<sha256 of the headers>), the same in SEG, SR and this report "
        "(uids_derived)"
    )


# --- patient/study values ----------------------------------------------------------------------


@lru_cache(maxsize=None)
def copied_keywords(sop_class: str = CT_IMAGE_STORAGE) -> tuple[str, ...]:
    """Root attributes of the Patient and Study modules: what highdicom copies into SEG and SR
    (from highdicom's own tables; a fixed list of the dated and named ones if those move)."""
    found: list[str] = []
    try:
        from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map

        iod = get_sop_class_iod_map().get(sop_class) or get_sop_class_iod_map()[CT_IMAGE_STORAGE]
        attributes = get_module_attribute_map()
        for module in get_iod_module_map()[iod]:
            if module["ie"] in ("Patient", "Study"):
                found += [str(a["keyword"]) for a in attributes[module["key"]] if len(a["path"]) == 0]
    except (ImportError, KeyError, TypeError):
        found = ["PatientBirthTime", "OtherPatientNames", "ResponsiblePerson", "ConsultingPhysicianName",
                 "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "PatientAge", "LastMenstrualDate"]
    return tuple(dict.fromkeys(found + list(TYPE2_COPIED)))


def _valid_date(text: str) -> bool:
    try:
        _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return False
    return True


def _valid_pn(text: str) -> bool:
    groups = text.split("=")
    return len(groups) <= 3 and not _CONTROL.search(text) and all(
        len(g) <= 64 and g.count("^") <= 4 for g in groups
    )


def _check(vr: str, keyword: str, text: str) -> tuple[bool, str]:
    """(valid, fixed text) of one value; fixed text differs only for repairable old forms."""
    text = text.strip()
    if not text:
        return True, text
    if keyword == "PatientSex":
        return text in ("M", "F", "O"), text
    if vr == "DA":
        fixed = text.replace(".", "") if re.fullmatch(r"\d{4}\.\d{2}\.\d{2}", text) else text
        return bool(_DA.match(fixed)) and _valid_date(fixed), fixed
    if vr == "TM":
        fixed = text.replace(":", "") if re.fullmatch(r"\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?", text) else text
        return bool(_TM.match(fixed)), fixed
    if vr == "DT":
        return bool(_DT.match(text)) and (len(text) < 8 or _valid_date(text[:8])), text
    if vr == "AS":
        return bool(_AS.match(text)), text
    if vr == "PN":
        return _valid_pn(text), text
    return True, text


def _own_copy(ds: Any) -> Any:
    """A copy of a header whose element table is its own: replacing an element in the copy
    leaves the header read at import as it was (elements are shared until replaced)."""
    out = copy.copy(ds)
    out._dict = dict(ds._dict)
    return out


def _set(ds: Any, keyword: str, text: str) -> None:
    tag = tag_for_keyword(keyword)
    ds[tag] = DataElement(tag, dictionary_VR(tag), text)  # a new element: never edits a shared one


def sanitise(ds: Any) -> tuple[list[str], list[str], list[str]]:
    """Make the copied patient/study attributes of ``ds`` (an own copy) valid, in place.

    Returns (dropped, rewritten, added) keywords: invalid values are emptied (attributes the
    writers need) or removed; old-style dates/times ('1950.01.01', '12:00:00') are rewritten;
    missing type-2 attributes are added empty.
    """
    dropped, rewritten, added = [], [], []
    for keyword in copied_keywords(str(value(ds, "SOPClassUID") or CT_IMAGE_STORAGE)):
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        if tag not in ds:
            if keyword in TYPE2_COPIED:
                _set(ds, keyword, "")
                added.append(keyword)
            continue
        vr = dictionary_VR(tag)
        if vr not in ("DA", "TM", "DT", "AS", "PN") and keyword != "PatientSex":
            continue
        try:
            raw = ds[tag].value
            items = [str(v) for v in raw] if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue" \
                else [str(raw if raw is not None else "")]
            checked = [_check(vr, keyword, item) for item in items]
        except Exception:  # noqa: BLE001 - a value that cannot even be read is invalid
            checked = [(False, "")]
        if not all(ok for ok, _ in checked):
            if keyword in TYPE2_COPIED:
                _set(ds, keyword, "")
            else:
                del ds[tag]
            dropped.append(keyword)
        elif any(fixed != item.strip() for (_, fixed), item in zip(checked, items)):
            _set(ds, keyword, "\\".join(fixed for _, fixed in checked))
            rewritten.append(keyword)
    return dropped, rewritten, added


@dataclass
class WriterSources:
    """Copies of a series' headers, ready for highdicom, and what had to change."""

    headers: list[Any]
    """One per series file, in the series' file order, UIDs complete, patient/study values valid."""
    uids: dict[str, Any] = field(default_factory=dict)
    """:func:`uid_report` of the series ({} when the files had every UID)."""
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when the files on disk differ from what the writers should copy."""
        return bool(self.uids) or len(self.warnings) > 0


def writer_sources(series: Series) -> WriterSources:
    """Headers the SEG and SR writers can copy from (see the module docstring)."""
    from .scan import sop_class_of

    study, _ = study_uid(series)
    frame, _ = frame_of_reference_uid(series)
    uids = uid_report(series)
    out: list[Any] = []
    dropped: set[str] = set()
    rewritten: set[str] = set()
    added: set[str] = set()
    for path, ds in zip(series.files, series.headers):
        filled = _own_copy(ds)
        for keyword, uid in (("StudyInstanceUID", study), ("SeriesInstanceUID", series.uid),
                             ("FrameOfReferenceUID", frame)):
            if not _text(ds, keyword):
                _set(filled, keyword, uid)
        if not _text(ds, "SOPInstanceUID"):
            _set(filled, "SOPInstanceUID", sop_uid(ds, path, series.uid))
        if not _text(ds, "SOPClassUID") and sop_class_of(ds):
            _set(filled, "SOPClassUID", sop_class_of(ds))
        d, r, a = sanitise(filled)
        dropped.update(d), rewritten.update(r), added.update(a)
        out.append(filled)
    warnings = [uid_message(uids)] if uids else []
    if dropped:
        warnings.append(f"source CT values that are not valid DICOM left out of SEG/SR: {', '.join(sorted(dropped))}")
    if rewritten:
        warnings.append(f"source CT dates/times in an old form rewritten for SEG/SR: {', '.join(sorted(rewritten))}")
    if added:
        warnings.append(f"source CT lacks {', '.join(sorted(added))}: written empty in SEG/SR")
    return WriterSources(headers=out, uids=uids, warnings=warnings)
