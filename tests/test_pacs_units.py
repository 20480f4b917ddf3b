"""PACS pieces that need no PACS: the config section and its secrets, query expansion, the watch
window, selection on fetched headers, the ledger, the push list, auth headers, the compose profile."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
import requests
import yaml

from cac_mhub.chain import ChainError
from cac_mhub.cli import main
from cac_mhub.config import load, resolve
from cac_mhub.pacs.base import SeriesInfo, StudyQuery, short_id
from cac_mhub.pacs.config import DicomWebEndpoint, check_section, read_secret, settings
from cac_mhub.pacs.dicomweb import make_session
from cac_mhub.pacs.ledger import Ledger
from cac_mhub.pacs.roundtrip import pending_items, window_query
from cac_mhub.pacs.selection import choose, rules_from_config

REPO = Path(__file__).resolve().parents[1]
WEB = {"url": "https://pacs.example.org/dicom-web", "auth": "basic", "username": "cac", "password_env": "PACS_PW"}


def test_pacs_section_defaults_and_validation():
    section = check_section({"dicomweb": WEB})
    assert section["use"] == "dicomweb" and section["dicomweb"]["verify"] is True
    assert section["push"]["retries"] == 3 and section["watch"]["interval_s"] == 300.0
    assert check_section({"dimse": {"host": "pacs"}})["use"] == "dimse"
    bad = [
        ({"dicomweb": {**WEB, "password": "x"}}, "secrets are never written in the config"),
        ({"dicomweb": {**WEB, "password_file": "/run/s"}}, "give exactly one"),
        ({"dicomweb": {**WEB, "auth": "digest"}}, "not one of"),
        ({"dicomweb": {**WEB, "url": "ftp://x"}}, "http:// or https://"),
        ({"dimse": {"host": "pacs", "retrieve": "c-store"}}, "pacs.dimse.retrieve"),
        ({"dimse": {"host": "pacs", "calling_aet": "A" * 17}}, "AE title"),
        ({"dimse": {"host": "pacs", "port": "104"}}, "expected int"),
        ({"dicomweb": WEB, "push": {"retries": -1}}, "must not be negative"),
        ({"dicomweb": WEB, "colour": 1}, "unknown key"),
    ]
    for raw, message in bad:
        with pytest.raises(ChainError, match=message):
            check_section(raw)


def test_pacs_section_in_a_workflow_config_is_validated_and_not_hashed(tmp_path, capsys):
    raw = yaml.safe_load((REPO / "config" / "default.yml").read_text())
    plain = resolve(raw)
    with_pacs = resolve({**raw, "pacs": {"dicomweb": WEB}})
    assert with_pacs["pacs"]["dicomweb"]["url"] == WEB["url"]
    from cac_mhub.config import config_hash

    assert config_hash(plain) == config_hash(with_pacs)
    path = tmp_path / "site.yml"
    path.write_text(yaml.safe_dump({**raw, "pacs": {"dicomweb": {**WEB, "token": "abc"}}}))
    assert main(["validate", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "secrets are never written" in err and "abc" not in err
    assert load(workflow="default", overrides=["pacs.dimse.host=pacs", "pacs.use=dimse"])["pacs"]["use"] == "dimse"


def test_secrets_come_from_environment_or_file_and_errors_never_show_them(tmp_path, monkeypatch):
    monkeypatch.setenv("PACS_PW", "hunter2")
    assert read_secret("p", "PACS_PW", None) == "hunter2"
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    assert read_secret("p", None, str(secret)) == "from-file"
    monkeypatch.delenv("PACS_PW")
    with pytest.raises(ChainError, match="environment variable PACS_PW is not set"):
        read_secret("p", "PACS_PW", None)
    with pytest.raises(ChainError, match="cannot be read"):
        read_secret("p", None, str(tmp_path / "missing"))


def test_sessions_carry_basic_or_bearer_auth_and_verify_tls(monkeypatch, tmp_path):
    monkeypatch.setenv("PACS_PW", "hunter2")
    monkeypatch.setenv("PACS_TOKEN", "tok-123")
    basic = make_session(DicomWebEndpoint(**{**WEB, "ca_bundle": "/etc/ca.pem"}))
    assert basic.auth == ("cac", "hunter2") and basic.verify == "/etc/ca.pem" and basic.trust_env is False
    bearer = make_session(DicomWebEndpoint(url=WEB["url"], auth="bearer", token_env="PACS_TOKEN"))
    prepared = bearer.prepare_request(requests.Request("GET", WEB["url"]))
    assert prepared.headers["Authorization"] == "Bearer tok-123" and bearer.verify is True
    assert "tok-123" not in repr(bearer.auth)
    assert make_session(DicomWebEndpoint(url=WEB["url"], verify=False)).verify is False


def test_query_variants_and_watch_window():
    query = StudyQuery(study_date="20260101-20260131", accession_numbers=("A1", "A2"), patient_ids=("P",))
    assert query.variants() == [
        {"StudyDate": "20260101-20260131", "ModalitiesInStudy": "CT", "AccessionNumber": "A1", "PatientID": "P"},
        {"StudyDate": "20260101-20260131", "ModalitiesInStudy": "CT", "AccessionNumber": "A2", "PatientID": "P"},
    ]
    window = window_query(StudyQuery(), 7, today=dt.date(2026, 3, 10))
    assert window.study_date == "20260303-" and window.modality == "CT"
    assert window_query(query, 7) is query
    assert len(short_id("1.2.3")) == 16 and short_id("1.2.3") != short_id("1.2.4")


def test_selection_runs_on_headers_only(make_ct, tmp_path):
    """The workflow's DicomImporter rules on header-only datasets (what WADO-RS metadata gives)."""
    good = make_ct("good", study_uid="1.2.3", series_uid="1.2.3.1")
    thick = make_ct("thick", spacing=(5.0, 0.8, 0.8), study_uid="1.2.3", series_uid="1.2.3.2")
    infos = []
    for uid, files in (("1.2.3.1", good), ("1.2.3.2", thick)):
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
        assert all("PixelData" not in h for h in headers)
        infos.append(SeriesInfo(study_uid="1.2.3", uid=uid, modality="CT", headers=headers))
    infos.append(SeriesInfo(study_uid="1.2.3", uid="1.2.3.3", modality="CT"))
    rules = rules_from_config(load(workflow="default"))
    chosen, reasons = choose(infos, rules)
    assert [c.uid for c in chosen] == ["1.2.3.1"]
    assert "slice increment 5 mm exceeds 3 mm" in reasons["1.2.3.2"]
    assert reasons["1.2.3.3"] == "no instances listed by the PACS"
    strict = rules_from_config(load(workflow="default", overrides=["modules.DicomImporter.min_slices=100"]))
    assert choose(infos[:1], strict)[0] == []


def test_ledger_remembers_studies_pushes_and_polls(tmp_path):
    ledger = Ledger(tmp_path, "dicomweb:http://x")
    assert ledger.study("1.2") is None and ledger.last_poll() is None
    ledger.set_study("1.2", "k", "failed", "boom", attempt=True)
    ledger.set_study("1.2", "k", "failed", "boom", attempt=True)
    ledger.set_study("1.2", "k", "scored")
    assert ledger.study("1.2") == {"key": "k", "state": "scored", "attempts": 2, "error": ""}
    ledger.record_push("1.2.1", "seg", "1.2", "9.9")
    ledger.record_push("1.2.1", "seg", "1.2", "9.9")
    assert ledger.pushed("1.2.1", "seg") == "9.9" and ledger.pushed("1.2.1", "sr") is None
    assert ledger.push_count() == 1
    ledger.record_poll()
    assert ledger.last_poll() is not None
    other = Ledger(tmp_path, "dimse:PACS@h:104")  # one file, endpoints kept apart
    assert other.study("1.2") is None and other.push_count() == 0
    assert ledger.counts() == {"scored": 1}


def test_push_list_reads_reports_and_skips_what_the_ledger_has(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    key = tmp_path / "study" / "1.2.3.1"
    key.mkdir(parents=True)
    for kind, uid in (("seg", "9.1"), ("sr", "9.2")):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.SOPClassUID = uid, uid + ".0", "1.2.840.10008.5.1.4.1.1.66.4"
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, uid
        ds.save_as(key / f"cac.{kind}.dcm", enforce_file_format=True)
    report = {"status": "scored", "series": {"series_uid": "1.2.3.1", "study_uid": "1.2.3"},
              "outputs": {"seg": "1.2.3.1/cac.seg.dcm", "sr": "1.2.3.1/cac.sr.dcm", "report": "1.2.3.1/report.json"}}
    (key / "report.json").write_text(json.dumps(report))
    ledger = Ledger(tmp_path, "x")
    items = pending_items(tmp_path / "study", ledger, "1.2.3")
    assert [(i.kind, i.sop_uid, i.object_series_uid) for i in items] == [("seg", "9.1", "9.1.0"), ("sr", "9.2", "9.2.0")]
    assert pending_items(tmp_path, ledger) and not pending_items(tmp_path / "study", ledger, "other")
    ledger.record_push("1.2.3.1", "seg", "1.2.3", "9.1")
    assert [i.kind for i in pending_items(tmp_path, ledger)] == ["sr"]


def test_commands_are_registered_and_unreachable_pacs_is_one_line(tmp_path, capsys):
    config = tmp_path / "pacs.yml"
    config.write_text(yaml.safe_dump({"pacs": {"dimse": {"host": "127.0.0.1", "port": 9, "timeout_s": 2}}}))
    code = main(["pacs", "run", "--pacs-config", str(config), "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and err[0].startswith("cac-mhub: PACS not reachable at ANY-SCP@127.0.0.1:9")
    assert main(["pacs", "status", "--output", str(tmp_path / "out")]) == 0
    assert main(["pacs", "run", "--output", str(tmp_path / "x")]) == 2
    assert "no pacs: section" in capsys.readouterr().err
    assert settings(check_section({"dicomweb": WEB})).endpoint_name() == "dicomweb"
    with pytest.raises(ChainError, match="pacs.dimse is not configured"):
        settings(check_section({"dicomweb": WEB})).endpoint_name("dimse")


def test_compose_pacs_file_runs_orthanc_and_the_watch():
    services = yaml.safe_load((REPO / "docker-compose.pacs.yml").read_text())["services"]
    watch, orthanc = services["cac-mhub-watch"], services["orthanc"]
    # the batch compose file must run without the PACS password: compose checks every service
    assert "CAC_PACS_PASSWORD" not in (REPO / "docker-compose.yml").read_text().split("services:")[1]
    assert watch["command"][0] == "watch" and "--pacs-config" in watch["command"]
    assert watch.get("network_mode") != "none" and "orthanc" in watch["depends_on"]
    assert watch["restart"] == "unless-stopped"
    for value in list(watch["environment"].values()) + list(orthanc["environment"].values()):
        assert "PASSWORD" not in str(value) or "${CAC_PACS_PASSWORD:?" in str(value)  # from the host, never literal
    endpoints = check_section(yaml.safe_load((REPO / "docker" / "pacs.yml").read_text())["pacs"])
    assert endpoints["dicomweb"]["url"] == "http://orthanc:8042/dicom-web"
    assert endpoints["dicomweb"]["password_env"] == "CAC_PACS_PASSWORD"


def test_compose_files_interpolate_as_documented():
    """The batch file needs no PACS password; the PACS file refuses to start without one."""
    import shutil
    import subprocess

    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose not installed (the docker smoke check installs it)")
    env = {k: v for k, v in os.environ.items() if k != "CAC_PACS_PASSWORD"}

    def config(name: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([tool, "-f", str(REPO / name), "config"], capture_output=True, text=True,
                              env={**env, **extra}, timeout=60)

    assert config("docker-compose.yml").returncode == 0
    refused = config("docker-compose.pacs.yml")
    assert refused.returncode != 0 and "set CAC_PACS_PASSWORD" in refused.stderr
    assert config("docker-compose.pacs.yml", CAC_PACS_PASSWORD="x").returncode == 0


def test_the_command_line_checks_the_pacs_section_in_a_fresh_process(tmp_path):
    """The chain's loader never imports pacs/; the CLI's plug-ins register the section's check."""
    alone = subprocess.run([sys.executable, "-c", "import sys, cac_mhub.config; print('cac_mhub.pacs' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert alone.stdout.strip() == "False"
    raw = yaml.safe_load((REPO / "config" / "default.yml").read_text())
    path = tmp_path / "site.yml"
    path.write_text(yaml.safe_dump({**raw, "pacs": {"dicomweb": {**WEB, "url": "ftp://x"}}}))
    done = subprocess.run([sys.executable, "-m", "cac_mhub.cli", "validate", "--config", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "cac-mhub: config error: pacs.dicomweb.url: expected an http:// or https:// address"
