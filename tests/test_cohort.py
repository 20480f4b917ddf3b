"""Cohort scale: the streaming catalog, the state database, resume, shards, Dask workers."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cac_mhub.cli import main
from cac_mhub.cohort.catalog import CatalogStats, in_shard, iter_units, manifest_units, parse_shard, unit_paths
from cac_mhub.cohort.state import StateDB, state_file
from tests.conftest import CLI, cli_running_until

IMPORT = ["--workflow", "import", "--quiet"]
NIFTI = ["--set", "modules.NiftiConverter.write_nifti=true"]


def header_only(path: Path, study: str, series: str, number: int) -> None:
    """A small CT header without pixels: what the catalog reads."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, "CT"
    ds.InstanceNumber = number
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def tree(root: Path, studies: int, series_per_study: int, files_per_series: int) -> dict[str, set[str]]:
    """collection/patient/study/series folders, as the Imaging Data Commons lays them out."""
    layout: dict[str, set[str]] = {}
    for s in range(studies):
        study = f"1.2.826.0.1.{s + 1}"
        for k in range(series_per_study):
            series = f"{study}.{k + 1}"
            folder = root / "nlst" / f"p{s:04d}" / study / series
            for n in range(files_per_series):
                header_only(folder / f"{n:04d}.dcm", study, series, n)
            layout.setdefault(study, set()).add(os.path.relpath(folder, root))
    return layout


def run(input_dir: Path, output_dir: Path, *extra: str) -> int:
    return main(["run", "--input", str(input_dir), "--output", str(output_dir), *IMPORT, *extra])


def rows(output_dir: Path, name: str = "cohort") -> list[dict]:
    with open(output_dir / f"{name}.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def cohort(output_dir: Path) -> dict:
    return json.loads((output_dir / "cohort.json").read_text(encoding="utf-8"))


def reports(output_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in output_dir.glob("[!.]*/report.json")}


@pytest.fixture
def cts(tmp_path, make_ct):
    """Six small CT studies, one series each, in study/series folders."""

    def make(count: int = 6, shape=(12, 32, 32)) -> Path:
        root = tmp_path / "in"
        for i in range(count):
            hu = np.random.default_rng(i).integers(-1000, 1000, shape).astype(np.int16)
            make_ct(root / f"study{i}" / "ct", hu=hu, study_uid=f"1.2.3.{i}")
        return root

    return make


# --- catalog -------------------------------------------------------------------------------------


def test_catalog_groups_study_folders_and_reads_two_headers_per_folder(tmp_path):
    layout = tree(tmp_path, studies=5, series_per_study=3, files_per_series=6)
    stats = CatalogStats()
    units = list(iter_units(tmp_path, stats=stats))
    assert [set(u.folders) for u in units] == [layout[s] for s in sorted(layout)]
    assert stats.folders == 15 and stats.files == 90 and stats.done
    assert stats.headers_read == 2 * 15, "one-series folders need the first and the last header only"
    assert len({u.id for u in units}) == 5
    # the same tree gives the same ids; a changed file changes only its unit's fingerprint
    again = list(iter_units(tmp_path))
    assert [(u.id, u.fingerprint) for u in again] == [(u.id, u.fingerprint) for u in units]
    victim = tmp_path / sorted(units[2].folders)[0] / "0000.dcm"
    os.utime(victim, ns=(1, 1))
    changed = list(iter_units(tmp_path))
    assert [u.fingerprint != v.fingerprint for u, v in zip(units, changed)] == [False, False, True, False, False]


def test_mixed_folder_is_read_whole_and_split_by_study(tmp_path):
    flat = tmp_path / "flat"
    for s in range(3):
        for n in range(4):
            header_only(flat / f"{s}-{n}.dcm", f"1.2.9.{s}", f"1.2.9.{s}.1", n)
    stats = CatalogStats()
    units = list(iter_units(tmp_path, stats=stats))
    assert stats.mixed_folders == 1 and stats.headers_read == 2 + 12
    assert sorted(len(u.files) for u in units) == [4, 4, 4]
    assert sorted({p.name.split("-")[0] for p in unit_paths(u, tmp_path)}.pop() for u in units) == ["0", "1", "2"]


#: Run in a fresh interpreter: in a long test session pathlib's sys.intern can grow the
#: interpreter's interned-string table (megabytes at a time, at a moment set by everything that
#: ran before) inside the measurement; a fresh process measures the catalog alone.
CATALOG_MEMORY = """
import json, sys, tracemalloc
from cac_mhub.cohort.catalog import CatalogStats, iter_units
stats = CatalogStats()
tracemalloc.start()
count = sum(1 for _ in iter_units(sys.argv[1], stats=stats))
_, peak = tracemalloc.get_traced_memory()
print(json.dumps({"count": count, "files": stats.files, "headers": stats.headers_read, "peak": peak}))
"""


def test_thousands_of_files_are_catalogued_in_bounded_memory(tmp_path):
    tree(tmp_path, studies=150, series_per_study=2, files_per_series=10)  # 3,000 files
    done = subprocess.run([sys.executable, "-c", CATALOG_MEMORY, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert (measured["count"], measured["files"], measured["headers"]) == (150, 3000, 600)
    # a pydicom header is ~10 KB in memory: holding every one read would need ~6 MB, every file's ~30 MB
    assert measured["peak"] < 4 * 2**20, f"catalog peak {measured['peak'] / 2**20:.1f} MiB"


def test_manifest_names_series_folders_and_says_which_are_missing(tmp_path):
    layout = tree(tmp_path / "in", studies=3, series_per_study=1, files_per_series=3)
    folders = sorted(f for s in layout.values() for f in s)
    (tmp_path / "list.txt").write_text("# cohort A\n" + "\n".join(folders[:2]) + "\nnot/there\n")
    units = list(manifest_units(tmp_path / "list.txt", tmp_path / "in"))
    assert [u.folders for u in units] == [(folders[0],), (folders[1],), ("not/there",)]
    assert units[2].problem.startswith("manifest names no folder")
    (tmp_path / "list.csv").write_text("patient,folder\nx," + folders[2] + "\n")
    assert [u.folders for u in manifest_units(tmp_path / "list.csv", tmp_path / "in")] == [(folders[2],)]


def test_shards_are_disjoint_and_together_the_whole(tmp_path):
    tree(tmp_path, studies=40, series_per_study=1, files_per_series=2)
    units = list(iter_units(tmp_path))
    shards = [{u.id for u in units if in_shard(u, (i, 3))} for i in range(3)]
    assert set.union(*shards) == {u.id for u in units}
    assert sum(len(s) for s in shards) == len(units) and all(shards)
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


# --- resume and the state database -------------------------------------------------------------


def test_state_database_records_every_series_and_a_rerun_skips_what_is_done(cts, tmp_path):
    source, out = cts(4), tmp_path / "out"
    assert run(source, out) == 0
    db = StateDB(state_file(out), readonly=True)
    assert db.counts() == {"processed": 4} and db.unit_stats()["units"] == 4
    first = {k: r["run"]["id"] for k, r in reports(out).items()}
    db.close()
    assert run(source, out) == 0  # nothing changed: nothing redone
    assert {k: r["run"]["id"] for k, r in reports(out).items()} == first
    assert cohort(out)["catalog"]["units_kept"] == 4 and len(rows(out)) == 4
    # a changed input file redoes its unit only; a removed series folder is made again
    victim = next(source.glob("study2/ct/*.dcm"))
    os.utime(victim, ns=(10**9, 10**9))
    gone = next(k for k, r in reports(out).items() if r["series"]["study_uid"] != "1.2.3.2")
    import shutil
    shutil.rmtree(out / gone)
    assert run(source, out) == 0
    now = {k: r["run"]["id"] for k, r in reports(out).items()}
    assert sum(now[k] != first[k] for k in first) == 2 and now[gone] != first[gone]


def test_failed_units_are_kept_until_retry_failed(cts, tmp_path, monkeypatch):
    source, out = cts(3), tmp_path / "out"
    from cac_mhub.modules.nifti_converter import NiftiConverter

    convert = NiftiConverter.run

    def broken(self, instance, ctx):
        if instance.series.study_uid == "1.2.3.1":
            raise RuntimeError("decoder crashed")
        convert(self, instance, ctx)

    monkeypatch.setattr(NiftiConverter, "run", broken)
    assert run(source, out) == 0
    assert sorted(r["status"] for r in rows(out)) == ["failed", "processed", "processed"]
    monkeypatch.undo()
    assert run(source, out) == 0  # failures are results too: kept
    assert sorted(r["status"] for r in rows(out)) == ["failed", "processed", "processed"]
    assert run(source, out, "--retry-failed") == 0
    assert sorted(r["status"] for r in rows(out)) == ["processed"] * 3
    assert cohort(out)["catalog"]["units_done_now"] == 1


def _strip(report: dict) -> dict:
    """A report without what differs between runs (run id, timings, times)."""
    return {k: v for k, v in report.items() if k not in ("run", "timings_s", "outputs")}


def _units_recorded(out: Path) -> int:
    """Units in the state database of a run that is going on (WAL: reading never blocks it)."""
    import sqlite3

    if not state_file(out).exists():
        return 0
    try:
        with sqlite3.connect(f"file:{state_file(out)}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_kill_9_then_resume_gives_the_outputs_of_an_uninterrupted_run(cts, tmp_path):
    source = cts(10, shape=(40, 128, 128))
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run(source, whole, *NIFTI) == 0
    args = ["run", "--input", str(source), "--output", str(resumed), *IMPORT, *NIFTI]
    with cli_running_until(args, lambda: _units_recorded(resumed) >= 3) as process:
        os.kill(process.pid, signal.SIGKILL)
    killed = cohort(resumed)["run"]["id"]
    assert main(args) == 0
    state = cohort(resumed)
    assert state["run"]["state"] == "complete" and state["counts"]["processed"] == 10
    kept = state["catalog"]["units_kept"]
    assert kept >= 3 and kept + state["catalog"]["units_done_now"] == 10
    by_run = [r["run"]["id"] for r in reports(resumed).values()]
    assert by_run.count(killed) == kept, "what the killed run recorded is not done again"
    a, b = reports(whole), reports(resumed)
    assert a.keys() == b.keys() and all(_strip(a[k]) == _strip(b[k]) for k in a)
    strip_row = lambda r: {k: v for k, v in r.items() if k not in ("run_id", "seconds")}  # noqa: E731
    assert [strip_row(r) for r in rows(whole)] == [strip_row(r) for r in rows(resumed)]
    assert sorted(p.name for p in resumed.iterdir() if p.name.startswith(".")) == []


# --- shards --------------------------------------------------------------------------------------


def test_shards_share_an_output_folder_and_cohort_merges_them(cts, tmp_path, capsys):
    source, out = cts(6), tmp_path / "out"
    for i in range(3):
        assert run(source, out, "--shard", f"{i}/3") == 0
    parts = [rows(out, f"cohort.shard-{i}-of-3") for i in range(3)]
    keys = [{r["key"] for r in part} for part in parts]
    assert sum(len(k) for k in keys) == 6 and len(set.union(*keys)) == 6
    assert main(["cohort", str(out)]) == 0
    assert sorted(r["key"] for r in rows(out)) == sorted(set.union(*keys))
    assert "rebuilt from 3 database(s): 6 processed" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("[!.]*/report.json")) == ["report.json"] * 6


def test_bad_cohort_options_are_one_line_errors(cts, tmp_path, capsys):
    source = cts(1)
    assert run(source, tmp_path / "o", "--shard", "3/2") == 2
    assert "need 0 <= i < N" in capsys.readouterr().err
    assert run(source, tmp_path / "o", "--manifest", str(tmp_path / "none.txt")) == 2
    assert "no such file" in capsys.readouterr().err
    assert run(source, tmp_path / "o", "--resources", "GPU") == 2
    assert "expected NAME=NUMBER" in capsys.readouterr().err


# --- Dask ----------------------------------------------------------------------------------------


def _workers_of(pid: int) -> list[int]:
    """Dask worker processes (spawned by the nannies) below ``pid``."""
    import psutil

    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            pass
    return found


@pytest.mark.slow
def test_dask_local_cluster_run_survives_a_killed_worker(cts, tmp_path):
    source, out = cts(12, shape=(40, 128, 128)), tmp_path / "out"
    args = ["run", "--input", str(source), "--output", str(out), *IMPORT, *NIFTI, "--workers", "2"]
    env = {**os.environ, "CAC_MHUB_WORKERS": ""}
    process = subprocess.Popen([sys.executable, "-c", CLI, *args], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            workers = _workers_of(process.pid)
            if len(workers) == 2 and list(out.glob("[!.]*/.cac-mhub")):
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
                break
            time.sleep(0.01)
        assert killed is not None, "no worker to kill before the run ended"
        _, err = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, err[-2000:]
    state = cohort(out)
    assert state["run"]["state"] == "complete" and state["counts"] == {
        "scored": 0, "processed": 12, "skipped": 0, "failed": 0}
    assert len(reports(out)) == 12 and len(list(out.glob("[!.]*/ct.nii.gz"))) == 12
    log = (out / "cac-mhub.log").read_text()
    assert "Dask LocalCluster: 2 worker process(es)" in log
    db = StateDB(state_file(out), readonly=True)
    assert db.unit_stats()["units"] == 12 and db.counts() == {"processed": 12}
    workers = {w for (w,) in db.db.execute("SELECT DISTINCT worker FROM units")}
    db.close()
    assert len(workers) >= 2, "units ran in more than one worker process"
    assert not list(out.glob(".cac-mhub-work/*")), "no unit left half-built"


def test_slurm_example_makes_a_gpu_job_script():
    """The documented dask-jobqueue example builds its Slurm job (no Slurm needed to make it)."""
    example = Path(__file__).resolve().parents[1] / "examples" / "slurm_dask.py"
    result = subprocess.run([sys.executable, str(example), "--print-job-script", "--queue", "gpu", "--gpu",
                             "--cores", "6"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-1000:]
    script = result.stdout
    assert "#SBATCH -p gpu" in script and "#SBATCH --gres=gpu:1" in script and "--cpus-per-task=6" in script
    assert "--nthreads 1" in script and "--resources GPU=1" in script and "dask_worker tcp://" in script
    assert "PRE_SPAWN_ENVIRON=\"{'MALLOC_TRIM_THRESHOLD_': None}\"" in script


def test_local_workers_keep_glibc_malloc_adaptive(tmp_path):
    """Dask's MALLOC_TRIM_THRESHOLD_ costs a worker 30 % per series (bench_cohort.py): the
    engine's LocalCluster leaves it out and keeps one BLAS/OpenMP thread per worker."""
    from cac_mhub.cohort.engine import CohortOptions, OnDask
    from cac_mhub.cohort.worker import Job

    job = Job(config={}, config_hash="x", input_dir=str(tmp_path), output_dir=str(tmp_path), run_id="r")
    executor = OnDask(job, CohortOptions(workers=1))
    try:
        environ = executor.client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")))
    finally:
        executor.close()
    assert list(environ.values()) == [(None, "1")]


def test_sigterm_stops_the_run_cleanly_and_the_next_run_goes_on(cts, tmp_path):
    source, out = cts(10, shape=(40, 128, 128)), tmp_path / "out"
    args = ["run", "--input", str(source), "--output", str(out), *IMPORT, *NIFTI]
    with cli_running_until(args, lambda: _units_recorded(out) >= 2, stderr=subprocess.PIPE, text=True) as process:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err
    state = cohort(out)
    assert state["run"]["state"] == "interrupted" and 2 <= len(rows(out)) < 10
    assert not list(out.glob(".cac-mhub-work/*")), "the unit in flight left nothing behind"
    assert main(args) == 0
    assert cohort(out)["counts"]["processed"] == 10 and cohort(out)["catalog"]["units_kept"] == len(state["series"])


def test_a_folder_that_cannot_be_read_never_costs_the_series_recorded_from_it(cts, tmp_path, monkeypatch):
    source, out = cts(3), tmp_path / "out"
    assert run(source, out) == 0
    before = set(reports(out))
    scandir = os.scandir

    def refusing(path="."):
        if isinstance(path, (str, os.PathLike)) and Path(path) == source / "study1":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    import cac_mhub.cohort.catalog as catalog_module

    monkeypatch.setattr(catalog_module.os, "scandir", refusing)
    assert run(source, out, "--set", "general.name=again") == 0
    assert set(reports(out)) == before and len(rows(out)) == 3, "the unreadable study's series stay"
    assert {i["reason"] for i in cohort(out)["ignored_files"]} == {"unreadable folder (PermissionError)"}
    assert "series of units not seen this time are kept" in (out / "cac-mhub.log").read_text()


def huge_in_memory(folder: Path, slices: int, study_uid: str = "1.2.3.99") -> None:
    """CT slices of 4096 x 4096 stored with the Deflated transfer syntax: 35 KB a slice on disk,
    32 MB each once decoded (and more as HU)."""
    import datetime as dt

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from cac_mhub.dicom.synth import CtSeriesSpec, _slice_dataset

    spec = CtSeriesSpec(study_uid=study_uid)
    pixels = np.full((4096, 4096), 24, np.uint16).tobytes()
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(slices):
        ds = _slice_dataset(spec, generate_uid(), dt.datetime(2026, 1, 1))
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.InstanceNumber, ds.ImagePositionPatient = k + 1, [0.0, 0.0, 2.5 * k]
        ds.ImageOrientationPatient, ds.PixelSpacing, ds.SliceThickness = [1, 0, 0, 0, 1, 0], [0.1, 0.1], 2.5
        ds.Rows = ds.Columns = 4096
        ds.PixelData = pixels
        ds.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)


@pytest.mark.slow
def test_a_memory_limit_holds_with_one_worker_too(cts, tmp_path):
    """--workers 1 ran in the run's own process, where no memory limit holds (the series was
    decoded whatever --memory-per-worker said): with a limit, units run in a worker process."""
    source, out = cts(1), tmp_path / "out"
    huge_in_memory(source / "big" / "ct", 8)
    args = ["run", "--input", str(source), "--output", str(out), *IMPORT, "--workers", "1",
            "--memory-per-worker", "500MiB", "--set", "modules.DicomImporter.min_slices=3"]
    done = subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 4, done.stderr[-3000:]
    assert sorted(r["status"] for r in rows(out)) == ["failed", "processed"]
    assert "Dask LocalCluster: 1 worker process(es), 500MiB memory each" in (out / "cac-mhub.log").read_text()


@pytest.mark.slow
def test_a_series_that_kills_its_workers_by_memory_gets_a_failed_row(cts, tmp_path):
    """Issue 20, failure 1: a unit that kills every worker it is given (here by Dask's memory
    limit, for real: a series small on disk, huge in memory) was only in the units table; now
    its series has its row, failed with the reason, the counts and the log's last line say so,
    and the exit status is 4. The other series are done as usual."""
    source, out = cts(3), tmp_path / "out"
    huge_in_memory(source / "big" / "ct", 8)
    assert sum(p.stat().st_size for p in (source / "big" / "ct").iterdir()) < 2_000_000
    args = ["run", "--input", str(source), "--output", str(out), *IMPORT, "--workers", "2",
            "--memory-per-worker", "500MiB", "--set", "modules.DicomImporter.min_slices=3"]
    env = {**os.environ, "CAC_MHUB_WORKERS": ""}
    done = subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 4, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    table = rows(out)
    assert len(table) == 4 and len({r["key"] for r in table}) == 4
    failed = [r for r in table if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["study_uid"] == "1.2.3.99"
    assert failed[0]["reason"].startswith("out of memory: the worker processing it was stopped")
    assert "500MiB" in failed[0]["reason"] and "KilledWorker" in failed[0]["reason"]
    assert cohort(out)["counts"] == {"scored": 0, "processed": 3, "skipped": 0, "failed": 1}
    report = json.loads((out / failed[0]["key"] / "report.json").read_text())
    assert report["status"] == "failed" and report["reason"] == failed[0]["reason"]
    last = (out / "cac-mhub.log").read_text().strip().splitlines()[-1]
    assert "4 series, 1 failed" in last and "1 unit(s) lost to a dying process" in last
    db = StateDB(state_file(out), readonly=True)
    assert db.counts() == {"processed": 3, "failed": 1} and db.unit_stats()["failed_units"] == 1
    db.close()
    # a re-run keeps the failure (a failure is a result) and exits 0: nothing was lost this time
    again = subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [r["status"] for r in rows(out)].count("failed") == 1


SEGFAULT_PRELOAD = """
import os, signal
from cac_mhub.cohort import worker
real = getattr(worker, "_real_process_unit", worker.process_unit)  # Dask may load a preload twice
worker._real_process_unit = real
def crashing(unit, job, modules=None, capture=True):
    if "crash" in unit.folders[0]:
        os.kill(os.getpid(), signal.SIGSEGV)
    return real(unit, job, modules, capture)
worker.process_unit = crashing
"""


@pytest.mark.slow
def test_a_series_that_crashes_its_workers_gets_a_failed_row(cts, tmp_path):
    """A segfault in a worker (here: a Dask preload makes the unit's worker kill itself with
    SIGSEGV) is not a memory kill: the row says the worker died, and not 'out of memory'."""
    source, out = cts(3), tmp_path / "out"
    (source / "crash").mkdir()
    for path in (source / "study0" / "ct").iterdir():
        (source / "crash" / path.name).write_bytes(path.read_bytes())
    edit_all = __import__("tests.header_edits", fromlist=["edit_all"]).edit_all
    edit_all(sorted((source / "crash").iterdir()), StudyInstanceUID="1.2.3.77", SeriesInstanceUID=generate_uid())
    preload = tmp_path / "crash_preload.py"
    preload.write_text(SEGFAULT_PRELOAD)
    args = ["run", "--input", str(source), "--output", str(out), *IMPORT, "--workers", "2"]
    env = {**os.environ, "CAC_MHUB_WORKERS": "", "DASK_DISTRIBUTED__WORKER__PRELOAD": f'["{preload}"]'}
    done = subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 4, done.stderr[-3000:]
    table = {r["study_uid"]: r for r in rows(out)}
    assert len(table) == 4 and table["1.2.3.77"]["status"] == "failed"
    assert table["1.2.3.77"]["reason"] == ("worker process died 3 time(s) while processing it (KilledWorker: a "
                                           "crash such as a segfault, or killed from outside)")
    assert [table[f"1.2.3.{i}"]["status"] for i in range(3)] == ["processed"] * 3


DIES_ON_STUDY1 = """
import os, signal, sys
from cac_mhub.cohort import engine
real = engine.process_unit
def dying(unit, job, modules=None, capture=True):
    if "study1" in unit.folders[0]:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer or a segfault would end it
    return real(unit, job, modules, capture)
engine.process_unit = dying
from cac_mhub.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_unit_whose_process_died_twice_is_recorded_failed_not_tried_again(cts, tmp_path):
    """With one worker the unit runs in the run's own process: if that process dies with the
    same unit in flight twice (out of memory, a segfault), the next run records the unit's
    series as failed instead of dying a third time; --retry-failed tries it again. A run
    stopped on purpose (Ctrl-C) does not count."""
    source, out = cts(2), tmp_path / "out"
    args = ["run", "--input", str(source), "--output", str(out), *IMPORT]
    for _ in range(2):
        died = subprocess.run([sys.executable, "-c", DIES_ON_STUDY1, *args], capture_output=True, timeout=300)
        assert died.returncode == -signal.SIGKILL
    assert run(source, out) == 4
    table = {r["study_uid"]: r for r in rows(out)}
    assert table["1.2.3.0"]["status"] == "processed"
    assert table["1.2.3.1"]["status"] == "failed"
    assert table["1.2.3.1"]["reason"].startswith("the process working on it died 2 times")
    assert run(source, out) == 0 and [r["status"] for r in rows(out)].count("failed") == 1  # kept, like any failure
    assert run(source, out, "--retry-failed") == 0
    assert {r["status"] for r in rows(out)} == {"processed"}
