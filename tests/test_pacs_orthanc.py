"""The PACS round trip against a real Orthanc: pull -> score -> push over DICOMweb and DIMSE, the
watch mode, a PACS that goes away mid-run, wrong credentials.

Every server is local (127.0.0.1, free ports, a temporary storage folder) and every call has a
timeout; the scoring is the default workflow on a small synthetic thorax (about 7 s a study).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydicom.uid import generate_uid

from cac_mhub.cli import main
from cac_mhub.dicom.synth import CtSeriesSpec, write_ct_series
from cac_mhub.pacs import roundtrip
from cac_mhub.pacs.base import short_id
from cac_mhub.pacs.ledger import LEDGER_NAME, Ledger

from .orthanc import Orthanc, all_values, require_orthanc, self_signed

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="session")
def thorax() -> Any:
    from cac_mhub.phantom.thorax import generate_thorax

    return generate_thorax(4250, size=256, increment=3.0, z_extent_mm=200.0, burden="severe")


@pytest.fixture
def make_study(thorax, tmp_path):
    """Write a CT study (the thorax, plus a 4-slice series that selection must leave in the PACS)."""

    def make(name: str, with_extra: bool = True) -> tuple[str, str, list[Path]]:
        study, series = generate_uid(), generate_uid()
        folder = tmp_path / "studies" / name
        files = write_ct_series(thorax.hu, folder / "ct", thorax.spacing_zyx, thorax.origin_lps,
                                CtSeriesSpec(patient_id=f"PAT-{name}", patient_name="Secret^Patient", study_uid=study,
                                             series_uid=series, slice_thickness=thorax.slice_thickness))
        if with_extra:
            files += write_ct_series(np.zeros((4, 16, 16)), folder / "short", (3.0, 1.0, 1.0), (0, 0, 0),
                                     CtSeriesSpec(patient_id=f"PAT-{name}", study_uid=study, series_number=2,
                                                  series_description="too short"))
        return study, series, files

    return make


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    require_orthanc()
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


@pytest.fixture
def pacs_env(monkeypatch):
    def configure(server: Orthanc, folder: Path, **kwargs: Any) -> Path:
        monkeypatch.setenv("CAC_TEST_PACS_PASSWORD", server.password)
        path = folder / "pacs.yml"
        path.write_text(yaml.safe_dump({"pacs": server.pacs_config(**kwargs)}), encoding="utf-8")
        return path

    return configure


def assert_round_trip(server: Orthanc, study: str, series: str, count: int = 1) -> None:
    """The SEG and SR sit in the source study, reference the scored CT series, and only once."""
    segs, srs = server.instances(study, "SEG"), server.instances(study, "SR")
    assert len(segs) == count and len(srs) == count, (len(segs), len(srs))
    for ds in segs + srs:
        assert ds.StudyInstanceUID == study
        assert series in all_values(ds, "SeriesInstanceUID")


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def test_dicomweb_pull_score_push(orthanc, make_study, pacs_env, tmp_path, capsys):
    study, series, files = make_study("web")
    orthanc.upload(files)
    config = pacs_env(orthanc, tmp_path)
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = run_cli("pacs", "run", "--pacs-config", config, "--output", out, "--study-uid", study, "--cache", cache)
    assert code == 0, capsys.readouterr().err
    assert_round_trip(orthanc, study, series)
    key = short_id(study)
    # only the qualifying series was retrieved: the 4-slice one never reached the run
    assert [p.name for p in (out / key).iterdir() if p.is_dir() and not p.name.startswith(".")] == [series]
    assert cache.is_dir() and not list(cache.iterdir())  # the retrieved series are gone
    # one overview over the studies' own outputs: a row per series, its picture found from the top
    import csv

    with open(out / "cohort.csv", newline="", encoding="utf-8") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["key"] == f"{key}/{series}" and row["status"] == "scored"
    assert (out / row["key"] / "qc.png").is_file() and (out / "dashboard.html").is_file()
    # a second run finds the study done: nothing pulled, nothing pushed twice
    assert run_cli("pacs", "run", "--pacs-config", config, "--output", out, "--study-uid", study) == 0
    assert_round_trip(orthanc, study, series)
    log = (out / "cac-mhub-pacs.log").read_text()
    assert "PAT-web" not in log and "Secret" not in log and orthanc.password not in log
    assert f"study {key}: stored SEG, SR" in log


def test_dimse_pull_score_push_with_c_move(orthanc, make_study, pacs_env, tmp_path, capsys):
    study, series, files = make_study("dimse")
    orthanc.upload(files)
    config = pacs_env(orthanc, tmp_path, retrieve="c-move")
    out = tmp_path / "out"
    code = run_cli("pacs", "run", "--pacs-config", config, "--via", "dimse", "--output", out,
                   "--study-date", "20260101-20260101", "--study-uid", study)
    assert code == 0, capsys.readouterr().err
    assert_round_trip(orthanc, study, series)
    ledger = Ledger(out, f"dimse:ORTHANC@127.0.0.1:{orthanc.dicom_port}")
    assert ledger.study(study)["state"] == "done" and ledger.push_count() == 2
    # push again by hand: the ledger says both objects are stored, nothing is sent
    assert run_cli("pacs", "push", "--pacs-config", config, "--via", "dimse", "--output", out) == 0
    assert_round_trip(orthanc, study, series)


def test_wrong_credentials_are_one_line_and_no_secret_leaks(orthanc, pacs_env, tmp_path, capsys, monkeypatch):
    config = pacs_env(orthanc, tmp_path)
    monkeypatch.setenv("CAC_TEST_PACS_PASSWORD", "not-the-Password-42")
    out = tmp_path / "out"
    assert run_cli("pacs", "run", "--pacs-config", config, "--output", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cac-mhub: PACS refused the credentials (HTTP 401) at {orthanc.dicomweb}"]
    log = (out / "cac-mhub-pacs.log").read_text()
    assert "HTTP 401" in log and "not-the-Password-42" not in log and orthanc.password not in log
    monkeypatch.delenv("CAC_TEST_PACS_PASSWORD")
    assert run_cli("pacs", "run", "--pacs-config", config, "--output", out) == 2
    assert "environment variable CAC_TEST_PACS_PASSWORD is not set" in capsys.readouterr().err


def test_pacs_stopped_mid_run_then_a_rerun_completes_without_pushing_twice(
        make_study, pacs_env, tmp_path, capsys, monkeypatch):
    require_orthanc()
    server = Orthanc(tmp_path / "orthanc").start()
    try:
        first, first_series, files_a = make_study("a", with_extra=False)
        second, second_series, files_b = make_study("b", with_extra=False)
        server.upload(files_a + files_b)
        config = pacs_env(server, tmp_path, retrieve="c-get")
        out = tmp_path / "out"
        real_scorer = roundtrip.score_with_cli
        scored: list[Path] = []

        def score_then_pacs_dies(input_dir: Path, output_dir: Path, args: Any) -> int:
            code = real_scorer(input_dir, output_dir, args)
            scored.append(output_dir)
            if len(scored) == 1:
                server.stop()  # the PACS goes away after the first study was scored
            return code

        monkeypatch.setattr(roundtrip, "score_with_cli", score_then_pacs_dies)
        capsys.readouterr()
        code = run_cli("pacs", "run", "--pacs-config", config, "--via", "dimse", "--output", out,
                       "--study-uid", first, "--study-uid", second)
        err = capsys.readouterr().err
        assert code == 4, err
        assert len(scored) == 1
        errors = [line for line in err.splitlines() if line.startswith("ERROR")]
        assert any("PACS not reachable at ORTHANC@127.0.0.1" in line for line in errors), err
        assert "Traceback" not in err
        ledger = Ledger(out, f"dimse:ORTHANC@127.0.0.1:{server.dicom_port}")
        states = {ledger.study(first)["state"], ledger.study(second)["state"]}
        assert states == {"scored", "failed"}

        server.start()
        code = run_cli("pacs", "run", "--pacs-config", config, "--via", "dimse", "--output", out,
                       "--study-uid", first, "--study-uid", second)
        assert code == 0, capsys.readouterr().err
        assert len(scored) == 2  # the scored study was pushed without scoring it again
        assert_round_trip(server, first, first_series)
        assert_round_trip(server, second, second_series)
        assert ledger.push_count() == 4
        assert run_cli("pacs", "run", "--pacs-config", config, "--via", "dimse", "--output", out) == 0
        assert_round_trip(server, first, first_series)
    finally:
        server.stop()


def test_watch_survives_a_pacs_restart_and_picks_up_a_study_uploaded_after_it_started(make_study, pacs_env, tmp_path):
    require_orthanc()
    server = Orthanc(tmp_path / "orthanc").start()
    process = None
    try:
        old, _, old_files = make_study("old", with_extra=False)
        new, new_series, new_files = make_study("new", with_extra=False)
        server.upload(old_files)
        config = pacs_env(server, tmp_path)
        out = tmp_path / "out"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               "CAC_TEST_PACS_PASSWORD": server.password}
        process = subprocess.Popen(
            [sys.executable, "-m", "cac_mhub.cli", "watch", "--pacs-config", str(config), "--output", str(out),
             "--study-date", "20260101-", "--interval", "0.5", "--max-polls", "400", "--skip-existing", "--quiet"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ledger_path = out / LEDGER_NAME
        endpoint = f"dicomweb:{server.dicomweb}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (ledger_path.exists() and Ledger(out, endpoint).last_poll()):
            assert process.poll() is None, process.communicate(timeout=5)
            time.sleep(0.2)
        assert Ledger(out, endpoint).study(old)["state"] == "ignored"
        server.stop()  # a PACS restart: the watch warns, backs off and carries on
        log = out / "cac-mhub-pacs.log"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "next poll in" not in log.read_text():
            assert process.poll() is None, process.communicate(timeout=5)
            time.sleep(0.2)
        assert "PACS not reachable at" in log.read_text()
        server.start()
        server.upload(new_files)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (Ledger(out, endpoint).study(new) or {}).get("state") != "done":
            assert process.poll() is None, process.communicate(timeout=5)
            time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0, err.decode()
        assert_round_trip(server, new, new_series)
        assert server.instances(old, "SEG") == [] and server.instances(old, "SR") == []
        assert "stopped after" in (out / "cac-mhub-pacs.log").read_text()
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        server.stop()


def test_dicomweb_over_tls_is_verified_by_default_and_trusts_a_ca_bundle(make_study, pacs_env, tmp_path, capsys):
    """A PACS with a certificate nobody vouches for is refused in one line; naming its CA works."""
    require_orthanc()
    cert, key = self_signed(tmp_path / "tls")
    server = Orthanc(tmp_path / "orthanc", tls=(cert, key)).start()
    try:
        study, _, files = make_study("tls", with_extra=False)
        server.upload(files)
        config = pacs_env(server, tmp_path)
        assert yaml.safe_load(config.read_text())["pacs"]["dicomweb"]["url"].startswith("https://")
        capsys.readouterr()
        refused = run_cli("pacs", "pull", "--pacs-config", config, "--output", tmp_path / "out1", "--study-uid", study)
        err = capsys.readouterr().err
        assert refused != 0 and "TLS verification failed at https://127.0.0.1" in err and "Traceback" not in err
        settings = yaml.safe_load(config.read_text())
        settings["pacs"]["dicomweb"]["ca_bundle"] = str(cert)
        config.write_text(yaml.safe_dump(settings), encoding="utf-8")
        assert run_cli("pacs", "pull", "--pacs-config", config, "--output", tmp_path / "out2", "--study-uid", study,
                       "--cache", tmp_path / "cache") == 0, capsys.readouterr().err
    finally:
        server.stop()
