"""SEG + SR on a real CT (ITKElastix thorax, Philips, 141 x 512 x 512) with a synthetic mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from cac_mhub.dicom import seg as S
from cac_mhub.dicom import sr as R
from cac_mhub.scoring.agatston import score
from cac_mhub.types import Volume
from tests.test_seg import dciodvfy

pytestmark = pytest.mark.realdata
THORAX = Path(__file__).resolve().parents[2] / "shared/data/ct" / "itkelastix_thorax_00"
NAMES = {1: "LAD", 2: "RCA"}


@pytest.fixture(scope="module")
def thorax():
    """Headers, files and a hand-built volume (z ascending) of the real series, plus a mask."""
    files = sorted(THORAX.glob("*.dcm"))
    if len(files) < 100:
        pytest.skip(f"real CT not found at {THORAX}")
    datasets = [pydicom.dcmread(f) for f in files]
    order = np.argsort([float(d.ImagePositionPatient[2]) for d in datasets])
    hu = np.stack([datasets[i].pixel_array.astype(np.int16) * int(datasets[i].RescaleSlope)
                   + int(datasets[i].RescaleIntercept) for i in order])
    first = datasets[order[0]]
    z = [float(datasets[i].ImagePositionPatient[2]) for i in order]
    spacing = (z[1] - z[0], float(first.PixelSpacing[0]), float(first.PixelSpacing[1]))
    assert np.allclose(np.diff(z), spacing[0])
    volume = Volume(hu=hu, spacing_zyx=spacing, origin_lps=tuple(float(v) for v in first.ImagePositionPatient),
                    sop_instance_uids=[str(datasets[i].SOPInstanceUID) for i in order])
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]  # file order, as the chain has them
    labels = np.zeros(hu.shape, np.uint8)
    labels[60:63, 240:246, 260:268] = 1  # soft tissue box: a segment with no calcium above 130 HU
    bone = np.zeros(hu.shape, bool)
    bone[70:73, 250:360, 200:310] = True
    labels[bone & (hu >= 300)] = 2  # dense bone: a segment that scores
    return files, headers, volume, labels


def test_real_ct_seg_and_sr_are_valid_and_reference_it(thorax, tmp_path: Path) -> None:
    files, headers, volume, labels = thorax
    algorithm = S.AlgorithmInfo(model_id="synthetic-mask")
    seg_path, sr_path = tmp_path / "cac.seg.dcm", tmp_path / "cac.sr.dcm"
    S.build_seg(S.headers_in_volume_order(headers, volume), labels, NAMES, algorithm).save_as(seg_path)
    seg = pydicom.dcmread(seg_path)
    ct = headers[0]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID"):
        assert seg.get(keyword) == ct.get(keyword), keyword
    position_of = {str(h.SOPInstanceUID): [float(v) for v in h.ImagePositionPatient] for h in headers}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient], position_of[source])
    decoded, names = S.to_canonical(S.read_seg(seg, volume, str(ct.FrameOfReferenceUID)).segment_numbers,
                                    S.segment_names(seg))
    assert np.array_equal(decoded, S.to_canonical(labels, NAMES)[0])

    result = score(volume.hu, volume.spacing_zyx, decoded, names)
    assert result.per_artery["RCA"].agatston > 0 and result.per_artery["LAD"].agatston == 0
    R.build_sr(headers, result, algorithm, seg=pydicom.dcmread(seg_path, stop_before_pixels=True)).save_as(sr_path)
    back = R.read_sr(pydicom.dcmread(sr_path))
    assert back["agatston"] == pytest.approx(result.agatston)
    assert set(back["segments"]) == {"LAD", "RCA"}
    sr = pydicom.dcmread(sr_path)
    referenced = {i.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                  for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
    assert {str(h.SOPInstanceUID) for h in headers} | {str(seg.SOPInstanceUID)} == referenced

    for path in (seg_path, sr_path):
        errors, _ = dciodvfy(path)
        assert errors == [], path.name


def test_real_ct_dcmqi_seg_is_valid_and_reads_back(thorax, tmp_path: Path) -> None:
    try:
        S.dcmqi_tool("itkimage2segimage")
    except FileNotFoundError:
        pytest.skip("dcmqi not installed")
    files, headers, volume, labels = thorax
    path = tmp_path / "dcmqi.seg.dcm"
    assert S.build_seg_dcmqi(files, labels, NAMES, volume, S.AlgorithmInfo(), path)
    seg = pydicom.dcmread(path)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == headers[0].SeriesInstanceUID
    decoded, _ = S.to_canonical(S.read_seg(seg, volume).segment_numbers, S.segment_names(seg))
    assert np.array_equal(decoded, S.to_canonical(labels, NAMES)[0])
    errors, _ = dciodvfy(path)
    assert errors == []
