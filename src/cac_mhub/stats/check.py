"""Output-vs-reference check: two output folders of the same inputs must agree within tolerances.

For reproducibility (a rerun, another machine, a published reference run) and for MHub-style
reference tests. Per series (matched by folder key):

* the same status (scored / processed / skipped / failed);
* every score column both cohorts have (``agatston``, ``volume_mm3``, ``agatston_<artery>`` ...)
  within ``|test - reference| <= max(abs_tol, rel_tol * |reference|)`` (default 1 and 1 %);
* the SEGs (``<key>/*.seg.dcm``): Dice of every segment (by artery name) at least ``min_dice``
  (default 0.99); a segment on one side only has Dice 0, a segment empty on both sides 1; a
  missing SEG counts as empty (DsegConverter writes none without calcium).

Series in one folder only fail the check. Pure apart from reading the folders.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..formatting import number
from .tables import COHORT_ID, read_rows

#: Cohort columns compared as scores when both sides have them.
SCORE_COLUMNS = ("agatston", "volume_mm3", "mass_mg", "agatston_LM", "agatston_LAD", "agatston_LCX",
                 "agatston_RCA", "agatston_CAC")


@dataclass(frozen=True)
class Tolerances:
    abs_tol: float = 1.0
    rel_tol: float = 0.01
    min_dice: float = 0.99

    def score_ok(self, reference: float | None, test: float | None) -> bool:
        if reference is None or test is None:
            return reference is None and test is None
        return abs(test - reference) <= max(self.abs_tol, self.rel_tol * abs(reference))


def seg_masks(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Segment name -> {source slice -> 2D bool mask} of a DICOM SEG, without the CT.

    Slices are keyed by the referenced CT SOPInstanceUID (else the frame's position), so two
    SEGs of the same CT series can be compared frame by frame whatever their frame order.
    """
    import pydicom

    from ..dicom.seg import _functional, segment_names

    ds = pydicom.dcmread(str(path))
    names = segment_names(ds)
    frames = np.asarray(ds.pixel_array)
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    labelmap = str(getattr(ds, "SegmentationType", "")) == "LABELMAP"
    out: dict[str, dict[str, np.ndarray]] = {name: {} for name in names.values()}
    for index, frame in enumerate(frames):
        key = _slice_key(ds, index, _functional)
        if labelmap:
            parts = {names.get(int(v), str(int(v))): frame == v for v in np.unique(frame) if v}
        else:
            identification = _functional(ds, index, "SegmentIdentificationSequence")
            number_ = int(identification.ReferencedSegmentNumber)
            parts = {names.get(number_, str(number_)): frame > 0}
        for name, mask in parts.items():
            slices = out.setdefault(name, {})
            slices[key] = slices[key] | mask if key in slices else mask.copy()
    return out


def _slice_key(ds: Any, index: int, functional: Any) -> str:
    derivation = functional(ds, index, "DerivationImageSequence")
    if derivation is not None and "SourceImageSequence" in derivation:
        return str(derivation.SourceImageSequence[0].ReferencedSOPInstanceUID)
    plane = functional(ds, index, "PlanePositionSequence")
    if plane is not None and "ImagePositionPatient" in plane:
        return "pos:" + ",".join(f"{float(v):.2f}" for v in plane.ImagePositionPatient)
    return f"frame:{index}"


def dice(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Dice of two slice -> mask maps of one segment; 1.0 when both are empty."""
    size_a = sum(int(m.sum()) for m in a.values())
    size_b = sum(int(m.sum()) for m in b.values())
    if size_a + size_b == 0:
        return 1.0
    overlap = sum(int((a[k] & b[k]).sum()) for k in a.keys() & b.keys() if a[k].shape == b[k].shape)
    return 2.0 * overlap / (size_a + size_b)


def seg_dice(reference: Path | None, test: Path | None) -> dict[str, float]:
    """Dice per segment name of two SEG files (None: no SEG, i.e. no calcium)."""
    masks_reference = seg_masks(reference) if reference is not None else {}
    masks_test = seg_masks(test) if test is not None else {}
    return {name: round(dice(masks_reference.get(name, {}), masks_test.get(name, {})), 6)
            for name in sorted(masks_reference.keys() | masks_test.keys())}


def find_seg(folder: Path) -> Path | None:
    found = sorted(folder.glob("*.seg.dcm"))
    return found[0] if found else None


def check_series(key: str, reference_row: dict[str, str], test_row: dict[str, str], reference_dir: Path,
                 test_dir: Path, tolerances: Tolerances) -> dict[str, Any]:
    """One series: status, scores and SEG Dice against the tolerances; ``problems`` says what failed."""
    problems: list[str] = []
    status = (reference_row.get("status", ""), test_row.get("status", ""))
    if status[0] != status[1]:
        problems.append(f"status {status[0]} != {status[1]}")
    differences = {}
    for column in SCORE_COLUMNS:
        if column not in reference_row or column not in test_row:
            continue
        a, b = number(reference_row[column]), number(test_row[column])
        if a is None and b is None:
            continue
        differences[column] = None if a is None or b is None else round(b - a, 6)
        if not tolerances.score_ok(a, b):
            problems.append(f"{column} {reference_row[column] or 'empty'} != {test_row[column] or 'empty'}")
    segs = (find_seg(reference_dir / key), find_seg(test_dir / key))
    dices: dict[str, float] = {}
    if segs != (None, None):
        try:
            dices = seg_dice(*segs)
        except Exception as error:  # noqa: BLE001 - an unreadable SEG is a mismatch, not a crash
            problems.append(f"SEG not comparable: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
        for name, value in dices.items():
            if value < tolerances.min_dice:
                problems.append(f"SEG segment {name} Dice {value:.4f} < {tolerances.min_dice}")
    return {"key": key, "status": list(status), "differences": differences, "dice": dices,
            "passed": not problems, "problems": problems}


def check_outputs(reference_dir: Path, test_dir: Path, tolerances: Tolerances = Tolerances()) -> dict[str, Any]:
    """Compare two output folders series by series; ``passed`` is the verdict."""
    reference = {row[COHORT_ID]: row for row in read_rows(reference_dir)}
    test = {row[COHORT_ID]: row for row in read_rows(test_dir)}
    series = [check_series(key, reference[key], test[key], Path(reference_dir), Path(test_dir), tolerances)
              for key in reference if key in test]
    only_reference = [key for key in reference if key not in test]
    only_test = [key for key in test if key not in reference]
    failed = [s["key"] for s in series if not s["passed"]]
    return {
        "reference": str(reference_dir), "test": str(test_dir), "tolerances": asdict(tolerances),
        "passed": not failed and not only_reference and not only_test,
        "series": len(series), "failed": failed, "only_reference": only_reference, "only_test": only_test,
        "max_abs_difference": _max_difference(series),
        "min_dice": min((d for s in series for d in s["dice"].values()), default=None),
        "results": series,
    }


def _max_difference(series: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for entry in series:
        for column, value in entry["differences"].items():
            if value is not None:
                out[column] = max(out.get(column, 0.0), abs(value))
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What the command prints: the verdict, then one line per failing series."""
    verdict = "PASS" if result["passed"] else "MISMATCH"
    lines = [f"{verdict}: {result['series']} series compared, {len(result['failed'])} differ, "
             f"{len(result['only_reference'])} only in the reference, {len(result['only_test'])} only in the test output "
             f"(tolerances {json.dumps(result['tolerances'])})"]
    for entry in result["results"]:
        if not entry["passed"]:
            lines.append(f"  {entry['key']}: " + "; ".join(entry["problems"]))
    lines += [f"  {key}: only in the reference" for key in result["only_reference"]]
    lines += [f"  {key}: only in the test output" for key in result["only_test"]]
    return lines
