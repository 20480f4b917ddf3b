"""Series selection on metadata fetched from the PACS, before any pixel data moves.

The very rules ``DicomImporter`` applies to a folder (:func:`cac_mhub.dicom.scan.select`), with
the workflow's options, run on header-only Datasets from WADO-RS metadata or an IMAGE-level
C-FIND. Only the chosen series are retrieved; the run then applies the same rules again to the
retrieved files, so a PACS that answered a query loosely cannot get a series scored that a
folder run would refuse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..chain import ChainError
from ..dicom.scan import SelectionRules, select
from ..types import Series
from .base import SeriesInfo


def rules_from_config(config: dict[str, Any]) -> SelectionRules:
    """The workflow's series-selection rules: its DicomImporter options (defaults without one)."""
    from ..modules.dicom_importer import DicomImporter

    entry = next((e for e in config.get("execute", []) if e["module"] == "DicomImporter"), None)
    if entry is None:
        raise ChainError("the workflow has no DicomImporter: PACS series cannot be selected for it")
    return DicomImporter(**entry["options"]).rules()


def as_series(info: SeriesInfo) -> Series:
    """A :class:`~cac_mhub.types.Series` whose "files" are the SOP Instance UIDs (nothing on disk)."""
    headers = info.headers
    files = [Path(f"{str(getattr(h, 'SOPInstanceUID', '') or i)}.dcm") for i, h in enumerate(headers)]
    return Series(uid=info.uid, study_uid=info.study_uid, files=files, headers=list(headers),
                  modality=info.modality or (str(headers[0].get("Modality", "")) if headers else ""),
                  description=info.description)


def choose(candidates: list[SeriesInfo], rules: SelectionRules) -> tuple[list[SeriesInfo], dict[str, str]]:
    """(series to retrieve, {series uid: why not} for the others) of one study."""
    with_headers = [c for c in candidates if c.headers]
    reasons = {c.uid: "no instances listed by the PACS" for c in candidates if not c.headers}
    series = [as_series(c) for c in with_headers]
    select(series, rules)
    chosen = []
    for info, s in zip(with_headers, series):
        if s.selected:
            chosen.append(info)
        else:
            reasons[info.uid] = s.reason
    return chosen, reasons
