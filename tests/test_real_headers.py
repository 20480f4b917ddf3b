"""Real headers: files without UIDs, invalid patient/study values, ImageType missing or DERIVED,
symbolic links. Each case is built from a synthetic series edited the way real files differ."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from cac_mhub.chain import Context, Instance
from cac_mhub.cli import main
from cac_mhub.dicom import identity
from cac_mhub.dicom import seg as S
from cac_mhub.dicom import sr as R
from cac_mhub.dicom.scan import SelectionRules, scan, select
from cac_mhub.dicom.synth import CtSeriesSpec, write_ct_series
from cac_mhub.dicom.volume import assemble
from cac_mhub.modules.dicom_importer import DicomImporter
from cac_mhub.modules.dseg_converter import DsegConverter
from cac_mhub.modules.sr_exporter import SrExporter
from cac_mhub.scoring.agatston import score
from cac_mhub.types import Labels
from tests.conftest import ball_volume
from tests.header_edits import edit, edit_all
from tests.test_seg import NAMES, ORIGIN, SPACING, dciodvfy, phantom

UIDS_GONE = dict(StudyInstanceUID=None, SeriesInstanceUID=None, SOPInstanceUID=None, FrameOfReferenceUID=None)


def module(cls, **options):
    return cls(**{**{k: o.default for k, o in cls.options.items()}, **options})


def write_phantom(folder: Path, **spec) -> tuple[list[Path], np.ndarray]:
    hu, labels = phantom()
    return write_ct_series(hu, folder, SPACING, ORIGIN, CtSeriesSpec(**spec)), labels


def seg_and_sr(ct_dir: Path, labels: np.ndarray, out: Path, **seg_options) -> tuple[Instance, Context]:
    """Import, assemble, score the given labels and write SEG + SR as the default chain does."""
    result = scan(ct_dir)
    chosen = select(result.series, SelectionRules(min_slices=3))
    assert len(chosen) == 1, [s.reason for s in result.series]
    series = chosen[0]
    volume, _ = assemble(series)
    instance = Instance(key="series", series=series, volume=volume,
                        labels=Labels(labels, dict(NAMES), source="model:test@1"))
    DicomImporter.annotate(instance, result.ignored)
    instance.scores = score(volume.hu, volume.spacing_zyx, labels, NAMES)
    ctx = Context(input_dir=ct_dir, output_dir=out, config={})
    module(DsegConverter, **seg_options).run(instance, ctx)
    module(SrExporter).run(instance, ctx)
    return instance, ctx


def evidence_uids(sr) -> dict[str, set[str]]:
    return {s.SeriesInstanceUID: {i.ReferencedSOPInstanceUID for i in s.ReferencedSOPSequence}
            for e in sr.CurrentRequestedProcedureEvidenceSequence for s in e.ReferencedSeriesSequence}


# --- A1: UIDs missing from the source files -----------------------------------------------------------


def test_seg_and_sr_without_any_uid_in_the_files_use_one_set_of_derived_uids(tmp_path):
    files, labels = write_phantom(tmp_path / "ct")
    edit_all(files, meta={"MediaStorageSOPInstanceUID": ""}, **UIDS_GONE)
    instance, ctx = seg_and_sr(tmp_path / "ct", labels, tmp_path / "out")
    seg = pydicom.dcmread(ctx.output_dir / instance.outputs["seg"])
    sr = pydicom.dcmread(ctx.output_dir / instance.outputs["sr"])
    derived = instance.report["uids_derived"]
    assert derived["SOPInstanceUID"] == {"files": 24, "from_file_meta": 0, "derived": 24}
    assert all(derived[k].startswith("2.25.") for k in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"))
    # one set of UIDs everywhere: SEG, SR, report, volume
    volume_uids = set(instance.volume.sop_instance_uids)
    assert len(volume_uids) == 24 and all(u.startswith("2.25.") for u in volume_uids)
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == derived["StudyInstanceUID"]
    assert seg.FrameOfReferenceUID == derived["FrameOfReferenceUID"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == instance.series.uid == derived["SeriesInstanceUID"]
    assert evidence_uids(sr)[instance.series.uid] == volume_uids
    back = S.read_seg(seg, instance.volume)  # frames reference the volume's slices by UID
    np.testing.assert_array_equal(back.segment_numbers > 0, labels > 0)
    assert R.read_sr(sr)["segments"]["LAD"][0] == str(seg.SOPInstanceUID)
    assert any("carry no StudyInstanceUID, SeriesInstanceUID, FrameOfReferenceUID" in w for w in instance.warnings)
    # stable: a second import derives the very same UIDs
    again = select(scan(tmp_path / "ct").series, SelectionRules(min_slices=3))[0]
    assert identity.uid_report(again) == derived
    assert {str(h.SOPInstanceUID) for h in identity.writer_sources(again).headers} == volume_uids
    # the headers read at import are left as the files are
    assert "StudyInstanceUID" not in instance.series.first


def test_seg_written_for_uid_less_files_is_found_again_by_the_rescore_workflow(tmp_path):
    files, labels = write_phantom(tmp_path / "in/ct")
    edit_all(files, meta={"MediaStorageSOPInstanceUID": ""}, **UIDS_GONE)
    instance, ctx = seg_and_sr(tmp_path / "in/ct", labels, tmp_path / "first")
    (tmp_path / "in/cac.seg.dcm").write_bytes((ctx.output_dir / instance.outputs["seg"]).read_bytes())
    out = tmp_path / "out"
    assert main(["run", "--input", str(tmp_path / "in"), "--output", str(out), "--workflow", "rescore", "--quiet",
                 "--set", "modules.DicomImporter.min_slices=3"]) == 0
    ct = [r for r in json.loads((out / "cohort.json").read_text())["series"] if r["series"]["modality"] == "CT"]
    assert [r["status"] for r in ct] == ["scored"]
    assert ct[0]["scores"]["agatston"] == pytest.approx(instance.scores.to_dict()["agatston"])


def test_empty_uids_with_file_meta_sop_uids_and_dcmqi_falls_back_to_highdicom(tmp_path):
    files, labels = write_phantom(tmp_path / "ct", empty_uids=True)  # SOP UIDs only in the file meta
    instance, ctx = seg_and_sr(tmp_path / "ct", labels, tmp_path / "out", engine="dcmqi")
    assert instance.report["seg"]["engine"] == "highdicom"
    assert any("not dcmqi" in w for w in instance.warnings)
    meta_uids = {str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID) for f in files}
    sr = pydicom.dcmread(ctx.output_dir / instance.outputs["sr"])
    assert evidence_uids(sr)[instance.series.uid] == meta_uids
    assert instance.report["uids_derived"]["SOPInstanceUID"]["from_file_meta"] == 24


def test_uid_less_series_of_one_study_share_the_derived_study_uid(tmp_path, make_ct):
    make_ct(tmp_path / "in/a", empty_uids=True, series_number=1)
    make_ct(tmp_path / "in/b", empty_uids=True, series_number=2)
    series = scan(tmp_path / "in").series
    studies = {identity.study_uid(s) for s in series}
    assert len(series) == 2 and len(studies) == 1 and next(iter(studies))[1] is True


def test_real_files_with_empty_uids_get_seg_and_sr(shared_ct, tmp_path):
    folder = shared_ct / "totalseg_refs/example_ct_dicom_j2k_emptyUIDs"
    volume, _ = assemble(select(scan(folder).series, SelectionRules())[0])
    labels = np.zeros(volume.hu.shape, np.uint8)
    labels[10, 200:204, 250:254] = 2  # an LAD "lesion": SEG frames need something to encode
    instance, ctx = seg_and_sr(folder, labels, tmp_path / "out")
    seg = pydicom.dcmread(ctx.output_dir / instance.outputs["seg"], stop_before_pixels=True)
    sr = pydicom.dcmread(ctx.output_dir / instance.outputs["sr"], stop_before_pixels=True)
    derived = instance.report["uids_derived"]
    assert set(derived) == {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"}
    assert derived["SOPInstanceUID"]["from_file_meta"] == 20
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == derived["StudyInstanceUID"]
    assert evidence_uids(sr)[instance.series.uid] == set(instance.volume.sop_instance_uids)


# --- A2: invalid values in the attributes the writers copy ---------------------------------------------


def test_invalid_patient_and_study_values_are_dropped_with_a_warning(tmp_path):
    files, labels = write_phantom(tmp_path / "ct")
    edit_all(files, StudyDate=b"UNKNOWN", SeriesDate=b"UNKNOWN", PatientBirthDate=b"UNKNOWN", StudyTime=b"noon",
             PatientAge=b"UNKNOWN", PatientSex=b"X", PatientName=b"A^B^C^D^E^F^G", ReferringPhysicianName=None,
             AccessionNumber=None)
    instance, ctx = seg_and_sr(tmp_path / "ct", labels, tmp_path / "out")
    for kind in ("seg", "sr"):
        out = pydicom.dcmread(ctx.output_dir / instance.outputs[kind], stop_before_pixels=True)
        for keyword in ("StudyDate", "PatientBirthDate", "StudyTime", "PatientSex", "PatientName",
                        "ReferringPhysicianName", "AccessionNumber"):
            assert keyword in out and str(out.get(keyword) or "") == "", (kind, keyword)
        assert "PatientAge" not in out
    text = " | ".join(instance.warnings)
    assert "left out of SEG/SR: PatientAge, PatientBirthDate, PatientName, PatientSex, StudyDate, StudyTime" in text
    assert "lacks AccessionNumber, ReferringPhysicianName: written empty" in text
    assert "UNKNOWN" not in text and "A^B" not in text  # names attributes, never their values
    assert str(instance.series.first.StudyDate) == "UNKNOWN"  # import headers untouched


def test_old_style_dates_and_times_are_rewritten(tmp_path):
    files, labels = write_phantom(tmp_path / "ct")
    edit_all(files, StudyDate=b"2020.01.02", StudyTime=b"12:30:00")
    instance, ctx = seg_and_sr(tmp_path / "ct", labels, tmp_path / "out")
    seg = pydicom.dcmread(ctx.output_dir / instance.outputs["seg"], stop_before_pixels=True)
    assert (seg.StudyDate, seg.StudyTime) == ("20200102", "123000")
    assert any("rewritten for SEG/SR: StudyDate, StudyTime" in w for w in instance.warnings)


@pytest.mark.parametrize("changes", [
    dict(meta={"MediaStorageSOPInstanceUID": ""}, **UIDS_GONE),
    dict(StudyDate=b"UNKNOWN", PatientBirthDate=b"UNKNOWN", PatientAge=b"UNKNOWN", PatientSex=b"X",
         AccessionNumber=None),
], ids=["no-uids", "invalid-values"])
def test_seg_and_sr_from_repaired_headers_pass_dciodvfy(tmp_path, changes):
    files, labels = write_phantom(tmp_path / "ct")
    edit_all(files, **changes)
    instance, ctx = seg_and_sr(tmp_path / "ct", labels, tmp_path / "out")
    errors, _ = dciodvfy(ctx.output_dir / instance.outputs["seg"])
    assert errors == []
    errors, warnings = dciodvfy(ctx.output_dir / instance.outputs["sr"])
    assert errors == []
    # the private coding scheme of the categories; an empty StudyDate is valid, only not DICOMDIR-friendly
    assert all(R.PRIVATE_SCHEME in w or "needed to build DICOMDIR" in w for w in warnings), warnings


# --- A2b: over-long text, control characters, an undeclared character set (issue 20, failure 5) -----


LONG_AND_LATIN1 = dict(
    PatientID=b"P" * 300,
    StudyDescription=("Thorax " * 430).encode("ascii")[:3000],
    PatientName="Müller^Jörg".encode("latin-1"),
    InstitutionName="Klinikum Süd\x01\x07".encode("latin-1"),
    AccessionNumber=b"ACC-0123456789-0123456789",
    StudyID=b"STUDY\\ID\x1b(B",
    ReferringPhysicianName=("Dr " + "x" * 80 + "^Anna").encode("latin-1"),
    OperatorsName="Ä".encode("latin-1"),
    SpecificCharacterSet=None,
)


def _copied(kind: str, instance, ctx):
    return pydicom.dcmread(ctx.output_dir / instance.outputs[kind], stop_before_pixels=True)


def test_long_text_and_latin1_without_character_set_give_valid_seg_and_sr(tmp_path):
    """PatientID of 300 characters, StudyDescription of 3,000, Latin-1 bytes with no
    SpecificCharacterSet (copied unchanged, both files failed validation): every copied value
    fits its VR, the text is read as Latin-1 and declared as UTF-8, dciodvfy finds no error."""
    files, labels = write_phantom(tmp_path / "ct")
    edit_all(files, **LONG_AND_LATIN1)
    assert "SpecificCharacterSet" not in pydicom.dcmread(files[0], stop_before_pixels=True)
    instance, ctx = seg_and_sr(tmp_path / "ct", labels, tmp_path / "out")
    for kind in ("seg", "sr"):
        out = _copied(kind, instance, ctx)
        assert out.SpecificCharacterSet == "ISO_IR 192", kind
        assert out.PatientID == "P" * 64 and len(out.StudyDescription.encode()) <= 64
        assert out.StudyDescription.startswith("Thorax Thorax")
        assert str(out.PatientName) == "Müller^Jörg"
        assert len(out.AccessionNumber) <= 16 and len(out.StudyID) <= 16 and "\x1b" not in out.StudyID
        assert all(len(group.encode()) <= 64 for group in str(out.ReferringPhysicianName).split("="))
        equipment = out.ContributingEquipmentSequence[0] if "ContributingEquipmentSequence" in out else None
        if equipment is not None and "InstitutionName" in equipment:
            assert equipment.InstitutionName == "Klinikum Süd"
        errors, _ = dciodvfy(ctx.output_dir / instance.outputs[kind])
        assert errors == [], (kind, errors)
    text = " | ".join(instance.warnings)
    assert "cut for SEG/SR (VR, bytes): AccessionNumber (SH 16), PatientID (LO 64)" in text
    assert "StudyDescription (LO 64)" in text and "StudyID" in text
    assert "control characters or backslashes removed" in text and "InstitutionName" in text
    assert "read as Latin-1, written as UTF-8 (ISO_IR 192) in SEG/SR: " in text and "PatientName" in text
    assert "Müller" not in text and "PPPP" not in text  # attributes named, never their values
    assert str(instance.series.first.PatientID) == "P" * 300  # import headers untouched


def test_utf8_bytes_without_character_set_are_read_as_utf8(tmp_path):
    files, labels = write_phantom(tmp_path / "ct")
    edit_all(files, PatientName="Łukasz^Żółć".encode("utf-8"), StudyDescription="Herz-CT Übersicht".encode("utf-8"),
             SpecificCharacterSet=None)
    instance, ctx = seg_and_sr(tmp_path / "ct", labels, tmp_path / "out")
    seg = _copied("seg", instance, ctx)
    assert str(seg.PatientName) == "Łukasz^Żółć" and seg.StudyDescription == "Herz-CT Übersicht"
    assert seg.SpecificCharacterSet == "ISO_IR 192"
    assert any("read as UTF-8" in w for w in instance.warnings)


def test_declared_character_sets_are_kept_and_written_as_utf8(tmp_path):
    """A correctly declared Latin-1 (ISO_IR 100) is no warning; the copies say UTF-8 and hold the
    same text. A declared set that does not decode the bytes is read robustly, with a warning."""
    files, labels = write_phantom(tmp_path / "ct")
    edit_all(files, SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Jörg".encode("latin-1"))
    instance, ctx = seg_and_sr(tmp_path / "ct", labels, tmp_path / "out")
    seg = _copied("seg", instance, ctx)
    assert str(seg.PatientName) == "Müller^Jörg" and seg.SpecificCharacterSet == "ISO_IR 192"
    assert not any("non-ASCII" in w for w in instance.warnings)
    assert dciodvfy(ctx.output_dir / instance.outputs["seg"])[0] == []

    files, labels = write_phantom(tmp_path / "ct2")
    edit_all(files, SpecificCharacterSet="ISO_IR 192")
    edit_all(files, PatientName="Müller^Jörg".encode("latin-1"))  # bytes the declaration does not describe
    instance, ctx = seg_and_sr(tmp_path / "ct2", labels, tmp_path / "out2")
    assert str(_copied("sr", instance, ctx).PatientName) == "Müller^Jörg"
    assert any("read as Latin-1" in w for w in instance.warnings)


def test_ascii_headers_stay_as_they_were(tmp_path):
    """Nothing to repair: no warning, no character set declared, values unchanged."""
    files, labels = write_phantom(tmp_path / "ct")
    instance, ctx = seg_and_sr(tmp_path / "ct", labels, tmp_path / "out")
    seg = _copied("seg", instance, ctx)
    assert "SpecificCharacterSet" not in seg and seg.PatientID == "PHANTOM-0001"
    assert str(seg.PatientName) == "Phantom^Thorax" and seg.StudyDescription == "CT CHEST"
    assert not [w for w in instance.warnings if "SEG/SR" in w]


# --- A3/A4: ImageType missing or DERIVED ----------------------------------------------------------------


def test_missing_image_type_is_accepted_with_a_warning(tmp_path, make_ct):
    edit_all(make_ct(tmp_path / "in/s", hu=ball_volume((12, 32, 32))), ImageType=None)
    series = scan(tmp_path / "in").series
    assert select(series, SelectionRules()) == series
    assert series[0].warnings == ["no ImageType: taken as an original acquisition"]


def test_derived_axial_mpr_scored_with_a_warning_when_the_study_has_no_original(tmp_path, make_ct):
    study = generate_uid()
    # Canon calcium scoring: DERIVED\PRIMARY\MPR, axial, 3 mm; the study's original is 5 mm (too thick)
    make_ct(tmp_path / "in/original5", hu=ball_volume((12, 32, 32)), spacing=(5.0, .8, .8), study_uid=study)
    make_ct(tmp_path / "in/mpr3", hu=ball_volume((12, 32, 32)), spacing=(3.0, .8, .8), study_uid=study,
            image_type=("DERIVED", "PRIMARY", "MPR"), series_number=2)
    series = scan(tmp_path / "in").series
    chosen = select(series, SelectionRules())
    assert [s.first.SeriesNumber for s in chosen] == [2]
    assert any("derived axial reconstruction (ImageType DERIVED\\PRIMARY\\MPR) scored" in w for w in chosen[0].warnings)


@pytest.mark.parametrize("per_study", ["best", "all"])
def test_derived_axial_skipped_when_an_original_of_the_study_qualifies(tmp_path, make_ct, per_study):
    study = generate_uid()
    make_ct(tmp_path / "in/original", hu=ball_volume((12, 32, 32)), study_uid=study)
    make_ct(tmp_path / "in/mpr", hu=ball_volume((12, 32, 32)), study_uid=study, series_number=2,
            image_type=("DERIVED", "SECONDARY", "AXIAL"))
    series = scan(tmp_path / "in").series
    chosen = select(series, SelectionRules(per_study=per_study))
    assert [s.first.SeriesNumber for s in chosen] == [1] and chosen[0].warnings == []
    skipped = [s for s in series if not s.selected][0]
    assert skipped.reason == ("derived or secondary images (ImageType DERIVED\\SECONDARY\\AXIAL): an ORIGINAL "
                              "axial series of this study is preferred")
    assert len(select(series, SelectionRules(per_study="all", allow_derived=True))) == 2


def test_non_axial_reformats_and_localizers_stay_rejected(tmp_path, make_ct):
    sagittal = make_ct(tmp_path / "in/sag", hu=ball_volume((12, 32, 32)), image_type=("DERIVED", "PRIMARY", "MPR"))
    for k, path in enumerate(sagittal):
        edit(path, ImageOrientationPatient=[0, 1, 0, 0, 0, -1], ImagePositionPatient=[2.5 * k, 0, 0])
    make_ct(tmp_path / "in/loc", image_type=("DERIVED", "PRIMARY", "LOCALIZER"), study_uid=generate_uid())
    make_ct(tmp_path / "in/mip", image_type=("DERIVED", "SECONDARY", "MIP"), study_uid=generate_uid())
    series = scan(tmp_path / "in").series
    assert select(series, SelectionRules()) == []
    reasons = sorted(s.reason.split(":")[0] for s in series)
    assert reasons == ["localizer/scout images only", "not axial",
                       "reformatted/projection images (ImageType DERIVED\\SECONDARY\\MIP)"]


# --- A5: symbolic links ---------------------------------------------------------------------------------


def test_symlinked_folders_and_files_are_followed_once_without_loops(tmp_path, make_ct):
    store = tmp_path / "store"
    make_ct(store / "s1", hu=ball_volume((12, 32, 32)))
    s2 = make_ct(store / "s2", hu=ball_volume((12, 32, 32)), study_uid=generate_uid())
    root = tmp_path / "in"
    root.mkdir()
    os.symlink(store / "s1", root / "series1")          # a series folder that is a link
    os.symlink(store / "s1", root / "series1_again")    # the same real folder twice
    os.symlink(root, root / "loop")                     # a link back to an ancestor
    (root / "files").mkdir()
    for path in s2:
        os.symlink(path, root / "files" / path.name)     # files that are links
    os.symlink(tmp_path / "nowhere", root / "broken")    # a dangling link
    result = scan(root)
    assert sorted(len(s.files) for s in result.series) == [12, 12]
    assert [(p.name, why) for p, why in result.ignored] == [("broken", "broken symbolic link")]
    out = tmp_path / "out"
    assert main(["run", "--input", str(root), "--output", str(out), "--workflow", "import", "--quiet"]) == 0
    cohort = json.loads((out / "cohort.json").read_text())
    assert cohort["counts"]["processed"] == 2
    assert cohort["ignored_files"] == [{"path": "broken", "reason": "broken symbolic link"}]


# --- end to end -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_workflow_scores_a_series_without_uids_with_bad_dates_and_no_image_type(tmp_path):
    """The failures seen on real data, all at once, through `cac-mhub run` with the shipped model."""
    from cac_mhub.paths import models_dir
    from cac_mhub.phantom.thorax import generate_thorax

    if not (models_dir() / "cac-phantom-2d" / "model.yml").is_file():
        pytest.skip("default model not installed under models/")
    thorax = generate_thorax(777_002, size=256, increment=3.0, z_extent_mm=120.0, burden="moderate")
    files = write_ct_series(thorax.hu, tmp_path / "in/ct", thorax.spacing_zyx, thorax.origin_lps)
    edit_all(files, meta={"MediaStorageSOPInstanceUID": ""}, StudyDate=b"UNKNOWN", PatientBirthDate=b"UNKNOWN",
             ImageType=None, **UIDS_GONE)
    out = tmp_path / "out"
    assert main(["run", "--input", str(tmp_path / "in"), "--output", str(out), "--quiet",
                 "--set", "modules.NnunetCacRunner.device=cpu", "--set", "modules.DsegConverter.empty=write"]) == 0
    [report] = json.loads((out / "cohort.json").read_text())["series"]
    assert report["status"] == "scored", report["reason"]
    assert set(report["outputs"]) >= {"seg", "sr", "report"}
    text = " | ".join(report["warnings"])
    assert "no ImageType: taken as an original acquisition" in text
    assert "carry no StudyInstanceUID, SeriesInstanceUID, FrameOfReferenceUID, SOPInstanceUID" in text
    assert "left out of SEG/SR: PatientBirthDate, StudyDate" in text
    seg = pydicom.dcmread(out / report["outputs"]["seg"], stop_before_pixels=True)
    sr = pydicom.dcmread(out / report["outputs"]["sr"], stop_before_pixels=True)
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == report["uids_derived"]["StudyInstanceUID"]


@pytest.mark.slow
def test_default_workflow_writes_valid_seg_and_sr_from_long_latin1_headers(tmp_path):
    """Issue 20, failure 5, through `cac-mhub run`: PatientID of 300 characters, StudyDescription
    of 3,000, Latin-1 bytes and no SpecificCharacterSet; cac.seg.dcm and cac.sr.dcm copied them
    unchanged and failed validation. Now both pass dciodvfy and the report says what changed."""
    from cac_mhub.paths import models_dir
    from cac_mhub.phantom.thorax import generate_thorax

    if not (models_dir() / "cac-phantom-2d" / "model.yml").is_file():
        pytest.skip("default model not installed under models/")
    thorax = generate_thorax(777_003, size=256, increment=3.0, z_extent_mm=120.0, burden="moderate")
    files = write_ct_series(thorax.hu, tmp_path / "in/ct", thorax.spacing_zyx, thorax.origin_lps)
    edit_all(files, **LONG_AND_LATIN1)
    out = tmp_path / "out"
    assert main(["run", "--input", str(tmp_path / "in"), "--output", str(out), "--quiet",
                 "--set", "modules.NnunetCacRunner.device=cpu", "--set", "modules.DsegConverter.empty=write"]) == 0
    [report] = json.loads((out / "cohort.json").read_text(encoding="utf-8"))["series"]
    assert report["status"] == "scored", report["reason"]
    assert report["series"]["patient_id"] == "P" * 300  # the report keeps the source's value
    for kind in ("seg", "sr"):
        written = pydicom.dcmread(out / report["outputs"][kind], stop_before_pixels=True)
        assert written.SpecificCharacterSet == "ISO_IR 192" and str(written.PatientName) == "Müller^Jörg"
        errors, _ = dciodvfy(out / report["outputs"][kind])
        assert errors == [], (kind, errors)
    assert any("cut for SEG/SR" in w for w in report["warnings"])
