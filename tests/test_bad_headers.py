"""Headers that must not be trusted and file-system faults: every one gives a reason naming the
file, never a traceback, a padded slice or a silently wrong HU value."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from cac_mhub.cli import main
from cac_mhub.dicom import scan as scan_module
from cac_mhub.dicom.scan import SelectionRules, header_geometry, scan, select, sniff
from cac_mhub.dicom.volume import VolumeRejected, assemble, decode_hu
from tests.conftest import ball_volume
from tests.header_edits import edit, edit_all, make_unreadable

HU = ball_volume((12, 32, 32))


def run_import(input_dir: Path, output_dir: Path) -> dict:
    assert main(["run", "--input", str(input_dir), "--output", str(output_dir), "--workflow", "import", "--quiet"]) == 0
    return json.loads((output_dir / "cohort.json").read_text())


def reasons(folder: Path) -> list[str]:
    series = scan(folder).series
    select(series, SelectionRules())
    return [s.reason for s in series]


# --- rescale ----------------------------------------------------------------------------------------


def test_slice_without_rescale_intercept_is_refused_not_read_as_intercept_zero(tmp_path, make_ct):
    files = make_ct(tmp_path / "in/s", hu=HU)
    edit(files[5], RescaleIntercept=None)
    assert reasons(tmp_path / "in") == [
        "invalid header: IM0006.dcm: no RescaleIntercept (stored values cannot be made HU)"]
    with pytest.raises(VolumeRejected, match="IM0006.dcm: no RescaleIntercept"):
        assemble(scan(tmp_path / "in").series[0])


@pytest.mark.parametrize("slope, expected", [
    (b"NaN", "RescaleSlope is not numeric"), (b"0", "RescaleSlope 0 is not positive"),
    (b"-1", "RescaleSlope -1 is not positive"), (None, "no RescaleSlope"),
])
def test_unusable_rescale_slope(tmp_path, make_ct, slope, expected):
    edit_all(make_ct(tmp_path / "in/s", hu=HU), RescaleSlope=slope)
    [reason] = reasons(tmp_path / "in")
    assert reason.startswith(f"invalid header: IM0001.dcm: {expected}")
    with pytest.raises(VolumeRejected, match=expected):
        decode_hu(tmp_path / "in/s/IM0001.dcm")


def test_rescale_differing_between_slices_is_refused(tmp_path, make_ct):
    files = make_ct(tmp_path / "in/s", hu=HU)
    edit(files[11], RescaleIntercept=0)
    assert reasons(tmp_path / "in") == [
        "invalid header: IM0012.dcm: RescaleSlope/RescaleIntercept 1/0 differ from 1/-1024 in 11 other slice(s): "
        "HU would not be consistent"]


# --- geometry values --------------------------------------------------------------------------------

MALFORMED = [
    ("ipp_two_values", 5, "ImagePositionPatient", b"1\\2",
     "IM0006.dcm: ImagePositionPatient has 2 value(s), expected 3"),
    ("ipp_text", 5, "ImagePositionPatient", b"a\\b\\c", "IM0006.dcm: ImagePositionPatient is not numeric"),
    ("thickness_text", 0, "SliceThickness", b"thin", "IM0001.dcm: SliceThickness is not numeric"),
    ("spacing_one_value", 0, "PixelSpacing", b"0.8", "IM0001.dcm: PixelSpacing has 1 value(s), expected 2"),
    ("spacing_text", 0, "PixelSpacing", b"x\\y", "IM0001.dcm: PixelSpacing is not numeric"),
    ("iop_five_values", 0, "ImageOrientationPatient", b"1\\0\\0\\0\\1", "IM0001.dcm: ImageOrientationPatient has 5"),
    ("iop_text", 0, "ImageOrientationPatient", b"a\\b\\c\\d\\e\\f",
     "IM0001.dcm: ImageOrientationPatient is not numeric"),
]


def test_malformed_geometry_never_crashes_selection_or_the_report(tmp_path, make_ct):
    for name, index, keyword, raw, _ in MALFORMED:
        files = make_ct(tmp_path / "in" / name, hu=HU, study_uid=generate_uid(), series_description=name)
        edit(files[index], **{keyword: raw})
    cohort = run_import(tmp_path / "in", tmp_path / "out")
    by_name = {r["series"]["description"]: r for r in cohort["series"]}
    for name, _, _, _, expected in MALFORMED:
        report = by_name[name]
        assert report["status"] == "skipped" and f"DicomImporter: invalid header: {expected}" in report["reason"], name
    # the report's header geometry leaves a malformed value out instead of failing
    assert by_name["thickness_text"]["series"]["slice_thickness_mm"] is None
    assert len(list((tmp_path / "out").glob("*/report.json"))) == len(MALFORMED)


def test_header_geometry_is_total(tmp_path, make_ct):
    files = make_ct(tmp_path / "in/s", hu=HU)
    edit(files[0], SliceThickness=b"thin", PixelSpacing=b"x\\y", ImageOrientationPatient=b"a\\b\\c\\d\\e\\f",
         Rows=None)
    edit(files[1], ImagePositionPatient=b"1\\2")
    info = header_geometry(scan(tmp_path / "in").series[0])
    assert info["slices"] == 11 and info["slice_thickness_mm"] is None
    assert "pixel_spacing_mm" not in info and "normal_angle_to_z_deg" not in info and "rows" not in info


def test_non_orthogonal_orientation_is_refused_not_rotated(tmp_path, make_ct):
    tilt = math.radians(15)
    edit_all(make_ct(tmp_path / "in/s", hu=HU), ImageOrientationPatient=[1, 0, 0, math.sin(tilt), math.cos(tilt), 0])
    [reason] = reasons(tmp_path / "in")
    assert reason.startswith("invalid header: IM0001.dcm: ImageOrientationPatient is not orthonormal "
                             "(row/column 75.00 deg apart")


# --- pixel data -------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, expected", [(-64, "is 1984 bytes but Rows x Columns x BitsAllocated declare 2048 "
                                                     "(truncated)"),
                                              (64, "is 2112 bytes but Rows x Columns x BitsAllocated declare 2048 "
                                                   "(longer than declared)")])
def test_pixel_data_of_another_length_than_declared_is_never_padded(tmp_path, make_ct, change, expected):
    files = make_ct(tmp_path / "in/s", hu=HU)
    ds = pydicom.dcmread(files[2])
    ds.PixelData = ds.PixelData[:change] if change < 0 else ds.PixelData + b"\x00" * change
    ds.save_as(files[2])
    with pytest.raises(ValueError, match=re.escape(f"IM0003.dcm: PixelData {expected}: not decoded")):
        decode_hu(files[2])
    with pytest.raises(ValueError, match="IM0003.dcm: PixelData"):
        assemble(scan(tmp_path / "in").series[0])


def test_declared_size_is_bounded_before_any_allocation(tmp_path, make_ct):
    files = make_ct(tmp_path / "in/s", hu=HU)
    edit(files[0], Rows=65535, Columns=65535)
    assert reasons(tmp_path / "in") == ["invalid header: IM0001.dcm: image size 65535 x 65535 is outside 1..4096"]
    with pytest.raises(VolumeRejected, match="IM0001.dcm: image size 65535 x 65535"):
        decode_hu(files[0])


# --- file system ------------------------------------------------------------------------------------


def test_unreadable_file_and_folder_are_reported(tmp_path, make_ct, monkeypatch):
    files = make_ct(tmp_path / "in/s", hu=HU)
    make_ct(tmp_path / "in/locked", hu=HU, study_uid=generate_uid())
    make_unreadable(files[-1], monkeypatch)
    make_unreadable(tmp_path / "in/locked", monkeypatch)
    try:
        result = scan(tmp_path / "in")
        assert [len(s.files) for s in result.series] == [11]
        ignored = {p.name: why for p, why in result.ignored}
        assert ignored == {"IM0012.dcm": "unreadable file (PermissionError)",
                           "locked": "unreadable folder (PermissionError)"}
        cohort = run_import(tmp_path / "in", tmp_path / "out")
    finally:
        (tmp_path / "in/locked").chmod(0o755)
        files[-1].chmod(0o644)
    assert sorted(i["path"] for i in cohort["ignored_files"]) == ["locked", "s/IM0012.dcm"]
    [report] = cohort["series"]
    assert report["status"] == "processed" and report["geometry"]["shape_zyx"][0] == 11
    expected = "1 unreadable file(s) in this series' folder (IM0012.dcm): the series may be missing slices"
    assert expected in report["warnings"] and report["unreadable_files_beside"] == 1
    log = (tmp_path / "out/cac-mhub.log").read_text()
    assert "unreadable file (PermissionError)" in log and "unreadable folder (PermissionError)" in log


def test_junk_is_recognised_from_its_first_bytes(tmp_path, make_ct, monkeypatch):
    make_ct(tmp_path / "in/s", hu=HU)
    with open(tmp_path / "in/zeros.bin", "wb") as handle:  # 60 MB of zeros (sparse: costs no disk)
        handle.truncate(60 * 2**20)
    (tmp_path / "in/random.dat").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    (tmp_path / "in/notes.txt").write_text("DICM is not at offset 128 here")
    opened: list[str] = []
    real_dcmread = pydicom.dcmread

    def counting(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_dcmread(path, *args, **kwargs)

    monkeypatch.setattr(scan_module.pydicom, "dcmread", counting)
    result = scan(tmp_path / "in")
    assert len(result.series) == 1
    assert sorted((p.name, why) for p, why in result.ignored) == [
        ("notes.txt", "not a DICOM file"), ("random.dat", "not a DICOM file"), ("zeros.bin", "not a DICOM file")]
    assert set(opened) == {f"IM{k:04d}.dcm" for k in range(1, 13)}  # junk never handed to pydicom


def test_preamble_less_dicom_is_still_read(tmp_path, make_ct):
    for path in make_ct(tmp_path / "in/s", hu=HU):
        ds = pydicom.dcmread(path)
        del ds.file_meta
        ds.preamble = None
        ds.save_as(path, implicit_vr=True, little_endian=True)
        assert path.read_bytes()[:2] == b"\x08\x00"  # starts with a group 0008 element
    result = scan(tmp_path / "in")
    assert [len(s.files) for s in result.series] == [12] and result.ignored == []
    assert select(result.series, SelectionRules()) == result.series


@pytest.mark.parametrize("head, expected", [
    (b"", "empty file"), (b"\x00" * 132, "not a DICOM file"), (b"\x00" * 128 + b"DICM", ""),
    (b"\x08\x00\x05\x00CS\x0a\x00", ""), (b"\x08\x00\x05\x00\x0a\x00\x00\x00", ""), (b"\x02\x00\x00\x00UL\x04\x00", ""),
    (b"%PDF-1.7 ...", "not a DICOM file"), (b"\x08\x00\x05\x00\xff\xff\xff\x7f", "not a DICOM file"),
])
def test_sniff(head, expected):
    assert sniff(head) == expected
