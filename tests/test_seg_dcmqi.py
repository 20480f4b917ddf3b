"""DICOM SEG via dcmqi (itkimage2segimage), and round trips through dcmqi's segimage2itkimage."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cac_mhub.dicom import seg as S
from cac_mhub.scoring.agatston import score

from tests.test_seg import EXPECTED, NAMES, SPACING, dciodvfy, make_case


def _have_dcmqi() -> bool:
    try:
        S.dcmqi_tool("itkimage2segimage")
        S.dcmqi_tool("segimage2itkimage")
        return True
    except FileNotFoundError:
        return False


pytestmark = pytest.mark.skipif(not _have_dcmqi(), reason="dcmqi tools not installed (pip install dcmqi)")


@pytest.fixture
def case(tmp_path: Path):
    return make_case(tmp_path)


@pytest.fixture
def both(case, tmp_path: Path):
    """The same label map written by both engines."""
    files, headers, volume, labels = case
    algorithm = S.AlgorithmInfo(model_id="model:test@1")
    by_highdicom = tmp_path / "hd.seg.dcm"
    S.build_seg(S.headers_in_volume_order(headers, volume), labels, NAMES, algorithm).save_as(by_highdicom)
    by_dcmqi = tmp_path / "dcmqi.seg.dcm"
    assert S.build_seg_dcmqi(files[::-1], labels, NAMES, volume, algorithm, by_dcmqi)
    return case, by_highdicom, by_dcmqi


def dcmqi_read_back(path: Path, volume, tmp_path: Path) -> np.ndarray:
    """segimage2itkimage --mergeSegments, placed on the CT grid (dcmqi crops to the frames' extent)."""
    import SimpleITK as sitk

    out = tmp_path / f"back-{path.stem}"
    out.mkdir()
    subprocess.run([S.dcmqi_tool("segimage2itkimage"), "--inputDICOM", str(path), "--outputDirectory", str(out),
                    "--prefix", "seg", "-t", "nrrd", "--mergeSegments"], check=True, capture_output=True, timeout=300)
    images = sorted(out.glob("seg-*.nrrd"))
    assert len(images) == 1  # calcium segments never overlap
    image = sitk.ReadImage(str(images[0]))
    assert np.allclose(image.GetSpacing(), volume.spacing_xyz)
    assert np.allclose(image.GetDirection(), volume.direction)
    offset = (np.asarray(image.GetOrigin()) - np.asarray(volume.origin_lps)) / np.asarray(volume.spacing_xyz)
    assert np.allclose(offset, np.round(offset), atol=1e-3)  # on the grid, no interpolation
    x0, y0, z0 = (int(round(v)) for v in offset)
    array = sitk.GetArrayFromImage(image)
    full = np.zeros(volume.hu.shape, np.uint8)
    full[z0:z0 + array.shape[0], y0:y0 + array.shape[1], x0:x0 + array.shape[2]] = array
    return full


def test_dcmqi_seg_content_and_validity(both) -> None:
    (_, headers, volume, _), _, by_dcmqi = both
    ds = pydicom.dcmread(by_dcmqi)
    ct = headers[0]
    for keyword in ("StudyInstanceUID", "PatientID", "FrameOfReferenceUID"):
        assert ds.get(keyword) == ct.get(keyword), keyword
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID
    assert int(ds.NumberOfFrames) == 4  # empty slices skipped
    segments = {int(s.SegmentNumber): s for s in ds.SegmentSequence}
    assert [segments[n].SegmentLabel for n in sorted(segments)] == ["LAD", "RCA", "CAC"]
    assert segments[1].AnatomicRegionSequence[0].CodeValue == "59438005"
    assert segments[1].SegmentAlgorithmName == "cac-mhub"
    assert (ds.SeriesDescription, int(ds.SeriesNumber)) == (S.DEFAULT_SERIES_DESCRIPTION, S.DEFAULT_SERIES_NUMBER)
    errors, _ = dciodvfy(by_dcmqi)
    assert errors == []


def test_both_engines_read_back_by_dcmqi_equal_the_mask(both, tmp_path: Path) -> None:
    (_, _, volume, labels), by_highdicom, by_dcmqi = both
    expected = S.segment_number_map(labels, S.plan_segments(labels, NAMES))
    for path in (by_highdicom, by_dcmqi):
        assert np.array_equal(dcmqi_read_back(path, volume, tmp_path), expected), path.name


def test_dcmqi_seg_read_back_by_highdicom_and_own_reader(both) -> None:
    import highdicom as hd

    (_, _, volume, labels), _, by_dcmqi = both
    expected, expected_names = S.to_canonical(labels, NAMES)
    seg = hd.seg.segread(by_dcmqi)
    # dcmqi lists only the slices it encoded in ReferencedSeriesSequence and omits SpatialLocationsPreserved
    numbers = seg.get_pixels_by_source_instance(volume.sop_instance_uids, combine_segments=True, relabel=False,
                                                assert_missing_frames_are_empty=True, ignore_spatial_locations=True)
    assert np.array_equal(S.to_canonical(numbers, S.segment_names(seg))[0], expected)
    ds = pydicom.dcmread(by_dcmqi)
    ours, names = S.to_canonical(S.read_seg(ds, volume).segment_numbers, S.segment_names(ds))
    assert np.array_equal(ours, expected) and names == expected_names


def test_both_engines_rescore_to_the_same_score(both) -> None:
    (_, _, volume, _), by_highdicom, by_dcmqi = both
    results = []
    for path in (by_highdicom, by_dcmqi):
        ds = pydicom.dcmread(path)
        labels, names = S.to_canonical(S.read_seg(ds, volume).segment_numbers, S.segment_names(ds))
        results.append(score(volume.hu, SPACING, labels, names))
    first, second = results
    assert first.agatston == pytest.approx(sum(EXPECTED.values()))
    assert second.agatston == first.agatston
    assert second.volume_mm3 == first.volume_mm3
    for name in ("LM", "LAD", "LCX", "RCA", "CAC"):
        assert second.per_artery[name].agatston == first.per_artery[name].agatston


def test_dcmqi_writes_nothing_for_an_empty_mask(case, tmp_path: Path) -> None:
    files, _, volume, labels = case
    target = tmp_path / "none.seg.dcm"
    assert not S.build_seg_dcmqi(files, np.zeros_like(labels), NAMES, volume, S.AlgorithmInfo(), target)
    assert not target.exists()
