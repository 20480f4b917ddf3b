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
  copied patient/study/equipment attributes made valid (:func:`sanitise`: decoded whatever the
  character set, cut to their VR's length, control characters removed, invalid values dropped,
  emptied or rewritten; UTF-8 declared when any is not ASCII), with warnings that name the
  attributes, never their values. The headers read at import stay untouched.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import re
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.datadict import dictionary_VM, dictionary_VR, tag_for_keyword
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

from ..types import Series
from .uids import CT_IMAGE_STORAGE, sop_class_of
from .validate import numbers, value

#: Attributes highdicom reads directly from the first source image (type 2: present, may be empty).
TYPE2_COPIED = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
    "StudyDate", "StudyTime", "ReferringPhysicianName",
)
_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^(?:[01]\d|2[0-3])(?:[0-5]\d(?:(?:[0-5]\d|60)(?:\.\d{1,6})?)?)?$")
_DT = re.compile(r"^\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?(?:[+-]\d{4})?$")
_AS = re.compile(r"^\d{3}[DWMY]$")
#: Equipment attributes highdicom copies from a source image into SEG and SR (Contributing
#: Equipment Sequence of the source's acquisition).
EQUIPMENT_COPIED = (
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "DeviceSerialNumber", "InstitutionName",
    "InstitutionalDepartmentName", "InstitutionAddress", "StationName",
)
#: Longest value in bytes per text VR (PS3.5 table 6.2-1; PN: per component group). Counted in
#: UTF-8 bytes, never splitting a character: validators (dciodvfy) count bytes.
TEXT_MAX = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240, "UC": 1 << 20,
            "UT": 1 << 20}
#: Control characters each text VR allows (PS3.5 6.1.3: LT/ST/UT keep line structure); ESC is
#: dropped everywhere: the copies are written as UTF-8, never ISO 2022.
_TEXT_CONTROL = {vr: re.compile(r"[\x00-\x1f\x7f]") for vr in ("AE", "CS", "SH", "LO", "PN", "UC")}
_TEXT_CONTROL.update({vr: re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]") for vr in ("ST", "LT", "UT")})
_CS = re.compile(r"^[A-Z0-9 _]*$")
_DS = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_IS = re.compile(r"^[+-]?\d+$")
#: What the writers declare when any copied text is not ASCII.
UTF8 = "ISO_IR 192"


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


def _check(vr: str, keyword: str, text: str) -> tuple[bool, str]:
    """(valid, fixed text) of one date, time or age value; fixed text differs only for
    repairable old forms (text VRs: :func:`_valid_text`)."""
    text = text.strip()
    if not text:
        return True, text
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
    return True, text


def _own_copy(ds: Any) -> Any:
    """A copy of a header whose element table is its own: replacing an element in the copy
    leaves the header read at import as it was (elements are shared until replaced)."""
    out = copy.copy(ds)
    out._dict = dict(ds._dict)
    return out


def _set(ds: Any, keyword: str, text: Any) -> None:
    tag = tag_for_keyword(keyword)
    ds[tag] = DataElement(tag, dictionary_VR(tag), text)  # a new element: never edits a shared one


# --- text: decoded robustly, made valid for its VR ------------------------------------------------


def declared_encodings(ds: Any) -> tuple[list[str], str]:
    """(Python codecs of the declared SpecificCharacterSet, problem): no declaration is [] (the
    default repertoire, ASCII); an unknown term is a problem (its text is decoded robustly)."""
    from pydicom.charset import python_encoding

    raw = value(ds, "SpecificCharacterSet")
    terms = [str(t).strip() for t in (raw if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue"
                                      else [raw or ""])]
    terms = [t for t in terms if t] or []
    if not terms or terms == ["ISO_IR 6"]:
        return [], ""
    codecs = []
    for term in terms:
        codec = python_encoding.get(term)
        if codec is None:
            return [], f"unknown SpecificCharacterSet {term[:32]!r}"
        codecs.append(codec)
    return codecs, ""


def decode_text(raw: bytes, codecs: list[str]) -> tuple[str, str]:
    """(text, how) of raw value bytes: by the declared character set when it decodes them, else
    robustly, and ``how`` says so ('' when the declaration held): UTF-8 when the bytes are valid
    UTF-8 (a Latin-1 text almost never is), else Windows-1252 / Latin-1 (the usual undeclared
    Western text)."""
    if raw.isascii() and b"\x1b" not in raw:
        return raw.decode("ascii"), ""
    if codecs:
        try:
            if len(codecs) == 1:
                return raw.decode(codecs[0]), ""
            from pydicom.charset import decode_bytes  # ISO 2022 escape sequences

            with warnings.catch_warnings():
                warnings.simplefilter("error")
                return decode_bytes(raw, codecs, set()), ""
        except (UnicodeDecodeError, LookupError, UserWarning, ValueError):
            pass
    try:
        return raw.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), "Latin-1"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "Latin-1"


def _raw_value_bytes(element: Any, codecs: list[str]) -> bytes | None:
    """The bytes a text element was read from, when they can be had: raw elements give them;
    values pydicom already decoded with the default repertoire (it reads undeclared bytes as
    Latin-1) are encoded back; None for text that was decoded with a declared set (keep it)."""
    if isinstance(element, RawDataElement):
        return element.value or b""
    values = element.value
    items = list(values) if isinstance(values, (list, tuple)) or type(values).__name__ == "MultiValue" else [values]
    if items and all(isinstance(i, PersonName) and isinstance(i.original_string, bytes) for i in items):
        return b"\\".join(i.original_string for i in items)  # a name keeps the bytes it was read from
    if codecs:
        return None
    parts = []
    for item in items:
        try:
            parts.append(str("" if item is None else item).encode("latin-1"))
        except UnicodeEncodeError:
            return None
    return b"\\".join(parts)


def _text_items(ds: Any, tag: Any, codecs: list[str]) -> tuple[list[str], str]:
    """(values as text, how they were decoded: '' / 'UTF-8' / 'Latin-1') of a text element."""
    element = ds._dict[tag]
    raw = _raw_value_bytes(element, codecs)
    if raw is not None:
        text, how = decode_text(raw.rstrip(b"\x00 "), codecs)
        return text.split("\\"), how
    values = ds[tag].value
    items = list(values) if isinstance(values, (list, tuple)) or type(values).__name__ == "MultiValue" else [values]
    return ["" if v is None else str(v) for v in items], ""


def _fit(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore").rstrip()


def _valid_text(vr: str, items: list[str], single: bool) -> tuple[list[str], set[str]]:
    """Items made valid for ``vr``; the set names what was done: 'cut', 'control', 'invalid'."""
    done: set[str] = set()
    if single and len(items) > 1:  # a backslash in a single-valued text splits it: keep it one value
        items = ["/".join(items)]
        done.add("control")
    out = []
    for item in items:
        cleaned = _TEXT_CONTROL[vr].sub(" " if vr != "CS" else "", item).strip()
        if cleaned != item.strip():
            done.add("control")
        if vr == "PN":
            groups = cleaned.split("=")
            if len(groups) > 3 or any(g.count("^") > 4 for g in groups):
                done.add("invalid")
                cleaned = ""
            else:
                fitted = "=".join(_fit(g, TEXT_MAX["PN"]) for g in groups).rstrip("=")
                if fitted != cleaned:
                    done.add("cut")
                cleaned = fitted
        else:
            fitted = _fit(cleaned, TEXT_MAX[vr])
            if fitted != cleaned:
                done.add("cut")
            cleaned = fitted
        if vr == "CS" and not _CS.match(cleaned):
            done.add("invalid")
            cleaned = ""
        out.append(cleaned)
    return out, done


@dataclass
class Fixes:
    """What :func:`sanitise` changed, by attribute keyword (for the warnings)."""

    dropped: set[str] = field(default_factory=set)
    rewritten: set[str] = field(default_factory=set)
    added: set[str] = field(default_factory=set)
    cut: set[str] = field(default_factory=set)
    cleaned: set[str] = field(default_factory=set)
    decoded: dict[str, set[str]] = field(default_factory=dict)
    """'UTF-8' / 'Latin-1' -> attributes whose bytes the declared character set did not describe."""
    non_ascii: bool = False
    charset_problem: str = ""

    def merge(self, other: "Fixes") -> None:
        for name in ("dropped", "rewritten", "added", "cut", "cleaned"):
            getattr(self, name).update(getattr(other, name))
        for how, names in other.decoded.items():
            self.decoded.setdefault(how, set()).update(names)
        self.non_ascii |= other.non_ascii
        self.charset_problem = self.charset_problem or other.charset_problem


def _fix_element(ds: Any, tag: Any, keyword: str, codecs: list[str], fixes: Fixes, required: bool) -> None:
    """Make one copied element valid in ``ds`` (an own copy): text decoded and fitted to its VR,
    dates/times checked or rewritten, numbers checked, sequences item by item; an invalid value
    is emptied (``required``: the writers need it) or removed."""
    vr = dictionary_VR(tag) if keyword else ds._dict[tag].VR
    name = keyword or str(tag)
    if vr == "SQ":
        element = ds[tag]
        items = Sequence()
        for item in element.value or []:
            own = copy.deepcopy(item)
            for sub in list(own.keys()):
                sub_keyword = own[sub].keyword if own[sub].keyword else ""
                try:
                    _fix_element(own, sub, sub_keyword, codecs, fixes, required=False)
                except Exception:  # noqa: BLE001 - an item element that cannot even be read goes
                    del own[sub]
                    fixes.dropped.add(f"{name}>{sub_keyword or sub}")
            items.append(own)
        ds[tag] = DataElement(tag, "SQ", items)
        return
    try:
        if vr in TEXT_MAX:
            items, how = _text_items(ds, tag, codecs)
            if how:
                fixes.decoded.setdefault(how, set()).add(name)
            single = keyword != "" and dictionary_VM(tag) == "1"
            fixed, done = _valid_text(vr, items, single)
            if keyword == "PatientSex" and fixed and fixed[0] not in ("", "M", "F", "O"):
                done.add("invalid")
            fixes.non_ascii |= any(not item.isascii() for item in fixed)
            if "invalid" in done:
                _drop(ds, tag, keyword, required, fixes, name)
                return
            if "cut" in done:
                fixes.cut.add(f"{name} ({vr} {TEXT_MAX[vr]})")
            if "control" in done:
                fixes.cleaned.add(name)
            # always a new element of decoded text: nothing raw in the source's encoding is copied
            ds[tag] = DataElement(tag, vr, fixed[0] if len(fixed) == 1 else fixed)
            return
        raw = ds[tag].value
        items = [str(v) for v in raw] if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue" \
            else [str(raw if raw is not None else "")]
        if vr in ("DS", "IS"):
            pattern, limit = (_DS, 16) if vr == "DS" else (_IS, 12)
            if not all(not i.strip() or (pattern.match(i.strip()) and len(i.strip()) <= limit) for i in items):
                _drop(ds, tag, keyword, required, fixes, name)
            return
        if vr not in ("DA", "TM", "DT", "AS"):
            return
        checked = [_check(vr, keyword, item) for item in items]
    except Exception:  # noqa: BLE001 - a value that cannot even be read is invalid
        _drop(ds, tag, keyword, required, fixes, name)
        return
    if not all(ok for ok, _ in checked):
        _drop(ds, tag, keyword, required, fixes, name)
    elif any(fixed != item.strip() for (_, fixed), item in zip(checked, items)):
        ds[tag] = DataElement(tag, vr, "\\".join(fixed for _, fixed in checked))
        fixes.rewritten.add(name)


def _drop(ds: Any, tag: Any, keyword: str, required: bool, fixes: Fixes, name: str) -> None:
    if required:
        ds[tag] = DataElement(tag, dictionary_VR(tag), "")
    else:
        del ds[tag]
    fixes.dropped.add(name)


def sanitise(ds: Any) -> Fixes:
    """Make what the writers copy from ``ds`` (an own copy) valid, in place.

    The Patient and Study attributes (and the source's equipment) are decoded (by the declared
    SpecificCharacterSet when it holds, else robustly: UTF-8 or Latin-1), stripped of control
    characters, cut to their VR's length, dates/times checked (old forms rewritten) and invalid
    values emptied (attributes the writers need) or removed; missing type-2 attributes are added
    empty. When any copied text is not ASCII, the copy declares UTF-8 (``ISO_IR 192``), and
    every copied text element is a decoded one, so SEG and SR encode it as they declare.
    """
    fixes = Fixes()
    codecs, fixes.charset_problem = declared_encodings(ds)
    keywords = copied_keywords(str(value(ds, "SOPClassUID") or CT_IMAGE_STORAGE)) + EQUIPMENT_COPIED
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        if tag not in ds:
            if keyword in TYPE2_COPIED:
                _set(ds, keyword, "")
                fixes.added.add(keyword)
            continue
        _fix_element(ds, tag, keyword, codecs, fixes, required=keyword in TYPE2_COPIED)
    declared = value(ds, "SpecificCharacterSet")
    if fixes.non_ascii:
        _set(ds, "SpecificCharacterSet", UTF8)
    elif declared is not None and (fixes.charset_problem or fixes.decoded):
        del ds[tag_for_keyword("SpecificCharacterSet")]  # ASCII after all: the default repertoire
    return fixes


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
    study, _ = study_uid(series)
    frame, _ = frame_of_reference_uid(series)
    uids = uid_report(series)
    out: list[Any] = []
    fixes = Fixes()
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
        fixes.merge(sanitise(filled))
        out.append(filled)
    warnings = [uid_message(uids)] if uids else []
    warnings += fix_messages(fixes)
    return WriterSources(headers=out, uids=uids, warnings=warnings)


def fix_messages(fixes: Fixes) -> list[str]:
    """One warning per kind of change, naming attributes, never their values."""
    def names(items: set[str]) -> str:
        return ", ".join(sorted(items))

    out = []
    if fixes.dropped:
        out.append(f"source CT values that are not valid DICOM left out of SEG/SR: {names(fixes.dropped)}")
    if fixes.rewritten:
        out.append(f"source CT dates/times in an old form rewritten for SEG/SR: {names(fixes.rewritten)}")
    if fixes.added:
        out.append(f"source CT lacks {names(fixes.added)}: written empty in SEG/SR")
    if fixes.cut:
        out.append(f"source CT text longer than its VR allows cut for SEG/SR (VR, bytes): {names(fixes.cut)}")
    if fixes.cleaned:
        out.append(f"control characters or backslashes removed from source CT text for SEG/SR: {names(fixes.cleaned)}")
    for how, keywords in sorted(fixes.decoded.items()):
        declared = fixes.charset_problem or "no SpecificCharacterSet that describes them"
        out.append(f"source CT text has non-ASCII bytes and {declared}: read as {how}, written as UTF-8 "
                   f"(ISO_IR 192) in SEG/SR: {names(keywords)}")
    return out
