"""End to end through `cac-mhub run`: every bad input gets a one-line reason and the run goes on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cac_mhub.cli import main
from tests.conftest import ball_volume

IMPORT = ["--workflow", "import", "--quiet"]


def run(input_dir: Path, output_dir: Path, *extra: str) -> int:
    return main(["run", "--input", str(input_dir), "--output", str(output_dir), *IMPORT, *extra])


def cohort(output_dir: Path) -> list[dict]:
    with open(output_dir / "cohort.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def no_partial_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


@pytest.fixture
def mixed_input(tmp_path, make_ct) -> Path:
    """Good and bad series side by side in one input folder."""
    root = tmp_path / "in"
    make_ct(root / "good", hu=ball_volume((12, 32, 32)))
    make_ct(root / "contrast", hu=ball_volume((12, 32, 32)), contrast_agent="Iohexol", study_uid="1.2.3.4")
    make_ct(root / "localizer", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), study_uid="1.2.3.5")
    make_ct(root / "one_slice", hu=ball_volume((1, 32, 32)), study_uid="1.2.3.6")
    z = [2.5 * k for k in range(12) if k != 6]
    make_ct(root / "missing", hu=ball_volume((11, 32, 32)), z_positions=z, study_uid="1.2.3.7")
    make_ct(root / "uneven", hu=ball_volume((12, 32, 32)), z_positions=[0, 1, 2, 4.5, 7, 9.5, 12, 14.5, 17, 19.5, 22, 24.5],
            study_uid="1.2.3.8")
    make_ct(root / "duplicates", hu=ball_volume((12, 32, 32)), z_positions=[2.5 * (k // 2) for k in range(12)],
            study_uid="1.2.3.9")
    make_ct(root / "tilt", hu=ball_volume((12, 32, 32)), gantry_tilt_deg=15.0, study_uid="1.2.3.10")
    make_ct(root / "mr", modality="MR", study_uid="1.2.3.11")
    make_ct(root / "no_uids", hu=ball_volume((12, 32, 32)), empty_uids=True)
    make_ct(root / "traversal", hu=ball_volume((12, 32, 32)), series_uid="../../escape", study_uid="1.2.3.12")
    corrupt = make_ct(root / "truncated", hu=ball_volume((12, 32, 32)), study_uid="1.2.3.13")
    corrupt[4].write_bytes(corrupt[4].read_bytes()[:-700])
    (root / "README.txt").write_text("junk")
    (root / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM\x02\x00")
    return root


def test_mixed_folder_reports_every_series_with_status_and_reason(mixed_input, tmp_path):
    out = tmp_path / "out"
    assert run(mixed_input, out) == 0
    rows = cohort(out)
    statuses = sorted((r["status"], r["reason"][:60]) for r in rows)
    by_reason = " || ".join(r["reason"] for r in rows)
    assert len(rows) == 12
    for expected in ("localizer/scout images only", "too few slices: 1 < 10", "missing slices: 1 slice",
                     "uneven slice spacing", "duplicate slice positions", "modality MR, not CT",
                     "IM0005.dcm"):
        assert expected in by_reason, (expected, statuses)
    truncated = [r for r in rows if "IM0005.dcm" in r["reason"]][0]
    assert truncated["status"] == "failed"
    processed = [r for r in rows if r["status"] == "processed"]
    assert len(processed) == 5  # good, contrast (flagged), tilt (resampled), no UIDs, traversal UID
    contrast = [r for r in processed if r["contrast"] == "True"]
    assert len(contrast) == 1 and "contrast-enhanced" in contrast[0]["warnings"]
    assert any("gantry tilt 15.00 deg" in r["warnings"] for r in processed)
    # one report per series, inside the output folder, with status and geometry
    reports = sorted(out.glob("*/report.json"))
    assert len(reports) == 12
    for path in reports:
        report = json.loads(path.read_text())
        assert report["status"] in {"processed", "skipped", "failed"}
        assert report["config"]["hash"] and report["software"]["version"]
        if report["status"] == "processed":
            assert report["geometry"]["spacing_zyx_mm"][0] == pytest.approx(2.5)
        else:
            assert report["reason"] and "\n" not in report["reason"]
    # sanitised names: nothing escaped the output folder
    assert not (tmp_path / "escape").exists() and not (out.parent.parent / "escape").exists()
    assert any(p.name == "escape" or p.name.endswith("_escape") for p in out.iterdir())
    log = (out / "cac-mhub.log").read_text()
    assert "duplicate slice positions" in log and "PHANTOM-0001" not in log  # no patient data in the log
    assert json.loads((out / "cohort.json").read_text())["counts"] == {"scored": 0, "processed": 5, "skipped": 6, "failed": 1}
    assert no_partial_files(out)


def test_empty_input_folder(tmp_path):
    (tmp_path / "in").mkdir()
    assert run(tmp_path / "in", tmp_path / "out") == 0
    assert cohort(tmp_path / "out") == []
    assert "no DICOM series found" in (tmp_path / "out/cac-mhub.log").read_text()


def test_only_non_dicom_files(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.txt").write_text("x")
    (tmp_path / "in/b.dcm").write_bytes(np.arange(1000, dtype=np.uint8).tobytes())
    assert run(tmp_path / "in", tmp_path / "out") == 0
    ignored = json.loads((tmp_path / "out/cohort.json").read_text())["ignored_files"]
    assert sorted(i["path"] for i in ignored) == ["a.txt", "b.dcm"]


def test_unwritable_output_is_a_one_line_error(tmp_path, make_ct, capsys):
    make_ct(tmp_path / "in/s")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert run(tmp_path / "in", blocker / "out") == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("cac-mhub: output folder not writable") and "\n" not in error


def test_missing_input_and_bad_config_fail_before_work(tmp_path, capsys):
    assert run(tmp_path / "nope", tmp_path / "out") == 2
    assert "input folder not found" in capsys.readouterr().err
    (tmp_path / "in").mkdir()
    assert main(["run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out2"), "--workflow", "import",
                 "--set", "modules.DicomImporter.min_slices=many"]) == 2
    assert "DicomImporter.min_slices: expected int" in capsys.readouterr().err
    assert not (tmp_path / "out2" / "cohort.csv").exists()


def test_output_inside_input_is_not_rescanned(tmp_path, make_ct):
    make_ct(tmp_path / "in/s", hu=ball_volume((12, 32, 32)))
    out = tmp_path / "in/results"
    assert run(tmp_path / "in", out, "--set", "modules.NiftiConverter.write_nifti=true") == 0
    assert run(tmp_path / "in", out) == 0
    rows = cohort(out)
    assert len(rows) == 1 and rows[0]["status"] == "processed"


def test_nifti_output_and_pseudonymised_patient_id(tmp_path, make_ct):
    import SimpleITK as sitk

    make_ct(tmp_path / "in/s", hu=ball_volume((12, 32, 32)), patient_id="SECRET-42")
    out = tmp_path / "out"
    assert run(tmp_path / "in", out, "--set", "modules.NiftiConverter.write_nifti=true",
               "--set", "modules.ReportExporter.patient_id=pseudonymise", "--set", "modules.ReportExporter.salt=s") == 0
    row = cohort(out)[0]
    assert row["patient_id"] and row["patient_id"] != "SECRET-42"
    assert "SECRET-42" not in (out / "cohort.json").read_text()
    image = sitk.ReadImage(str(next(out.glob("*/ct.nii.gz"))))
    assert image.GetSize() == (32, 32, 12) and image.GetSpacing() == pytest.approx((0.8, 0.8, 2.5))


def test_what_module_setup_logs_reaches_the_log_file(tmp_path, make_ct, monkeypatch, capsys):
    """Modules are set up (model loaded, device chosen) before the log file exists; their lines
    ("no GPU found, running on CPU") must still reach cac-mhub.log, and a setup that fails must
    still show its warnings."""
    import logging

    import cac_mhub.cli as cli
    from cac_mhub.chain import ChainError

    real_setup = cli.setup_modules

    def logging_setup(execute, ctx):  # type: ignore[no-untyped-def]
        logging.getLogger("cac_mhub.segmentation").info("no GPU found, running on CPU")
        return real_setup(execute, ctx)

    monkeypatch.setattr(cli, "setup_modules", logging_setup)
    make_ct(tmp_path / "in/s", hu=ball_volume((12, 32, 32)))
    assert run(tmp_path / "in", tmp_path / "out") == 0
    log = (tmp_path / "out/cac-mhub.log").read_text()
    assert "no GPU found, running on CPU" in log and log.count("no GPU found") == 1

    def failing_setup(execute, ctx):  # type: ignore[no-untyped-def]
        logging.getLogger("cac_mhub.segmentation").warning("weights file is old")
        raise ChainError("NnunetCacRunner: model not found")

    monkeypatch.setattr(cli, "setup_modules", failing_setup)
    capsys.readouterr()
    assert run(tmp_path / "in", tmp_path / "out2") == 2
    err = capsys.readouterr().err
    assert "weights file is old" in err and "model not found" in err
    assert not [h for h in logging.getLogger("cac_mhub").handlers if isinstance(h, cli._SetupLog)]


def test_validate_command(capsys):
    assert main(["validate", "--workflow", "import"]) == 0
    assert "DicomImporter -> NiftiConverter -> ReportExporter" in capsys.readouterr().out


def test_real_thorax_end_to_end(shared_ct, tmp_path):
    source = shared_ct / "itkelastix_thorax_00"
    assert run(source, tmp_path / "out") == 0
    rows = cohort(tmp_path / "out")
    assert len(rows) == 1 and rows[0]["status"] == "processed"
    assert rows[0]["kvp"] == "120.0" and rows[0]["increment_mm"] == "2.0" and rows[0]["contrast"] == "False"


def test_real_edge_cases_folder(shared_ct, tmp_path):
    assert run(shared_ct, tmp_path / "out") == 0
    rows = cohort(tmp_path / "out")
    assert len(rows) >= 15
    assert all(r["reason"] or r["status"] == "processed" for r in rows)
    uidless = [r for r in rows if r["series_description"] == "CT Body 3.0"]
    assert uidless and uidless[0]["contrast"] == "True"


def test_outputs_are_readable_by_others_as_the_umask_allows(tmp_path, make_ct):
    import os
    import stat

    make_ct(tmp_path / "in/s", hu=ball_volume((12, 32, 32)))
    old = os.umask(0o022)
    try:
        assert run(tmp_path / "in", tmp_path / "out") == 0
    finally:
        os.umask(old)
    for path in [tmp_path / "out/cohort.csv", next((tmp_path / "out").glob("*/report.json"))]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
