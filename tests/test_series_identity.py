"""A series is not its SeriesInstanceUID alone (issue 20, failures 2-4 and the two reconstructions).

Every input is built here from synthetic series edited the way real exports go wrong: two
patients under one UID, a series split over far-apart folders, scouts, a second reconstruction
and a dose report filed under the axial series' UID, copies of one series.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

from cac_mhub.cli import main
from cac_mhub.cohort.catalog import CatalogStats, iter_units
from cac_mhub.dicom.scan import SelectionRules, scan, select
from tests.header_edits import edit_all

IMPORT = ["--workflow", "import", "--quiet"]


def run(input_dir: Path, output_dir: Path, *extra: str) -> int:
    return main(["run", "--input", str(input_dir), "--output", str(output_dir), *IMPORT, *extra])


def rows(output_dir: Path) -> list[dict]:
    with open(output_dir / "cohort.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def report(output_dir: Path, key: str) -> dict:
    return json.loads((output_dir / key / "report.json").read_text(encoding="utf-8"))


def hu(slices: int, seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, (slices, size, size)).astype(np.int16)


# --- failure 2: two patients' series share one SeriesInstanceUID ------------------------------------


def test_two_patients_sharing_a_series_uid_are_two_series_in_two_folders(tmp_path, make_ct):
    """A careless anonymiser: patientA/ct and patientB/ct carry the same SeriesInstanceUID (their
    studies differ). Was one row, the other patient's study gone with a log warning only."""
    uid = generate_uid()
    make_ct(tmp_path / "in/patientA/ct", hu=hu(12, 1), series_uid=uid, patient_id="A", study_uid="1.2.3.1")
    make_ct(tmp_path / "in/patientB/ct", hu=hu(12, 2), series_uid=uid, patient_id="B", study_uid="1.2.3.2")
    out = tmp_path / "out"
    assert run(tmp_path / "in", out) == 0
    table = rows(out)
    assert len(table) == 2 and {r["patient_id"] for r in table} == {"A", "B"}
    assert {r["status"] for r in table} == {"processed"} and {r["series_uid"] for r in table} == {uid}
    keys = sorted(r["key"] for r in table)
    assert keys[0] == uid and keys[1].startswith(uid + "_") and len(keys[1]) == len(uid) + 9
    for row in table:
        assert "this SeriesInstanceUID also names another series" in row["warnings"], row
        assert report(out, row["key"])["series"]["patient_id"] == row["patient_id"]
        assert any("also names another series" in w for w in report(out, row["key"])["warnings"])
    # the folder names are the same when the run is done again (another config: everything redone)
    assert run(tmp_path / "in", out, "--set", "modules.NiftiConverter.write_nifti=true") == 0
    assert sorted(r["key"] for r in rows(out)) == keys
    assert {r["key"]: r["patient_id"] for r in rows(out)} == {r["key"]: r["patient_id"] for r in table}
    assert sorted(p.parent.name for p in out.glob("*/report.json")) == keys


def test_two_patients_under_one_uid_in_one_folder_are_two_series(tmp_path, make_ct):
    uid = generate_uid()
    make_ct(tmp_path / "in/mixed", hu=hu(12, 1), series_uid=uid, patient_id="A", study_uid="1.2.3.1",
            file_names="A{index:04d}.dcm")
    make_ct(tmp_path / "in/mixed", hu=hu(14, 2), series_uid=uid, patient_id="B", study_uid="1.2.3.1",
            file_names="B{index:04d}.dcm")
    series = scan(tmp_path / "in").series
    assert sorted(len(s.files) for s in series) == [12, 14]
    assert sorted(bool(s.folder_suffix) for s in series) == [False, True]
    out = tmp_path / "out"
    assert run(tmp_path / "in", out) == 0
    table = rows(out)
    assert len(table) == 2 and {r["slices"] for r in table} == {"12", "14"}
    assert {r["status"] for r in table} == {"processed"}  # two patients: each its own study for selection
    assert all("another patient" in r["warnings"] for r in table)


def test_same_uid_with_another_geometry_is_another_series(tmp_path, make_ct):
    """One UID, one patient and study, two matrices (two fields of view): two series."""
    uid = generate_uid()
    make_ct(tmp_path / "in/s", hu=hu(12, 1, 32), series_uid=uid, study_uid="1.2.3.5", file_names="A{index:04d}.dcm")
    make_ct(tmp_path / "in/s", hu=hu(12, 2, 40), series_uid=uid, study_uid="1.2.3.5", file_names="B{index:04d}.dcm")
    out = tmp_path / "out"
    assert run(tmp_path / "in", out) == 0
    table = rows(out)
    assert len(table) == 2 and len({r["key"] for r in table}) == 2
    assert all("another geometry" in r["warnings"] for r in table), [r["warnings"] for r in table]
    # one study: the selection rules keep one reconstruction, and the reason names the other's folder
    skipped = [r for r in table if r["status"] == "skipped"]
    assert len(skipped) == 1 and "another reconstruction of this study is preferred" in skipped[0]["reason"]
    kept = next(r for r in table if r["status"] == "processed")
    assert kept["key"] in skipped[0]["reason"]


# --- failure 3: one series split over two folders far apart -------------------------------------------


def _split(tmp_path, make_ct, second_origin_z: float, second_spacing=(2.5, 0.8, 0.8)) -> tuple[Path, str]:
    """One series of 24 slices, its halves in a/ct and z/ct with another study between them."""
    uid, study = generate_uid(), "1.2.3.7"
    volume = hu(24, 3)
    make_ct(tmp_path / "in/a/ct", hu=volume[:12], series_uid=uid, study_uid=study, file_names="IM{index:04d}.dcm")
    make_ct(tmp_path / "in/m/other", hu=hu(12, 4), study_uid="1.2.3.8")
    make_ct(tmp_path / "in/z/ct", hu=volume[12:], series_uid=uid, study_uid=study, spacing=second_spacing,
            origin=(-12.0, -12.0, second_origin_z), file_names="IM{index:04d}_b.dcm")
    return tmp_path / "in", uid


def test_a_series_split_over_far_apart_folders_is_scored_whole(tmp_path, make_ct):
    """Was: the second half scored as if it were the whole series, with no warning in its row."""
    source, uid = _split(tmp_path, make_ct, second_origin_z=12 * 2.5)
    units = list(iter_units(source, stats=(stats := CatalogStats())))
    assert stats.split_series == 1
    whole = [u for u in units if u.supersedes]
    assert len(whole) == 1 and set(whole[0].folders) == {"a/ct", "z/ct"}
    out = tmp_path / "out"
    assert run(source, out) == 0
    table = {r["key"]: r for r in rows(out)}
    assert len(table) == 2 and table[uid]["status"] == "processed" and table[uid]["slices"] == "24"
    assert report(out, uid)["series"]["files"] == 24
    assert run(source, out) == 0 and rows(out) == list(table.values())  # a re-run keeps it


def test_a_split_series_whose_halves_do_not_fit_never_passes_as_whole(tmp_path, make_ct):
    """The halves do not fit together (another pixel spacing): two series, each with a warning
    that another series shares its UID; neither passes silently as the whole."""
    source, uid = _split(tmp_path, make_ct, second_origin_z=12 * 2.5, second_spacing=(2.5, 0.7, 0.7))
    out = tmp_path / "out"
    assert run(source, out) == 0
    mine = [r for r in rows(out) if r["series_uid"] == uid]
    assert len(mine) == 2 and all("also names another series" in r["warnings"] for r in mine)


def test_a_split_series_with_a_gap_between_its_halves_says_so(tmp_path, make_ct):
    """Same geometry, but slices are missing between the halves: one series, refused for the
    gap (never scored as if whole)."""
    source, uid = _split(tmp_path, make_ct, second_origin_z=20 * 2.5)
    out = tmp_path / "out"
    assert run(source, out) == 0
    row = next(r for r in rows(out) if r["series_uid"] == uid)
    assert row["status"] == "skipped" and "missing" in row["reason"], row


def test_copies_of_one_series_in_two_places_are_one_series_read_once(tmp_path, make_ct):
    import shutil

    make_ct(tmp_path / "in/a/ct", hu=hu(12, 5), study_uid="1.2.3.9")
    make_ct(tmp_path / "in/m/other", hu=hu(12, 6), study_uid="1.2.3.10")
    shutil.copytree(tmp_path / "in/a/ct", tmp_path / "in/z/copy")
    out = tmp_path / "out"
    assert run(tmp_path / "in", out) == 0
    table = rows(out)
    assert len(table) == 2
    row = next(r for r in table if r["study_uid"] == "1.2.3.9")
    assert row["status"] == "processed" and row["slices"] == "12"
    assert "12 file(s) are copies of slices found in other files" in row["warnings"]


# --- failure 4 and the second reconstruction: what is not the axial stack is set aside -----------------


def _axial_with(tmp_path, make_ct) -> tuple[Path, str]:
    uid = generate_uid()
    make_ct(tmp_path / "in/s", hu=hu(20, 7), series_uid=uid, study_uid="1.2.3.11")
    return tmp_path / "in/s", uid


@pytest.mark.parametrize("image_type", [("ORIGINAL", "PRIMARY", "LOCALIZER"), ("ORIGINAL", "PRIMARY", "AXIAL")])
def test_scouts_under_the_axial_series_uid_are_set_aside_and_the_stack_is_scored(tmp_path, make_ct, image_type):
    """Was: all good axial slices skipped as 'not axial: slice normal 90 deg' (the scout came first)."""
    folder, uid = _axial_with(tmp_path, make_ct)
    scouts = make_ct(folder, hu=hu(2, 8, 48), series_uid=uid, study_uid="1.2.3.11", file_names="AA_SCOUT{index}.dcm",
                     image_type=image_type)
    edit_all(scouts, ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    series = scan(folder).series
    assert len(series) == 1 and len(series[0].files) == 20
    assert select(series, SelectionRules()) == series
    out = tmp_path / "out"
    assert run(folder.parent, out) == 0
    (row,) = rows(out)
    assert row["status"] == "processed" and row["slices"] == "20"
    assert "AA_SCOUT1.dcm, AA_SCOUT2.dcm" in row["warnings"] and "set aside" in row["warnings"]
    assert {item["file"] for item in report(out, uid)["set_aside"]} == {"AA_SCOUT1.dcm", "AA_SCOUT2.dcm"}


def test_two_reconstructions_under_one_uid_score_the_preferred_one(tmp_path, make_ct):
    """2 mm and 5 mm slices under one UID read as one stack with missing slices; now: two
    reconstructions, the 2 mm one (eligible: increment <= 3 mm) scored, the 5 mm one set aside."""
    uid = generate_uid()
    thin = make_ct(tmp_path / "in/s", hu=hu(30, 9), spacing=(2.0, 0.8, 0.8), series_uid=uid, study_uid="1.2.3.12",
                   file_names="T{index:04d}.dcm")
    make_ct(tmp_path / "in/s", hu=hu(12, 10), spacing=(5.0, 0.8, 0.8), series_uid=uid, study_uid="1.2.3.12",
            file_names="K{index:04d}.dcm")
    out = tmp_path / "out"
    assert run(tmp_path / "in", out) == 0
    (row,) = rows(out)
    assert row["status"] == "processed" and row["slices"] == "30" and row["increment_mm"] == "2.0"
    assert "2 reconstructions under this SeriesInstanceUID: 2 mm, kernel B30f, 30 images scored" in row["warnings"]
    assert "set aside: 5 mm, kernel B30f, 12 images (K0001.dcm" in row["warnings"]
    assert "missing" not in row["reason"]
    assert {item["reason"] for item in report(out, uid)["set_aside"]} == {
        "another reconstruction under the same SeriesInstanceUID"}
    assert len(report(out, uid)["set_aside"]) == 12 and len(thin) == 30


def test_two_reconstructions_follow_the_preferred_increment(tmp_path, make_ct):
    uid = generate_uid()
    make_ct(tmp_path / "s", hu=hu(30, 9), spacing=(1.0, 0.8, 0.8), series_uid=uid, study_uid="1.2.3.6",
            file_names="A{index:04d}.dcm")
    make_ct(tmp_path / "s", hu=hu(10, 10), spacing=(3.0, 0.8, 0.8), series_uid=uid, study_uid="1.2.3.6",
            file_names="B{index:04d}.dcm")
    series = scan(tmp_path / "s").series
    (chosen,) = select(series, SelectionRules())
    assert len(chosen.files) == 10 and "3 mm" in chosen.notes[-1].split("scored")[0]
    again = scan(tmp_path / "s").series
    (chosen,) = select(again, SelectionRules(preferred_increment_mm=(0.5, 1.0)))
    assert len(chosen.files) == 30


def test_a_dose_report_under_the_series_uid_is_set_aside(tmp_path, make_ct):
    from tests.header_edits import edit

    folder, uid = _axial_with(tmp_path, make_ct)
    (dose,) = make_ct(folder, hu=hu(1, 11, 64), series_uid=uid, study_uid="1.2.3.11", file_names="ZZ_DOSE.dcm")
    edit(dose, SOPClassUID="1.2.840.10008.5.1.4.1.1.7", meta={"MediaStorageSOPClassUID": "1.2.840.10008.5.1.4.1.1.7"},
         Modality="OT", ImageOrientationPatient=None, ImagePositionPatient=None)
    out = tmp_path / "out"
    assert run(folder.parent, out) == 0
    (row,) = rows(out)
    assert row["status"] == "processed" and row["slices"] == "20"
    assert "not CT images (Secondary Capture) and were set aside: ZZ_DOSE.dcm" in row["warnings"]


def test_the_catalog_links_a_series_found_again_and_tells_shared_uids_apart(tmp_path):
    """link_series on units as the walk yields them: a series found a third time takes in the
    unit that took in the first two; another patient's series of the same UID is 'taken'."""
    from cac_mhub.cohort.catalog import Unit, _owner, link_series, unit_id

    def unit(folder: str, uid: str, patient: str, study: str = "1.2.3") -> Unit:
        return Unit(unit_id([folder]), (folder,), study=study, fingerprint=folder,
                    probes=((uid, _owner((study, uid, patient))),))

    for folder in ("a", "b", "c", "d", "e"):
        (tmp_path / folder).mkdir()
    stats = CatalogStats()
    found = list(link_series([unit("a", "9.1", "A"), unit("b", "9.2", "B", "1.2.4"), unit("c", "9.1", "A"),
                              unit("d", "9.1", "A"), unit("e", "9.1", "Z", "1.2.9")], tmp_path, stats))
    a, b, c, d, e = found
    assert not a.supersedes and not b.supersedes and not b.taken
    assert set(c.folders) == {"a", "c"} and c.supersedes == (a.id,)
    assert set(d.folders) == {"a", "c", "d"} and set(d.supersedes) == {a.id, c.id}
    assert e.taken == ("9.1",) and not e.supersedes and e.folders == ("e",)
    assert stats.superseded == {a.id, c.id} and stats.split_series == 2 and stats.shared_uids == 1
