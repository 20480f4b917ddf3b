"""``cac-mhub compare``: hand-made tables with known statistics, cohort tables, and ``--check``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cac_mhub.cli import main
from cac_mhub.dicom import seg as S
from cac_mhub.stats.check import seg_dice
from tests.test_seg import NAMES, make_case


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def kappa_table(tmp_path: Path) -> Path:
    """50 subjects in two groups (0 / 1-100): the 20, 5 / 10, 15 table, kappa 0.4, agreement 0.7."""
    pairs = [(0, 0)] * 20 + [(0, 50)] * 5 + [(50, 0)] * 10 + [(50, 50)] * 15
    rows = [{"PID": f"p{i:03d}", "manual": a, "ai": b} for i, (a, b) in enumerate(pairs)]
    rows.append({"PID": "p999", "manual": "", "ai": 7})  # no reference score: counted, not used
    return write_csv(tmp_path / "reads.csv", rows)


def test_one_table_with_both_columns_gives_the_known_statistics(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    code = main(["compare", str(kappa_table(tmp_path)), "--id", "PID", "--reference", "manual", "--test", "ai",
                 "--output", str(out), "--bootstrap", "40"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "agreement.json").read_text())
    for key in ("n", "spearman", "pearson_log", "icc_1_1", "icc_2_1", "icc_3_1", "kappa", "kappa_linear",
                "kappa_quadratic", "group_agreement", "confusion_matrix", "mean_difference", "limits_of_agreement",
                "mean_difference_log", "limits_of_agreement_log", "ci95"):
        assert key in result, key
    assert result["n"] == 50 and result["unmatched"]["missing_score"] == 1
    assert result["unmatched"]["missing_score_ids"] == ["p999"]
    assert result["kappa"] == pytest.approx(0.4) and result["kappa_quadratic"] == pytest.approx(0.4)
    assert result["group_agreement"] == pytest.approx(0.7)
    assert result["confusion_matrix"][:2] == [[20, 5, 0, 0], [10, 15, 0, 0]]
    assert result["mean_difference"] == pytest.approx((5 * 50 - 10 * 50) / 50)  # test - reference
    # phi coefficient of the 2 x 2 table equals Pearson's r of the two binary columns: 0.4082...
    phi = (20 * 15 - 5 * 10) / np.sqrt(25 * 25 * 30 * 20)
    assert result["pearson_log"] == pytest.approx(phi)
    low, high = result["ci95"]["kappa"]
    assert low < 0.4 < high
    html = (out / "agreement.html").read_text()
    assert "Cohen" in html and "0.4" in html and "bland_altman.png" in html
    for name in ("scatter.png", "bland_altman.png", "bland_altman_log.png", "risk_groups.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "kappa: 0.400" in capsys.readouterr().out


def test_two_cohort_tables_pair_by_key_with_arteries_and_unmatched(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)

    def cohort(folder: Path, scale: float, keys: list[str], skipped: str) -> Path:
        folder.mkdir()
        rows = []
        for i, key in enumerate(keys):
            lad, rca = float(rng.gamma(0.6, 100)) * scale, float(i % 7) * 10 * scale
            rows.append({"key": key, "status": "skipped" if key == skipped else "scored",
                         "agatston": "" if key == skipped else round(lad + rca, 3), "agatston_LAD": round(lad, 3),
                         "agatston_RCA": round(rca, 3), "risk_category": ""})
        return write_csv(folder / "cohort.csv", rows).parent

    keys = [f"1.2.3.{i}" for i in range(30)]
    a = cohort(tmp_path / "a", 1.0, keys, skipped="1.2.3.4")
    b = cohort(tmp_path / "b", 1.0, keys[2:] + ["9.9.9"], skipped="none")
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--output", str(out), "--bootstrap", "0", "--cuts", "0,10,100,400"]) == 0
    result = json.loads((out / "agreement.json").read_text())
    assert result["unmatched"]["only_reference_ids"] == ["1.2.3.0", "1.2.3.1"]
    assert result["unmatched"]["only_test_ids"] == ["9.9.9"]
    assert result["unmatched"]["missing_score_ids"] == ["1.2.3.4"]  # skipped series: no score
    assert result["n"] == 27 and result["groups"] == ["0", "(0, 10]", "(10, 100]", "(100, 400]", "> 400"]
    assert set(result["per_artery"]) == {"LAD", "RCA"}
    assert result["per_artery"]["RCA"]["columns"] == ["agatston_RCA", "agatston_RCA"]
    assert result["ci95"] == {}


@pytest.mark.parametrize("argv, message", [
    (["--reference", "manual"], "--test names its second score column"),
    (["--reference", "nope", "--test", "ai"], "no score column 'nope'"),
    (["--reference", "manual", "--test", "ai", "--id", "ID"], "no id column 'ID'"),
    (["--reference", "manual", "--test", "ai", "--cuts", "100,0"], "ascending"),
])
def test_bad_usage_is_exit_2_with_one_line(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    table = kappa_table(tmp_path)
    extra = [] if "--id" in argv else ["--id", "PID"]
    assert main(["compare", str(table), *extra, *argv, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_table_is_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["compare", str(tmp_path / "none.csv"), "--test", "x", "--output", str(tmp_path / "o")]) == 2
    assert "no such table" in capsys.readouterr().err


# --------------------------------------------------------------------------- --check


def _rescore_input(tmp_path: Path) -> tuple[Path, list, object, np.ndarray]:
    """CT files and a SEG of its calcium: the input of the rescore workflow."""
    files, headers, volume, labels = make_case(tmp_path / "case")
    folder = tmp_path / "in"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / f.name)
    write_seg(folder / "seg.dcm", headers, volume, labels)
    return folder, headers, volume, labels


def write_seg(path: Path, headers: list, volume: object, labels: np.ndarray) -> None:
    """The SEG of ``labels``; over an existing one, it keeps that one's UIDs (the same input series)."""
    seg = S.build_seg(S.headers_in_volume_order(headers, volume), labels, NAMES, S.AlgorithmInfo())
    if path.exists():
        import pydicom

        old = pydicom.dcmread(path)
        seg.SeriesInstanceUID, seg.SOPInstanceUID = old.SeriesInstanceUID, old.SOPInstanceUID
        seg.file_meta.MediaStorageSOPInstanceUID = old.SOPInstanceUID
    seg.save_as(path)


def _run(input_dir: Path, output_dir: Path) -> None:
    assert main(["run", "--input", str(input_dir), "--output", str(output_dir), "--workflow", "rescore", "--quiet"]) == 0


def test_check_of_two_runs_passes_and_a_changed_segmentation_fails(tmp_path: Path, capsys) -> None:
    reference_in, headers, volume, labels = _rescore_input(tmp_path)
    _run(reference_in, tmp_path / "out_ref")
    _run(reference_in, tmp_path / "out_again")
    assert main(["compare", str(tmp_path / "out_ref"), str(tmp_path / "out_again"), "--check",
                 "--output", str(tmp_path / "chk")]) == 0
    assert capsys.readouterr().out.startswith("PASS: 2 series compared")  # the CT and the input SEG (skipped)
    check = json.loads((tmp_path / "chk" / "check.json").read_text())
    scored = [r for r in check["results"] if r["status"] == ["scored", "scored"]]
    assert check["passed"] and check["min_dice"] == 1.0 and set(scored[0]["dice"]) == {"LAD", "RCA", "CAC"}

    # the same CT with the RCA lesion gone from its SEG: RCA Dice 0, the Agatston total 19.2 lower
    changed_in = tmp_path / "in_changed"
    shutil.copytree(reference_in, changed_in)
    without_rca = np.where(labels == 4, 0, labels)
    write_seg(changed_in / "seg.dcm", headers, volume, without_rca)
    _run(changed_in, tmp_path / "out_changed")
    assert main(["compare", str(tmp_path / "out_ref"), str(tmp_path / "out_changed"), "--check"]) == 1
    printed = capsys.readouterr().out
    assert printed.startswith("MISMATCH: 2 series compared, 1 differ, 0 only in the reference, 0 only in the test")
    assert "SEG segment RCA Dice 0.0000 < 0.99" in printed and "agatston " in printed and "agatston_RCA" in printed
    # scores within a loose tolerance still fail on the SEG; with min-dice 0 as well, it passes
    assert main(["compare", str(tmp_path / "out_ref"), str(tmp_path / "out_changed"), "--check", "--abs-tol", "100"]) == 1
    assert main(["compare", str(tmp_path / "out_ref"), str(tmp_path / "out_changed"), "--check",
                 "--abs-tol", "100", "--min-dice", "0"]) == 0
    assert main(["compare", str(tmp_path / "out_ref"), str(tmp_path / "chk"), "--check"]) == 2  # not an output folder


def test_seg_dice_by_hand(tmp_path: Path) -> None:
    """LAD 4x5 px on 2 slices against the same box shifted by 2 columns: overlap 4x3x2 = 24 of 40 + 40."""
    files, headers, volume, labels = make_case(tmp_path)
    shifted = np.zeros_like(labels)
    shifted[:, :, 2:] = labels[:, :, :-2]
    ordered = S.headers_in_volume_order(headers, volume)
    S.build_seg(ordered, labels, NAMES, S.AlgorithmInfo()).save_as(tmp_path / "a.dcm")
    S.build_seg(ordered, shifted, NAMES, S.AlgorithmInfo()).save_as(tmp_path / "b.dcm")
    dice = seg_dice(tmp_path / "a.dcm", tmp_path / "b.dcm")
    assert dice["LAD"] == pytest.approx(2 * 24 / 80)
    assert dice["RCA"] == pytest.approx(2 * 3 / 18)  # 3x3 box shifted by 2: 3x1 overlap
    assert seg_dice(tmp_path / "a.dcm", tmp_path / "a.dcm") == {"LAD": 1.0, "RCA": 1.0, "CAC": 1.0}
    assert seg_dice(tmp_path / "a.dcm", None) == {"LAD": 0.0, "RCA": 0.0, "CAC": 0.0}


def test_check_tolerances_and_series_in_one_folder_only(tmp_path: Path) -> None:
    """|difference| <= max(1, 1 % of the reference): 1000 vs 1009 passes, 1000 vs 1011 does not."""
    def folder(name: str, rows: list[dict]) -> Path:
        (tmp_path / name).mkdir()
        return write_csv(tmp_path / name / "cohort.csv", rows).parent

    ref = folder("ref", [{"key": "k1", "status": "scored", "agatston": 1000}, {"key": "k2", "status": "scored", "agatston": 0.5}])
    near = folder("near", [{"key": "k1", "status": "scored", "agatston": 1009}, {"key": "k2", "status": "scored", "agatston": 1.4}])
    far = folder("far", [{"key": "k1", "status": "scored", "agatston": 1011}, {"key": "k2", "status": "scored", "agatston": 1.6}])
    fewer = folder("fewer", [{"key": "k1", "status": "scored", "agatston": 1000}])
    failed = folder("failed", [{"key": "k1", "status": "failed", "agatston": ""}, {"key": "k2", "status": "scored", "agatston": 0.5}])
    assert main(["compare", str(ref), str(near), "--check"]) == 0
    assert main(["compare", str(ref), str(far), "--check"]) == 1
    assert main(["compare", str(ref), str(far), "--check", "--rel-tol", "0.02", "--abs-tol", "1.2"]) == 0
    assert main(["compare", str(ref), str(fewer), "--check"]) == 1
    assert main(["compare", str(ref), str(failed), "--check"]) == 1
