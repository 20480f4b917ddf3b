"""Scanning any folder layout and the series-selection rules."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cac_mhub.dicom.scan import SelectionRules, kernel_class, scan, select
from tests.conftest import ball_volume


def write_non_image(path: Path, modality: str, sop_class: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = modality, generate_uid(), generate_uid()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_any_layout_groups_by_series(tmp_path, make_ct):
    a = make_ct(tmp_path / "in/patient1/study/series_a")
    b = make_ct(tmp_path / "in/flat", file_names="{index}")  # files without .dcm
    make_ct(tmp_path / "in/other_study", study_uid=generate_uid())
    # the same series spread over two folders is still one series
    for path in a[:4]:
        shutil.move(path, tmp_path / "in" / f"moved_{path.name}")
    (tmp_path / "in/notes.txt").write_text("not dicom")
    (tmp_path / "in/flat/empty").write_bytes(b"")
    (tmp_path / "in/garbage.dcm").write_bytes(b"\x00" * 200 + b"DICM" + b"\x01" * 50)
    result = scan(tmp_path / "in")
    assert sorted(len(s.files) for s in result.series) == [16, 16, 16]
    assert {p.name for p, _ in result.ignored} >= {"notes.txt", "empty", "garbage.dcm"}
    assert all(s.modality == "CT" for s in result.series)
    assert all(Path(b[0]).suffix == "" for b in [b])


def test_dicomdir_is_ignored_not_a_series(tmp_path, make_ct):
    make_ct(tmp_path / "in/s")
    write_non_image(tmp_path / "in/DICOMDIR", "", "1.2.840.10008.1.3.10")
    result = scan(tmp_path / "in")
    assert len(result.series) == 1
    assert any("DICOMDIR" in why for _, why in result.ignored)


def test_empty_uids_fall_back_to_a_stable_grouping(tmp_path, make_ct):
    make_ct(tmp_path / "in/x", empty_uids=True)
    make_ct(tmp_path / "in/y", empty_uids=True, series_number=2)
    first = scan(tmp_path / "in")
    assert sorted(len(s.files) for s in first.series) == [16, 16]
    assert all(s.uid.startswith("2.25.") for s in first.series)
    assert [s.uid for s in scan(tmp_path / "in").series] == [s.uid for s in first.series]


def test_real_series_without_uids(shared_ct):
    result = scan(shared_ct / "totalseg_refs")
    assert len(result.series) == 1 and len(result.series[0].files) == 20


@pytest.mark.parametrize("spec, reason", [
    ({"modality": "MR"}, "modality MR, not CT"),
    ({"image_type": ("ORIGINAL", "PRIMARY", "LOCALIZER")}, "localizer/scout images only"),
    ({"image_type": ("DERIVED", "PRIMARY", "MIP")}, "reformatted/projection images"),
])
def test_selection_rejects_with_reason(tmp_path, make_ct, spec, reason):
    make_ct(tmp_path / "in/s", **spec)
    series = scan(tmp_path / "in").series
    assert select(series, SelectionRules()) == []
    assert reason in series[0].reason


def test_non_ct_objects_are_reported_not_scored(tmp_path, make_ct):
    make_ct(tmp_path / "in/ct")
    write_non_image(tmp_path / "in/sr.dcm", "SR", "1.2.840.10008.5.1.4.1.1.88.22")
    write_non_image(tmp_path / "in/seg.dcm", "SEG", "1.2.840.10008.5.1.4.1.1.66.4")
    write_non_image(tmp_path / "in/rt.dcm", "RTSTRUCT", "1.2.840.10008.5.1.4.1.1.481.3")
    series = scan(tmp_path / "in").series
    select(series, SelectionRules())
    reasons = sorted(s.reason for s in series if not s.selected)
    assert reasons == ["modality RTSTRUCT, not CT", "modality SEG, not CT", "modality SR, not CT"]


def test_slice_count_and_increment_limits(tmp_path, make_ct):
    make_ct(tmp_path / "in/few", hu=ball_volume((5, 32, 32)))
    make_ct(tmp_path / "in/thick", spacing=(5.0, 0.8, 0.8), study_uid=generate_uid())
    series = scan(tmp_path / "in").series
    select(series, SelectionRules(min_slices=10, max_increment_mm=3.0))
    reasons = sorted(s.reason for s in series)
    assert reasons[0].startswith("slice increment 5 mm exceeds 3 mm")
    assert reasons[1] == "too few slices: 5 < 10"


def test_one_reconstruction_per_study_by_documented_preference(tmp_path, make_ct):
    study = generate_uid()
    hu = ball_volume((24, 32, 32))
    make_ct(tmp_path / "in/thin_sharp", hu=hu, spacing=(1.0, .8, .8), study_uid=study, kernel="B70f", series_number=1)
    make_ct(tmp_path / "in/thick_sharp", hu=hu, spacing=(2.5, .8, .8), study_uid=study, kernel="B70f", series_number=2)
    make_ct(tmp_path / "in/thick_soft", hu=hu, spacing=(2.5, .8, .8), study_uid=study, kernel="B30f", series_number=3)
    series = scan(tmp_path / "in").series
    chosen = select(series, SelectionRules())
    assert [s.first.SeriesNumber for s in chosen] == [3]
    assert all("another reconstruction of this study is preferred" in s.reason for s in series if not s.selected)
    assert len(select(series, SelectionRules(per_study="all"))) == 3


@pytest.mark.parametrize("kernel, expected", [
    ("B30f", "soft"), ("B70f", "sharp"), ("Br38f\\3", "soft"), ("STANDARD", "soft"), ("SOFT", "soft"),
    ("LUNG", "sharp"), ("BONEPLUS", "sharp"), ("C", "soft"), ("YB", "sharp"), ("FC13", "soft"), ("FC52", "sharp"),
    ("XYZ", "unknown"),
])
def test_kernel_classes(kernel, expected):
    assert kernel_class(kernel) == expected


def test_real_shared_folder_selection(shared_ct):
    series = scan(shared_ct).series
    chosen = select(series, SelectionRules())
    assert any(len(s.files) == 141 for s in chosen)  # itkelastix thorax
    reasons = {s.reason.split(":")[0] for s in series if not s.selected}
    assert "too few slices" in reasons
    assert any(s.reason.startswith("Enhanced CT") for s in series)
    assert np.all([s.modality == "CT" for s in chosen])
