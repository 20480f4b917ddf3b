"""dashboard.html: written by every run, rebuilt by ``cac-mhub dashboard``, checked in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cac_mhub.cli import main
from cac_mhub.report import dashboard as D
from tests.conftest import ball_volume

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,900"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")


def browse(url: str, *flags: str, timeout: float = 90) -> str:
    """Run headless Chromium on ``url`` with a fresh profile; return its stdout (the DOM with --dump-dom)."""
    with tempfile.TemporaryDirectory(prefix="cac-chromium-") as profile:
        done = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *flags, url],
                              capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def rows_in(dom: str) -> list[str]:
    return re.findall(r'<tr class="row[^"]*" data-key="([^"]+)"', dom)


def shown(dom: str) -> str:
    return re.search(r'id="shown"[^>]*>([^<]*)<', dom).group(1)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """An import-workflow run over four series: three processed (one contrast-flagged), one skipped."""
    from cac_mhub.dicom.synth import CtSeriesSpec, write_ct_series

    root = tmp_path_factory.mktemp("dash")
    for i in range(3):
        write_ct_series(ball_volume((12, 32, 32)), root / "in" / f"s{i}", (2.5, 0.8, 0.8), (0, 0, 0),
                        CtSeriesSpec(study_uid=f"1.2.3.{i}", patient_id=f"P{i}",
                                     **({"contrast_agent": "Iohexol"} if i == 2 else {})))
    write_ct_series(ball_volume((4, 32, 32)), root / "in" / "short", (2.5, 0.8, 0.8), (0, 0, 0),
                    CtSeriesSpec(study_uid="1.2.3.9", patient_id="P9"))
    out = root / "out"
    assert main(["run", "--input", str(root / "in"), "--output", str(out), "--workflow", "import", "--quiet"]) == 0
    return out


def test_every_run_writes_the_dashboard_and_it_can_be_turned_off(small_run: Path, tmp_path: Path) -> None:
    page = (small_run / "dashboard.html").read_text()
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page  # no network
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert len(data["rows"]) == 4
    assert not list(small_run.glob(".tmp-*"))
    out = tmp_path / "off"
    assert main(["run", "--input", str(small_run.parent / "in"), "--output", str(out), "--workflow", "import",
                 "--quiet", "--set", "modules.ReportExporter.dashboard=false"]) == 0
    assert (out / "cohort.csv").is_file() and not (out / "dashboard.html").exists()


def test_a_failing_dashboard_only_warns(small_run: Path, tmp_path: Path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no dashboard today")

    monkeypatch.setattr(D, "write_dashboard", broken)
    out = tmp_path / "out"
    assert main(["run", "--input", str(small_run.parent / "in"), "--output", str(out), "--workflow", "import", "--quiet"]) == 0
    assert "dashboard.html not written: RuntimeError: no dashboard today" in (out / "cac-mhub.log").read_text()
    assert len((out / "cohort.csv").read_text().splitlines()) == 5


def test_dashboard_command_rebuilds_and_refuses_other_folders(small_run: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(small_run, copy)
    (copy / "dashboard.html").unlink()
    assert main(["dashboard", str(copy)]) == 0
    assert (copy / "dashboard.html").stat().st_size > 5000
    assert main(["dashboard", str(tmp_path / "nothing")]) == 2
    assert "not a cac-mhub output folder" in capsys.readouterr().err


def test_page_text_is_escaped_and_summaries_count() -> None:
    rows = [
        {"key": "a", "status": "scored", "agatston": "0", "risk_category": "very low", "agatston_LAD": "0"},
        {"key": "b", "status": "scored", "agatston": "150.5", "risk_category": "moderate", "agatston_LAD": "100.5",
         "agatston_RCA": "50", "reason": ""},
        {"key": "c", "status": "failed", "reason": "</script><script>alert(1)</script>", "agatston": ""},
    ]
    summary = D.summarise(rows)
    assert summary["statuses"] == {"scored": 2, "failed": 1}
    assert summary["histogram"][0] == 1 and summary["histogram"][D.HISTOGRAM_EDGES.index(300)] == 1
    assert summary["groups"] == {"very low": 1, "moderate": 1}
    assert summary["arteries"]["LAD"] == pytest.approx(100.5) and summary["arteries"]["RCA"] == 50
    page = D.build_dashboard(rows, title="<b>x</b>")
    assert "</script><script>alert" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    encoded = D.encode_rows(rows)
    status = [c["key"] for c in encoded["columns"]].index("status")
    assert [encoded["strings"][r[status]] for r in encoded["rows"]] == ["scored", "scored", "failed"]


def test_browser_shows_one_row_per_series_and_filters(small_run: Path) -> None:
    url = (small_run / "dashboard.html").as_uri()
    dom = browse(url, "--dump-dom")
    keys = rows_in(dom)
    with open(small_run / "cohort.csv") as handle:
        expected = sorted(line.split(",")[0] for line in handle.read().splitlines()[1:])
    assert sorted(keys) == expected and shown(dom) == "4 of 4 series"
    skipped = rows_in(browse(url + "#status=skipped", "--dump-dom"))
    assert len(skipped) == 1
    contrast = browse(url + "#q=contrast-enhanced", "--dump-dom")
    assert shown(contrast) == "1 of 4 series" and len(rows_in(contrast)) == 1
    sorted_dom = browse(url + "#sort=status", "--dump-dom")
    assert 'class="sorted-asc"' in sorted_dom and rows_in(sorted_dom)[-1] == skipped[0]  # processed < skipped
    # each row links to its picture and report by relative path
    assert f'href="{keys[0]}/qc.png"' in dom and f'href="{keys[0]}/report.json"' in dom


def test_browser_screenshot_is_not_blank(small_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "shot.png"
    browse((small_run / "dashboard.html").as_uri(), f"--screenshot={png}")
    pixels = np.asarray(Image.open(png).convert("L"), float)
    assert pixels.shape == (900, 1280)
    assert pixels.std() > 10  # text, bars and a table, not a blank page
    colours = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    assert len(np.unique(colours[::7], axis=0)) > 20


def test_dashboard_shows_noncoronary_scores_and_the_percentile_and_links_outcomes(tmp_path: Path) -> None:
    rows = [{"key": "a", "status": "scored", "agatston": "12.5", "avc_agatston": "2100.44", "mac_agatston": "33.06",
             "tac_agatston": "250.5", "cac_percentile": "75-90"},
            {"key": "b", "status": "scored", "agatston": "0", "avc_agatston": "", "mac_agatston": "0",
             "tac_agatston": "0", "cac_percentile": ""}]
    encoded = D.encode_rows(rows)
    keys = [c["key"] for c in encoded["columns"]]
    first = dict(zip(keys, encoded["rows"][0]))
    assert first["avc"] == 2100.44 and first["mac"] == 33.06 and first["tac"] == 250.5
    assert encoded["strings"][first["percentile"]] == "75-90"
    assert dict(zip(keys, encoded["rows"][1]))["avc"] is None  # not delineated: empty, never 0
    labels = {c["key"]: c["label"] for c in encoded["columns"]}
    assert (labels["avc"], labels["mac"], labels["tac"], labels["percentile"]) == ("AVC", "MAC", "TAC", "MESA percentile")
    (tmp_path / "cohort.csv").write_text("key,status,agatston\na,scored,1\n")
    D.write_dashboard(tmp_path)
    assert "outcomes.html" not in (tmp_path / "dashboard.html").read_text()
    (tmp_path / "outcomes.html").write_text("<html></html>")
    D.write_dashboard(tmp_path)
    assert "<a href='outcomes.html'>" in (tmp_path / "dashboard.html").read_text()
