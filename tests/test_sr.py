"""TID 1500 SR: content, references to the SEG segments and source images, validity, read-back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from cac_mhub import __version__
from cac_mhub.dicom import seg as S
from cac_mhub.dicom import sr as R
from cac_mhub.scoring.agatston import score
from tests.test_seg import EXPECTED, NAMES, SPACING, dciodvfy, make_case


@pytest.fixture
def reported(tmp_path: Path):
    """CT, SEG and SR of the phantom, scored with a mass calibration so that mass is reported."""
    _, headers, volume, labels = make_case(tmp_path)
    seg_path = tmp_path / "cac.seg.dcm"
    algorithm = S.AlgorithmInfo(model_id="model:test@1")
    S.build_seg(S.headers_in_volume_order(headers, volume), labels, NAMES, algorithm).save_as(seg_path)
    result = score(volume.hu, SPACING, labels, NAMES, mass_calibration=0.8)
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    sr = R.build_sr(headers[::-1], result, algorithm, seg=seg)
    sr_path = tmp_path / "cac.sr.dcm"
    sr.save_as(sr_path)
    return headers, seg, result, sr_path


def test_sr_read_back_gives_the_same_numbers(reported) -> None:
    _, _, result, sr_path = reported
    back = R.read_sr(pydicom.dcmread(sr_path))
    expected = result.to_dict()
    assert back["agatston"] == pytest.approx(sum(EXPECTED.values()))
    for key in ("agatston", "volume_mm3", "mass_mg", "mass_hu_mm3"):
        assert back[key] == pytest.approx(expected[key]), key
    for key in ("lesion_count", "risk_category", "cac_drs"):
        assert back[key] == expected[key], key
    assert back["mass_mg"] is not None and back["mass_mg"] > 0
    assert back["risk_category"] == "low" and back["cac_drs"] == "A1/N2"
    for name in ("LM", "LAD", "LCX", "RCA", "CAC"):
        for key in ("agatston", "volume_mm3", "mass_mg", "lesions"):
            assert back["per_artery"][name][key] == pytest.approx(expected["per_artery"][name][key]), (name, key)
    assert back["per_artery"]["LAD"]["agatston"] == pytest.approx(EXPECTED["LAD"])


def test_sr_references_seg_segments_and_source_images(reported) -> None:
    headers, seg, _, sr_path = reported
    ds = pydicom.dcmread(sr_path)
    back = R.read_sr(ds)
    segment_of = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    assert back["segments"] == {name: (str(seg.SOPInstanceUID), number) for name, number in segment_of.items()}
    assert set(back["per_artery"]) == {"LM", "LAD", "LCX", "RCA", "CAC"}  # zero arteries too
    # evidence: every CT image and the SEG, all in the CT's study
    assert ds.StudyInstanceUID == headers[0].StudyInstanceUID and ds.PatientID == headers[0].PatientID
    evidence = {}
    for study in ds.CurrentRequestedProcedureEvidenceSequence:
        for series in study.ReferencedSeriesSequence:
            evidence[series.SeriesInstanceUID] = {i.ReferencedSOPInstanceUID for i in series.ReferencedSOPSequence}
    assert evidence[headers[0].SeriesInstanceUID] == {h.SOPInstanceUID for h in headers}
    assert evidence[seg.SeriesInstanceUID] == {seg.SOPInstanceUID}
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    # the artery groups carry the tracking UIDs of their SEG segments
    import highdicom as hd

    report = hd.sr.Comprehensive3DSR.from_dataset(ds).content
    tracking = {str(g.tracking_identifier): g.tracking_uid for g in report.get_volumetric_roi_measurement_groups()}
    assert tracking == {f"CAC {s.SegmentLabel}": s.TrackingUID for s in seg.SegmentSequence}
    assert (ds.Manufacturer, ds.SoftwareVersions) == ("cac-mhub", __version__)


def test_sr_risk_category_is_a_coded_evaluation(reported) -> None:
    import highdicom as hd

    _, _, _, sr_path = reported
    report = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(sr_path)).content
    total = next(g for g in report.get_image_measurement_groups() if str(g.tracking_identifier) == "CAC total")
    evaluations = {e.name.value: e.value for e in total.get_qualitative_evaluations()}
    assert evaluations["RISKCAT"].scheme_designator == R.PRIVATE_SCHEME
    assert evaluations["RISKCAT"].meaning == "low" and evaluations["RISKCAT"].value == "RISK1"
    assert evaluations["CACDRS"].meaning == "A1/N2"
    agatston = total.get_measurements(name=pydicom.sr.codedict.codes.DCM.CalciumScore)[0]
    assert agatston.method.value == "112055"  # Agatston scoring method


def test_sr_passes_dciodvfy(reported) -> None:
    _, _, _, sr_path = reported
    errors, warnings = dciodvfy(sr_path)
    assert errors == []
    # the only warnings: the private coding scheme of the risk / CAC-DRS categories
    assert all(R.PRIVATE_SCHEME in w for w in warnings), warnings


def test_zero_score_sr_without_seg(tmp_path: Path) -> None:
    _, headers, volume, labels = make_case(tmp_path)
    result = score(volume.hu, SPACING, np.zeros_like(labels), NAMES)
    sr = R.build_sr(headers, result, S.AlgorithmInfo())
    path = tmp_path / "zero.sr.dcm"
    sr.save_as(path)
    back = R.read_sr(pydicom.dcmread(path))
    assert back["agatston"] == 0.0 and back["lesion_count"] == 0 and back["mass_mg"] is None
    assert back["risk_category"] == "very low" and back["cac_drs"] == "A0"
    assert set(back["per_artery"]) == {"LM", "LAD", "LCX", "RCA"}  # no unassigned group without calcium
    assert back["segments"] == {}
    errors, _ = dciodvfy(path)
    assert errors == []


def test_a_zero_with_low_confidence_says_so_in_the_sr(tmp_path: Path) -> None:
    """A doubtful 0 is never a plain, confident 0: the verdict and each reason are coded evaluations."""
    from cac_mhub.anatomy.confidence import assess

    _, headers, volume, labels = make_case(tmp_path)
    result = score(volume.hu, SPACING, np.zeros_like(labels), NAMES)
    confidence = assess({"root_above_centre_mm": 120.0, "lung_level": 0.1, "heart_region_cm3": 900.0},
                        increment_mm=5.0, unlabelled_agatston=40.0)
    path = tmp_path / "doubtful.sr.dcm"
    R.build_sr(headers, result, S.AlgorithmInfo(), confidence=confidence).save_as(path)
    back = R.read_sr(pydicom.dcmread(path))
    assert back["agatston"] == 0.0 and back["confidence"] == "low"
    assert back["confidence_reasons"] == ["root_position", "under_diaphragm", "thick_slices", "unlabelled"]
    errors, _ = dciodvfy(path)
    assert errors == []


def test_sr_from_a_plain_dict() -> None:
    data = {"agatston": 12.5, "volume_mm3": 10.0, "mass_mg": None, "lesion_count": 1, "risk_category": "low",
            "per_artery": {"RCA": {"agatston": 12.5, "volume_mm3": 10.0, "mass_mg": None, "lesions": 1}}}
    headers = _headers(4)
    back = R.read_sr(R.build_sr(headers, data, S.AlgorithmInfo()))
    assert back["agatston"] == 12.5 and back["per_artery"]["RCA"]["agatston"] == 12.5
    assert "cac_drs" not in back and back["risk_category"] == "low"


def _headers(n: int) -> list:
    from pydicom.dataset import Dataset
    from pydicom.uid import CTImageStorage, generate_uid

    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    result = []
    for _ in range(n):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientID, ds.PatientName, ds.Modality = "P1", "Test^Patient", "CT"
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20260101", "120000", "1"
        ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
        ds.PatientBirthDate, ds.PatientSex = "", ""
        result.append(ds)
    return result
