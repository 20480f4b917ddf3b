"""What a PACS adapter does, whatever the protocol: the interface the round trip is written against.

Both adapters (:mod:`.dicomweb`, :mod:`.dimse`) answer the same five questions, so the
orchestration, the tests and the benchmark run unchanged over DICOMweb and DIMSE.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

#: Header attributes asked for per instance before any pixel data: what series selection reads
#: (:func:`cac_mhub.dicom.scan.eligibility`, :func:`cac_mhub.dicom.validate.slice_problem`).
SELECTION_KEYWORDS: tuple[str, ...] = (
    "SOPInstanceUID", "SOPClassUID", "Modality", "ImageType", "InstanceNumber", "Rows", "Columns",
    "BitsAllocated", "SamplesPerPixel", "RescaleSlope", "RescaleIntercept", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "ConvolutionKernel",
    "SeriesInstanceUID", "StudyInstanceUID", "SeriesNumber", "SeriesDescription",
)


def short_id(uid: str) -> str:
    """A short, stable, non-identifying name for a study in logs and folder names (sha256 prefix)."""
    return hashlib.sha256(uid.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StudyQuery:
    """Study filters (none of them secret, so they may come from the command line).

    Each list is OR-ed (one query per value); different filters are AND-ed by the PACS.
    ``study_date`` is a DICOM date or range: ``20260101``, ``20260101-20260131``, ``20260101-``.
    """

    study_date: str | None = None
    accession_numbers: tuple[str, ...] = ()
    patient_ids: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    modality: str = "CT"

    def variants(self) -> list[dict[str, str]]:
        """One filter set per query to send (lists expand to one query per value)."""
        base: dict[str, str] = {}
        if self.study_date:
            base["StudyDate"] = self.study_date
        if self.modality:
            base["ModalitiesInStudy"] = self.modality
        queries = [base]
        for keyword, values in (("AccessionNumber", self.accession_numbers), ("PatientID", self.patient_ids),
                                ("StudyInstanceUID", self.study_uids)):
            if values:
                queries = [{**q, keyword: v} for q in queries for v in values]
        return queries


@dataclass
class SeriesInfo:
    """A series as a study-level query lists it, then its per-instance headers (no pixel data)."""

    study_uid: str
    uid: str
    modality: str = ""
    description: str = ""
    number: int | None = None
    headers: list[Any] = field(default_factory=list)


class Pacs(Protocol):
    """A PACS seen through one protocol. Every method raises :class:`~.errors.PacsError` only."""

    name: str
    """``dicomweb`` or ``dimse``."""
    where: str
    """The endpoint for messages: a base URL or ``AET@host:port`` (never a secret)."""

    def find_studies(self, query: StudyQuery) -> list[str]:
        """StudyInstanceUIDs matching ``query``."""

    def find_series(self, study_uid: str, modality: str | None) -> list[SeriesInfo]:
        """The series of a study, optionally only those of one modality."""

    def series_headers(self, series: SeriesInfo) -> list[Any]:
        """Header-only pydicom Datasets of every instance of the series (no pixel data moves)."""

    def retrieve_series(self, series: SeriesInfo, folder: Path) -> int:
        """Write every instance of the series as a DICOM file into ``folder``; the count written."""

    def store(self, paths: Sequence[Path], study_uid: str) -> None:
        """Store these DICOM files (into their study, ``study_uid``)."""

    def stored(self, study_uid: str, objects: Sequence[tuple[str, str]]) -> set[str]:
        """Which of ``objects`` ((SeriesInstanceUID, SOPInstanceUID) pairs) the PACS holds in
        ``study_uid``, as SOPInstanceUIDs: the confirmation after a push."""

    def close(self) -> None:
        """Release connections."""
