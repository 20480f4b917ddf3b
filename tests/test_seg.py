"""DICOM SEG (highdicom engine): content, validity, references, read-back and geometry checks."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cac_mhub import __version__
from cac_mhub.dicom import seg as S
from cac_mhub.dicom.synth import CtSeriesSpec, write_ct_series
from cac_mhub.scoring.agatston import score
from cac_mhub.types import Volume

SPACING = (2.5, 0.8, 0.8)
ORIGIN = (-20.0, -20.0, -50.0)
NAMES = {1: "LM", 2: "LAD", 3: "LCX", 4: "RCA", 9: "CAC"}


def phantom(n: int = 24, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """HU volume and label map with boxes of constant HU: scores known in closed form.

    LAD: 4x5 px on 2 slices at 250 HU (weight 2) -> 2 x 12.8 mm2 x 2 x 2.5/3 = 42.6667
    RCA: 3x3 px on 1 slice at 450 HU (weight 4)  -> 5.76 mm2 x 4 x 2.5/3 = 19.2
    CAC (label 9): 2x3 px at 150 HU (weight 1)   -> 3.84 mm2 x 1 x 2.5/3 = 3.2
    """
    hu = np.full((n, size, size), -900, np.int16)
    labels = np.zeros(hu.shape, np.uint8)
    labels[5:7, 10:14, 10:15], hu[5:7, 10:14, 10:15] = 2, 250
    labels[12, 30:33, 30:33], hu[12, 30:33, 30:33] = 4, 450
    labels[18, 5:7, 40:43], hu[18, 5:7, 40:43] = 9, 150
    return hu, labels


EXPECTED = {"LAD": 2 * 12.8 * 2 * 2.5 / 3, "RCA": 9 * 0.64 * 4 * 2.5 / 3, "CAC": 6 * 0.64 * 2.5 / 3}


def make_case(tmp_path: Path, **spec) -> tuple[list[Path], list, Volume, np.ndarray]:
    hu, labels = phantom()
    files = write_ct_series(hu, tmp_path / "ct", SPACING, ORIGIN, CtSeriesSpec(**spec))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    volume = Volume(hu=hu, spacing_zyx=SPACING, origin_lps=ORIGIN,
                    sop_instance_uids=[str(h.SOPInstanceUID) for h in headers])
    return files, headers, volume, labels


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of dciodvfy; skips when dicom3tools is not installed."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (done.stdout + done.stderr).splitlines()
    return [l for l in lines if l.startswith("Error")], [l for l in lines if l.startswith("Warning")]


@pytest.fixture
def case(tmp_path: Path):
    return make_case(tmp_path)


def test_plan_segments_orders_arteries_and_merges_values() -> None:
    labels = np.zeros((3, 4, 4), np.uint8)
    labels[0, 0, 0], labels[1, 1, 1], labels[2, 2, 2], labels[2, 3, 3] = 4, 2, 7, 8
    segments = S.plan_segments(labels, {2: "LAD", 4: "RCA", 7: "CAC", 8: "unknown"})
    assert [(s.number, s.name, s.values) for s in segments] == [(1, "LAD", (2,)), (2, "RCA", (4,)), (3, "CAC", (7, 8))]


def test_seg_content_codes_algorithm_and_references(case, tmp_path: Path) -> None:
    files, headers, volume, labels = case
    shuffled = headers[::-1]  # file order is not z order
    ordered = S.headers_in_volume_order(shuffled, volume)
    assert [h.SOPInstanceUID for h in ordered] == volume.sop_instance_uids
    seg = S.build_seg(ordered, labels, NAMES, S.AlgorithmInfo(model_id="model:test@1"),
                      series_description="my SEG", series_number=77)
    path = tmp_path / "cac.seg.dcm"
    seg.save_as(path)
    ds = pydicom.dcmread(path)
    ct = headers[0]
    # files into the same study, same patient, same frame of reference
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "FrameOfReferenceUID", "AccessionNumber"):
        assert ds.get(keyword) == ct.get(keyword), keyword
    assert ds.SeriesInstanceUID != ct.SeriesInstanceUID
    assert (ds.Modality, ds.SeriesDescription, int(ds.SeriesNumber)) == ("SEG", "my SEG", 77)
    assert ds.SegmentationType == "BINARY"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID
    # only the 4 slices with calcium are encoded, each referencing its own CT slice
    assert int(ds.NumberOfFrames) == 4
    uid_to_z = {u: z for z, u in enumerate(volume.sop_instance_uids)}
    frame_z = [uid_to_z[f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
               for f in ds.PerFrameFunctionalGroupsSequence]
    assert sorted(frame_z) == [5, 6, 12, 18]
    segments = {int(s.SegmentNumber): s for s in ds.SegmentSequence}
    assert [segments[n].SegmentLabel for n in sorted(segments)] == ["LAD", "RCA", "CAC"]
    lad = segments[1]
    assert lad.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"  # morphologically abnormal
    assert lad.SegmentedPropertyTypeCodeSequence[0].CodeValue == "237897009"  # vascular calcification
    assert lad.AnatomicRegionSequence[0].CodeValue == "59438005"  # LAD
    assert segments[2].AnatomicRegionSequence[0].CodeValue == "13647002"  # RCA
    assert lad.SegmentAlgorithmType == "AUTOMATIC" and lad.SegmentAlgorithmName == "cac-mhub"
    algorithm = lad.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("cac-mhub", __version__)
    assert "model:test@1" in algorithm.AlgorithmParameters
    assert "RecommendedDisplayCIELabValue" in lad
    assert lad.SegmentDescription == "Calcium in the left anterior descending artery"


def test_seg_passes_dciodvfy(case, tmp_path: Path) -> None:
    _, headers, volume, labels = case
    path = tmp_path / "cac.seg.dcm"
    S.build_seg(S.headers_in_volume_order(headers, volume), labels, NAMES, S.AlgorithmInfo()).save_as(path)
    errors, warnings = dciodvfy(path)
    assert errors == []
    assert warnings == []


def test_read_back_equals_mask_highdicom_and_own_reader(case, tmp_path: Path) -> None:
    import highdicom as hd

    _, headers, volume, labels = case
    path = tmp_path / "cac.seg.dcm"
    S.build_seg(S.headers_in_volume_order(headers, volume), labels, NAMES, S.AlgorithmInfo()).save_as(path)
    expected, expected_names = S.to_canonical(labels, NAMES)

    seg = hd.seg.segread(path)
    numbers = seg.get_pixels_by_source_instance(  # only slices with calcium are referenced
        source_sop_instance_uids=volume.sop_instance_uids, combine_segments=True, relabel=False,
        assert_missing_frames_are_empty=True,
    )
    by_highdicom, names = S.to_canonical(numbers, S.segment_names(seg))
    assert np.array_equal(by_highdicom, expected) and names == expected_names

    decoded = S.read_seg(pydicom.dcmread(path), volume, str(headers[0].FrameOfReferenceUID))
    ours, names = S.to_canonical(decoded.segment_numbers, S.segment_names(pydicom.dcmread(path)))
    assert np.array_equal(ours, expected) and names == expected_names
    assert decoded.overlap_voxels == 0


def test_seg_rescores_to_the_analytic_score(case, tmp_path: Path) -> None:
    _, headers, volume, labels = case
    path = tmp_path / "cac.seg.dcm"
    S.build_seg(S.headers_in_volume_order(headers, volume), labels, NAMES, S.AlgorithmInfo()).save_as(path)
    ds = pydicom.dcmread(path)
    back, names = S.to_canonical(S.read_seg(ds, volume).segment_numbers, S.segment_names(ds))
    result = score(volume.hu, SPACING, back, names)
    assert result.per_artery["LAD"].agatston == pytest.approx(EXPECTED["LAD"])
    assert result.per_artery["RCA"].agatston == pytest.approx(EXPECTED["RCA"])
    assert result.per_artery["CAC"].agatston == pytest.approx(EXPECTED["CAC"])
    assert result.agatston == pytest.approx(sum(EXPECTED.values()))


def test_empty_mask_skip_or_one_empty_segment(case, tmp_path: Path) -> None:
    _, headers, volume, labels = case
    ordered = S.headers_in_volume_order(headers, volume)
    empty = np.zeros_like(labels)
    assert S.build_seg(ordered, empty, NAMES, S.AlgorithmInfo()) is None
    seg = S.build_seg(ordered, empty, NAMES, S.AlgorithmInfo(), write_empty=True)
    path = tmp_path / "empty.seg.dcm"
    seg.save_as(path)
    ds = pydicom.dcmread(path)
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["CAC"]
    assert int(ds.NumberOfFrames) == 1
    assert not S.read_seg(ds, volume).segment_numbers.any()
    errors, _ = dciodvfy(path)
    assert errors == []


def test_resampled_or_incomplete_volume_cannot_be_referenced(case) -> None:
    _, headers, volume, _ = case
    with pytest.raises(S.SegNotPossible, match="resampled"):
        S.headers_in_volume_order(headers, replace(volume, resampled=True))
    uids = list(volume.sop_instance_uids)
    uids[3] = None
    with pytest.raises(S.SegNotPossible, match="SOPInstanceUID"):
        S.headers_in_volume_order(headers, replace(volume, sop_instance_uids=uids))
    with pytest.raises(S.SegNotPossible, match="no matching"):
        S.headers_in_volume_order(headers[1:], volume)


@pytest.fixture
def written(case, tmp_path: Path):
    _, headers, volume, labels = case
    path = tmp_path / "cac.seg.dcm"
    S.build_seg(S.headers_in_volume_order(headers, volume), labels, NAMES, S.AlgorithmInfo()).save_as(path)
    return pydicom.dcmread(path), volume


def test_geometry_mismatch_shifted_grid(written) -> None:
    ds, volume = written
    shifted = replace(volume, origin_lps=(ORIGIN[0] + 0.4, ORIGIN[1], ORIGIN[2]))
    with pytest.raises(S.GeometryMismatch, match="from CT slice"):
        S.read_seg(ds, shifted)


def test_geometry_mismatch_spacing_matrix_orientation_and_frame_of_reference(written) -> None:
    ds, volume = written
    with pytest.raises(S.GeometryMismatch, match="pixel spacing"):
        S.read_seg(ds, replace(volume, spacing_zyx=(2.5, 0.7, 0.7)))
    with pytest.raises(S.GeometryMismatch, match="matrix"):
        S.read_seg(ds, replace(volume, hu=volume.hu[:, :40, :]))
    flipped = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    with pytest.raises(S.GeometryMismatch, match="orientation"):
        S.read_seg(ds, replace(volume, direction=flipped))
    with pytest.raises(S.GeometryMismatch, match="FrameOfReferenceUID"):
        S.read_seg(ds, volume, frame_of_reference_uid="1.2.3.4")


def test_frames_referencing_another_series_without_positions_are_rejected(written) -> None:
    ds, volume = written
    other = replace(volume, sop_instance_uids=[f"1.2.3.{z}" for z in range(volume.hu.shape[0])])
    for frame in ds.PerFrameFunctionalGroupsSequence:
        del frame.PlanePositionSequence
    with pytest.raises(S.GeometryMismatch, match="not in this CT series"):
        S.read_seg(ds, other)


def test_frames_without_references_are_placed_by_position(written) -> None:
    ds, volume = written
    for frame in ds.PerFrameFunctionalGroupsSequence:
        del frame.DerivationImageSequence
    expected, _ = S.to_canonical(
        S.read_seg(ds, volume).segment_numbers, S.segment_names(ds)
    )
    assert int(np.count_nonzero(expected)) == 2 * 20 + 9 + 6


def test_overlapping_segments_keep_the_lowest_number(written) -> None:
    ds, volume = written
    # relabel the RCA frame as LAD's slice: make frame of segment 2 point at LAD's first slice
    frames = ds.PerFrameFunctionalGroupsSequence
    lad_frame = next(f for f in frames if f.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 1)
    rca_frame = next(f for f in frames if f.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 2)
    rca_frame.DerivationImageSequence = lad_frame.DerivationImageSequence
    rca_frame.PlanePositionSequence = lad_frame.PlanePositionSequence
    pixels = ds.pixel_array.copy()
    index_lad, index_rca = list(frames).index(lad_frame), list(frames).index(rca_frame)
    pixels[index_rca] = pixels[index_lad]
    from pydicom.pixels import pack_bits

    ds.PixelData = pack_bits(pixels.astype(np.uint8).ravel())
    decoded = S.read_seg(ds, volume)
    assert decoded.overlap_voxels == 20
    assert set(np.unique(decoded.segment_numbers)) == {0, 1, 3}


def test_segment_names_from_mapping_label_and_anatomy(written) -> None:
    ds, _ = written
    assert S.segment_names(ds) == {1: "LAD", 2: "RCA", 3: "CAC"}
    assert S.segment_names(ds, {2: "LCX", "CAC": "ignore"}) == {1: "LAD", 2: "LCX", 3: "ignore"}
    ds.SegmentSequence[0].SegmentLabel = "calcium 1"  # label says nothing: anatomy decides
    assert S.segment_names(ds)[1] == "LAD"


def test_to_canonical_rejects_unmapped_values() -> None:
    labels = np.zeros((2, 3, 3), np.uint8)
    labels[0, 0, 0], labels[1, 1, 1] = 1, 2
    with pytest.raises(ValueError, match=r"\[2\]"):
        S.to_canonical(labels, {1: "LAD"})
    out, names = S.to_canonical(labels, {1: "LAD", 2: "ignore"})
    assert names == {2: "LAD"} and out[0, 0, 0] == 2 and out[1, 1, 1] == 0


def test_round_trip_of_random_sparse_label_maps(tmp_path: Path) -> None:
    """Any sparse label map (values 1..6, any artery names) survives SEG write + read exactly."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    hu = np.zeros((8, 16, 16), np.int16)
    files = write_ct_series(hu, tmp_path / "small", SPACING, ORIGIN)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    volume = Volume(hu=hu, spacing_zyx=SPACING, origin_lps=ORIGIN,
                    sop_instance_uids=[str(h.SOPInstanceUID) for h in headers])
    choice = st.sampled_from(["LM", "LAD", "LCX", "RCA", "CAC"])

    @settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(arrays(np.uint8, hu.shape, elements=st.sampled_from([0] * 12 + [1, 2, 3, 4, 5, 6])),
           st.fixed_dictionaries({v: choice for v in range(1, 7)}))
    def check(labels: np.ndarray, names: dict[int, str]) -> None:
        seg = S.build_seg(headers, labels, names, S.AlgorithmInfo())
        if not labels.any():
            assert seg is None
            return
        buffer = BytesIO()
        seg.save_as(buffer)
        buffer.seek(0)
        ds = pydicom.dcmread(buffer)
        back, back_names = S.to_canonical(S.read_seg(ds, volume).segment_numbers, S.segment_names(ds))
        expected, expected_names = S.to_canonical(labels, names)
        assert np.array_equal(back, expected) and back_names == expected_names

    check()
