"""`cac-mhub run` owns its output: one cohort row per series whatever failed, exit codes that
tell a finished run from a stopped one, re-runs that replace (never mix), no temporaries left."""

from __future__ import annotations

import csv
import errno
import fcntl
import json
import logging
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from cac_mhub.cli import main
from cac_mhub.modules.report_exporter import ReportExporter
from tests.conftest import ball_volume, cli_running_until

IMPORT = ["--workflow", "import", "--quiet"]
NIFTI = ["--set", "modules.NiftiConverter.write_nifti=true"]


def run(input_dir: Path, output_dir: Path, *extra: str) -> int:
    return main(["run", "--input", str(input_dir), "--output", str(output_dir), *IMPORT, *extra])


def rows(output_dir: Path) -> list[dict]:
    with open(output_dir / "cohort.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def cohort(output_dir: Path) -> dict:
    return json.loads((output_dir / "cohort.json").read_text(encoding="utf-8"))


def reports(output_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text(encoding="utf-8"))
            for p in output_dir.glob("*/report.json") if not p.parent.name.startswith(".")}


def hidden_leftovers(output_dir: Path) -> list[Path]:
    """Temporaries and work folders; the per-series ``.cac-mhub`` marker is an output."""
    return [p for p in output_dir.rglob(".*") if p.name != ".cac-mhub"]


@pytest.fixture
def three(tmp_path, make_ct) -> Path:
    """Three series in three studies: all selected, all processed by the import workflow."""
    root = tmp_path / "in"
    for i in range(3):
        make_ct(root / f"s{i}", hu=ball_volume((12, 32, 32)), study_uid=f"1.2.3.{i}")
    return root


def done_line(output_dir: Path) -> str:
    return [line for line in (output_dir / "cac-mhub.log").read_text().splitlines() if " done in " in line][-1]


# --------------------------------------------------------------- every series has its row


def test_report_that_cannot_be_built_still_gives_a_row_and_a_minimal_report(three, tmp_path, monkeypatch):
    out = tmp_path / "out"
    build, victims = ReportExporter.build, []

    def broken(self, instance, ctx):
        if not victims:
            victims.append(instance.key)
            raise ValueError("cannot build\nsecond line")
        return build(self, instance, ctx)

    monkeypatch.setattr(ReportExporter, "build", broken)
    assert run(three, out) == 0
    by_key = {r["key"]: r for r in rows(out)}
    assert len(by_key) == 3
    bad = by_key[victims[0]]
    assert bad["status"] == "failed" and bad["reason"] == "ReportExporter: report could not be built: ValueError: cannot build"
    minimal = reports(out)[victims[0]]
    assert minimal["status"] == "failed" and minimal["series"]["series_uid"] and minimal["run"]["id"]
    assert cohort(out)["counts"] == {"scored": 0, "processed": 2, "skipped": 0, "failed": 1}
    assert done_line(out).endswith("3 series, 1 failed")


def test_report_that_cannot_be_written_fails_its_row_and_leaves_no_earlier_report(three, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run(three, out) == 0
    victim = sorted(reports(out))[0]
    import cac_mhub.modules.report_exporter as module

    write = module.atomic_write_text

    def refusing(target, text):
        if Path(target).parent.name == victim:
            raise PermissionError(errno.EACCES, "Permission denied", str(target))
        write(target, text)

    monkeypatch.setattr(module, "atomic_write_text", refusing)
    assert run(three, out, "--set", "general.name=again") == 0  # another config: every series is redone
    by_key = {r["key"]: r for r in rows(out)}
    assert len(by_key) == 3
    assert by_key[victim]["status"] == "failed"
    assert by_key[victim]["reason"].startswith("ReportExporter: report not written: PermissionError")
    assert not (out / victim / "report.json").exists(), "the earlier run's report must not pass for this run's"
    assert cohort(out)["counts"]["failed"] == 1 and done_line(out).endswith("3 series, 1 failed")


def test_series_folder_that_cannot_be_replaced_fails_and_says_so(three, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run(three, out) == 0
    victim = sorted(reports(out))[0]
    rename = os.rename

    def refusing(src, dst, *args, **kwargs):
        if Path(src) == out / victim:
            raise PermissionError(errno.EACCES, "Permission denied", str(src))
        return rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", refusing)
    assert run(three, out, "--set", "general.name=again") == 0
    row = {r["key"]: r for r in rows(out)}[victim]
    assert row["status"] == "failed" and row["reason"].startswith("outputs not moved into place")
    assert reports(out)[victim]["run"]["id"] != cohort(out)["run"]["id"], "the old report is recognisably old"
    assert done_line(out).endswith("3 series, 1 failed")


# --------------------------------------------------------------- faults that stop the run


def _no_space(target_name: str, after: int = 0):
    """An os.replace that fails with ENOSPC for ``target_name`` once ``after`` of them succeeded."""
    replace, seen = os.replace, []

    def full(src, dst, *args, **kwargs):
        if Path(dst).name == target_name:
            seen.append(dst)
            if len(seen) > after:
                raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return replace(src, dst, *args, **kwargs)

    return full


def test_disk_full_mid_run_stops_with_exit_3_and_one_line(three, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.setattr(os, "replace", _no_space("report.json", after=1))
    assert run(three, out) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "run could not finish" in line]
    assert len(lines) == 1 and "No space left on device" in lines[0]
    assert "run could not finish: RunError" in (out / "cac-mhub.log").read_text()
    state = cohort(out)
    assert state["run"]["state"] == "aborted" and "No space left" in state["run"]["stopped"]
    assert state["counts"] == {"scored": 0, "processed": 1, "skipped": 0, "failed": 0}
    assert [r["status"] for r in rows(out)] == ["processed"]  # what finished, nothing else
    done = rows(out)[0]["key"]
    monkeypatch.undo()
    assert run(three, out) == 0  # space again: the rest is done, the finished series kept
    assert cohort(out)["counts"]["processed"] == 3 and reports(out)[done]["run"]["id"] == state["run"]["id"]


def test_disk_full_from_the_start_is_exit_3_without_traceback(three, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "replace", _no_space("cohort.json"))
    assert run(three, tmp_path / "out") == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and "run could not finish" in err and "No space left on device" in err


def test_log_file_that_cannot_be_written_loses_lines_silently(tmp_path, capsys):
    from cac_mhub.cli import setup_logging

    handlers = setup_logging(tmp_path, "info", quiet=True)
    try:
        logfile = handlers[1]

        class Full:
            def write(self, text):
                raise OSError(errno.ENOSPC, "No space left on device")

            def flush(self):
                pass

        logfile.stream = Full()
        logging.getLogger("cac_mhub").info("a line the disk has no room for")
    finally:
        for handler in handlers:
            logging.getLogger("cac_mhub").removeHandler(handler)
    assert capsys.readouterr().err == ""


def test_folder_named_like_the_cohort_file_is_exit_3(three, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "cohort.csv").mkdir(parents=True)
    assert run(three, out) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and "run could not finish" in err and "cohort.csv" in err


def test_folder_named_like_the_log_file_is_exit_2(three, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "cac-mhub.log").mkdir(parents=True)
    assert run(three, out) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("cac-mhub: output folder not usable") and "cac-mhub.log" in err


def test_a_second_run_into_a_busy_output_folder_is_refused(three, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run(three, out) == 2
    finally:
        os.close(fd)
    assert "another cac-mhub run is using the output folder" in capsys.readouterr().err
    assert not (out / "cohort.csv").exists()


# --------------------------------------------------------------- a run owns its output


def test_rerun_replaces_each_series_folder_as_a_whole(three, tmp_path):
    out = tmp_path / "out"
    assert run(three, out, *NIFTI) == 0
    key = sorted(reports(out))[0]
    for stale in ("cac.seg.dcm", "cac.sr.dcm", "qc.png"):  # as a default-workflow run leaves them
        (out / key / stale).write_bytes(b"from an earlier run")
    assert len(list(out.glob("*/ct.nii.gz"))) == 3
    assert run(three, out) == 0
    assert list(out.glob("*/ct.nii.gz")) == []
    for folder in (out / k for k in reports(out)):
        assert sorted(p.name for p in folder.iterdir()) == [".cac-mhub", "report.json"]
    assert hidden_leftovers(out) == []


def test_series_no_longer_in_the_input_are_removed_but_foreign_folders_stay(three, tmp_path):
    import shutil

    out = tmp_path / "out"
    assert run(three, out) == 0
    before = set(reports(out))
    (out / "notes").mkdir()
    (out / "notes" / "mine.txt").write_text("not cac-mhub's")
    shutil.rmtree(three / "s1")
    assert run(three, out) == 0
    after = set(reports(out))
    assert len(after) == 2 and after < before
    gone = sorted(before - after)
    assert not (out / gone[0]).exists()
    assert cohort(out)["removed_series"] == gone
    assert (out / "notes" / "mine.txt").read_text() == "not cac-mhub's"


def test_leftover_temporaries_are_removed_when_a_run_starts(three, tmp_path):
    out = tmp_path / "out"
    assert run(three, out, *NIFTI) == 0
    key = sorted(reports(out))[0]
    (out / ".tmp-k2j3-cohort.csv").write_text("half")  # the old naming: a file ending in the target name
    (out / key / ".tmp-a1b2-ct.nii.gz").write_bytes(b"half")
    (out / key / ".tmp-zz").mkdir()
    (out / key / ".tmp-zz" / "report.json").write_text("{")
    (out / ".cac-mhub-work" / key).mkdir(parents=True)
    (out / ".cac-mhub-old-1234").mkdir()
    assert len(list(out.glob("*/*.nii.gz"))) == 4
    assert run(three, out, *NIFTI) == 0
    assert hidden_leftovers(out) == []
    assert len(list(out.glob("*/*.nii.gz"))) == 3


def test_temporary_files_keep_the_name_but_never_match_output_globs(tmp_path):
    from cac_mhub.io import atomic_path

    target = tmp_path / "series" / "ct.nii.gz"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"volume")
        assert tmp.name == "ct.nii.gz"  # SimpleITK picks the format from the suffix
        assert list(tmp_path.glob("*/*.nii.gz")) == [] and list(tmp_path.glob("*/*ct.nii.gz")) == []
    assert list(tmp_path.glob("*/*.nii.gz")) == [target]
    assert [p.name for p in target.parent.iterdir()] == ["ct.nii.gz"]
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"volume" and [p.name for p in target.parent.iterdir()] == ["ct.nii.gz"]


def test_reports_and_cohort_files_carry_the_run_id(three, tmp_path):
    out = tmp_path / "out"
    assert run(three, out) == 0
    first = cohort(out)["run"]
    assert first["state"] == "complete" and first["id"] and first["finished"] >= first["started"]
    assert {r["run"]["id"] for r in reports(out).values()} == {first["id"]}
    assert {r["run_id"] for r in rows(out)} == {first["id"]}
    assert run(three, out) == 0  # the same command again: nothing to do, every series kept
    second = cohort(out)["run"]
    assert second["id"] != first["id"] and second["state"] == "complete"
    assert {r["run"]["id"] for r in reports(out).values()} == {first["id"]}
    assert {r["run_id"] for r in rows(out)} == {first["id"]}
    assert run(three, out, "--set", "general.name=other") == 0  # another config: every series redone
    third = cohort(out)["run"]["id"]
    assert {r["run"]["id"] for r in reports(out).values()} == {third} == {r["run_id"] for r in rows(out)}


def test_cohort_files_say_running_while_the_run_goes(three, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run(three, out, "--set", "general.name=first") == 0
    seen = []
    original = ReportExporter.run

    def peek(self, instance, ctx):
        if not seen:
            seen.append((cohort(out), rows(out)))
        original(self, instance, ctx)

    monkeypatch.setattr(ReportExporter, "run", peek)
    assert run(three, out, "--set", "general.name=second") == 0
    during, during_rows = seen[0]
    assert during["run"]["state"] == "running" and during["config"]["name"] == "second"
    # while it goes, the rows are what is recorded: the first run's, each saying so
    first = {r["run_id"] for r in during_rows}
    assert len(during_rows) == 3 and len(first) == 1 and first != {during["run"]["id"]}
    after = cohort(out)
    assert after["run"]["id"] == during["run"]["id"] and after["run"]["state"] == "complete"
    assert {r["run_id"] for r in rows(out)} == {during["run"]["id"]}


# --------------------------------------------------------------- kill -9 and a re-run


def _marker_ids(out: Path) -> set[str]:
    ids = set()
    for path in out.glob("[!.]*/.cac-mhub"):
        try:
            ids.add(json.loads(path.read_text())["run_id"])
        except (OSError, ValueError):  # replaced while we read it
            pass
    return ids


def test_kill_9_mid_run_then_rerun_resumes_and_every_series_is_done_once(tmp_path, make_ct):
    source = tmp_path / "in"
    for i in range(8):
        hu = np.random.default_rng(i).integers(-1000, 1000, (40, 256, 256)).astype(np.int16)
        make_ct(source / f"s{i}", hu=hu, study_uid=f"1.2.3.{i}")
    out = tmp_path / "out"
    assert run(source, out, *NIFTI, "--set", "general.name=first") == 0
    first = cohort(out)["run"]["id"]

    args = ["run", "--input", str(source), "--output", str(out), *IMPORT, "--set", "general.name=second"]
    # killed once some series are the second run's while others are still the first's
    with cli_running_until(args, lambda: len(_marker_ids(out)) == 2) as process:
        os.kill(process.pid, signal.SIGKILL)

    # the interrupted run shows as such, and every row and report says which run wrote it
    state = cohort(out)
    second = state["run"]["id"]
    assert state["run"]["state"] == "running" and second not in (first, "")
    assert {r["run_id"] for r in rows(out)} <= {first, second} and len(rows(out)) == 8
    by_run = {}
    for report in reports(out).values():
        by_run.setdefault(report["run"]["id"], set()).add(report["config"]["name"])
    assert by_run.keys() <= {first, second} and by_run.get(second) == {"second"}
    for folder in (p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        ids = json.loads((folder / ".cac-mhub").read_text())["run_id"]
        # a series folder is one run's, whole: the nifti only where the first run wrote it
        assert (folder / "ct.nii.gz").exists() == (ids == first)
    recorded_by_second = {r["key"] for r in rows(out) if r["run_id"] == second}

    assert run(source, out, "--set", "general.name=second") == 0
    state = cohort(out)
    third = state["run"]["id"]
    assert state["run"]["state"] == "complete" and state["counts"]["processed"] == 8
    # resumed: what the killed run recorded is kept, the rest is done now, each series once
    final = {key: r["run"]["id"] for key, r in reports(out).items()}
    assert len(final) == 8 and set(final.values()) <= {second, third}
    assert {k for k, v in final.items() if v == second} >= recorded_by_second
    assert {r["config"]["name"] for r in reports(out).values()} == {"second"}
    assert {r["key"]: r["run_id"] for r in rows(out)} == final
    assert state["catalog"]["units_done_now"] + state["catalog"]["units_kept"] == 8
    assert list(out.glob("*/ct.nii.gz")) == [] and hidden_leftovers(out) == []


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_a_series_named_like_an_output_file_never_replaces_it(tmp_path, make_ct):
    source = tmp_path / "in"
    make_ct(source / "a", hu=ball_volume((12, 32, 32)), series_uid="cac-mhub.log", study_uid="1.2.3.1")
    make_ct(source / "b", hu=ball_volume((12, 32, 32)), series_uid="cohort.json", study_uid="1.2.3.2")
    out = tmp_path / "out"
    assert run(source, out) == 0
    by_key = {r["key"]: r for r in rows(out)}
    assert {k: r["status"] for k, r in by_key.items()} == {"cac-mhub.log": "failed", "cohort.json": "failed"}
    assert "not a series folder; not replaced" in by_key["cohort.json"]["reason"]
    assert (out / "cac-mhub.log").is_file() and "done in" in (out / "cac-mhub.log").read_text()
    assert cohort(out)["run"]["state"] == "complete"


def test_qc_picture_that_cannot_be_made_costs_a_warning_not_the_report(tmp_path, monkeypatch):
    from cac_mhub.chain import Context, Instance
    from cac_mhub.types import Labels, Volume

    class Scores:
        def to_dict(self):
            return {"total": {"agatston": 0.0}}

    def broken(self, instance, ctx):
        raise RuntimeError("no picture")

    monkeypatch.setattr(ReportExporter, "write_qc", broken)
    instance = Instance(key="s", volume=Volume(hu=np.zeros((2, 4, 4)), spacing_zyx=(1, 1, 1), origin_lps=(0, 0, 0)),
                        labels=Labels(array=np.zeros((2, 4, 4), np.uint8), names={}), scores=Scores())
    ReportExporter(**{k: o.default for k, o in ReportExporter.options.items()}).run(
        instance, Context(tmp_path, tmp_path / "out", {}, run_id="r1"))
    report = json.loads((tmp_path / "out" / "s" / "report.json").read_text())
    assert report["status"] == "scored" and report["run"]["id"] == "r1"
    assert report["warnings"] == ["qc.png not written: RuntimeError: no picture"]
