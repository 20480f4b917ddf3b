"""docker/entrypoint.sh outside Docker: argument defaults, /app/data layout, pre-flight checks.

The script is the one the image runs; here its folders come from CAC_MHUB_INPUT_DIR /
CAC_MHUB_OUTPUT_DIR and `cac-mhub` is replaced (CAC_MHUB_BIN) by a recorder or the real CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")


@pytest.fixture
def recorder(tmp_path: Path) -> Path:
    """A stand-in for `cac-mhub` that prints each argument on its own line."""
    script = tmp_path / "bin" / "fake-cac-mhub"
    script.parent.mkdir()
    script.write_text('#!/bin/sh\nfor arg in "$@"; do printf "%s\\n" "$arg"; done\n', encoding="utf-8")
    script.chmod(0o755)
    return script


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    """An /app/data-like layout: input_data with one file, output_data absent (created on demand)."""
    input_dir = tmp_path / "data" / "input_data"
    input_dir.mkdir(parents=True)
    (input_dir / "slice001.dcm").write_bytes(b"\0" * 132 + b"DICM")
    return input_dir, tmp_path / "data" / "output_data"


def run_entrypoint(
    *args: str,
    cli: Path | str,
    input_dir: Path | None = None,
    output_dir: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAC_MHUB_")}
    env["CAC_MHUB_BIN"] = str(cli)
    if input_dir is not None:
        env["CAC_MHUB_INPUT_DIR"] = str(input_dir)
    if output_dir is not None:
        env["CAC_MHUB_OUTPUT_DIR"] = str(output_dir)
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, timeout=600
    )


def argv(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_no_arguments_runs_the_default_workflow_on_the_data_folders(recorder: Path, data: tuple[Path, Path]) -> None:
    input_dir, output_dir = data
    result = run_entrypoint(cli=recorder, input_dir=input_dir, output_dir=output_dir)
    assert argv(result) == ["run", "--input", str(input_dir), "--output", str(output_dir), "--workflow", "default"]
    assert output_dir.is_dir(), "a missing output folder is created"
    assert list(output_dir.iterdir()) == [], "the write probe must not be left behind"


def test_mhub_style_options_go_to_run_and_replace_the_default_workflow(recorder: Path, data: tuple[Path, Path]) -> None:
    input_dir, output_dir = data
    result = run_entrypoint("--workflow", "rescore", "--set", "a.b=1", cli=recorder, input_dir=input_dir, output_dir=output_dir)
    assert argv(result) == ["run", "--workflow", "rescore", "--set", "a.b=1", "--input", str(input_dir), "--output", str(output_dir)]


def test_a_config_file_replaces_the_default_workflow(recorder: Path, data: tuple[Path, Path]) -> None:
    input_dir, output_dir = data
    result = run_entrypoint("run", "--config=/app/config/x.yml", "--quiet", cli=recorder, input_dir=input_dir, output_dir=output_dir)
    assert argv(result) == ["run", "--config=/app/config/x.yml", "--quiet", "--input", str(input_dir), "--output", str(output_dir)]


def test_explicit_folders_win_over_the_environment(recorder: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    input_dir, _ = data
    other_output = tmp_path / "elsewhere"
    result = run_entrypoint(
        "--input", str(input_dir), f"--output={other_output}", cli=recorder,
        input_dir=tmp_path / "not-there", output_dir=tmp_path / "not-used",
    )
    assert argv(result) == ["run", "--input", str(input_dir), f"--output={other_output}", "--workflow", "default"]
    assert other_output.is_dir() and not (tmp_path / "not-used").exists()


def test_missing_input_folder_stops_with_a_mount_hint(recorder: Path, tmp_path: Path) -> None:
    result = run_entrypoint(cli=recorder, input_dir=tmp_path / "absent", output_dir=tmp_path / "out")
    assert result.returncode == 2
    assert result.stdout == "", "the CLI must not be started"
    assert "absent does not exist" in result.stderr and "-v " in result.stderr


def test_empty_input_folder_stops(recorder: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    result = run_entrypoint(cli=recorder, input_dir=tmp_path / "in", output_dir=tmp_path / "out")
    assert result.returncode == 2 and "is empty" in result.stderr and result.stdout == ""


def test_output_that_cannot_be_a_folder_stops(recorder: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    input_dir, _ = data
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    result = run_entrypoint(cli=recorder, input_dir=input_dir, output_dir=blocker / "out")
    assert result.returncode == 2 and "cannot create output folder" in result.stderr


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_output_stops_with_a_user_hint(recorder: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    input_dir, _ = data
    output_dir = tmp_path / "ro"
    output_dir.mkdir()
    output_dir.chmod(0o555)
    try:
        result = run_entrypoint(cli=recorder, input_dir=input_dir, output_dir=output_dir)
    finally:
        output_dir.chmod(0o755)
    assert result.returncode == 2 and "not writable" in result.stderr and "--user" in result.stderr


def test_default_folders_are_the_mhub_data_layout(recorder: Path) -> None:
    if Path("/app/data/input_data").exists():
        pytest.skip("/app/data exists here; the default would be used for real")
    result = run_entrypoint(cli=recorder)
    assert result.returncode == 2
    assert "input folder /app/data/input_data does not exist" in result.stderr


def test_other_subcommands_and_commands_pass_through(recorder: Path, tmp_path: Path) -> None:
    nowhere = tmp_path / "absent"
    assert argv(run_entrypoint("models", "--json", cli=recorder, input_dir=nowhere)) == ["models", "--json"]
    assert argv(run_entrypoint("cac-mhub", "--version", cli=recorder, input_dir=nowhere)) == ["--version"]
    assert argv(run_entrypoint("echo", "plain", "command", cli=recorder, input_dir=nowhere)) == ["plain command"]
    assert argv(run_entrypoint("--help", cli=recorder, input_dir=nowhere)) == ["run", "--help"]


def test_pacs_commands_reach_the_cli_even_where_watch_is_a_system_command(recorder: Path, tmp_path: Path) -> None:
    nowhere = tmp_path / "absent"
    args = ["watch", "--pacs-config", "/app/pacs.yml", "--skip-existing"]
    assert argv(run_entrypoint(*args, cli=recorder, input_dir=nowhere)) == args
    assert argv(run_entrypoint("pacs", "status", cli=recorder, input_dir=nowhere)) == ["pacs", "status"]


def test_exit_status_of_the_cli_is_passed_on(tmp_path: Path, data: tuple[Path, Path]) -> None:
    failing = tmp_path / "failing-cli"
    failing.write_text("#!/bin/sh\nexit 3\n", encoding="utf-8")
    failing.chmod(0o755)
    input_dir, output_dir = data
    assert run_entrypoint(cli=failing, input_dir=input_dir, output_dir=output_dir).returncode == 3


def test_real_cli_through_the_entrypoint_writes_the_output_layout(tmp_path: Path, make_ct) -> None:
    """The entrypoint with the real `cac-mhub` (import workflow: no model needed) on synthetic DICOM."""
    pytest.importorskip("cac_mhub.cli")
    cli = tmp_path / "cac-mhub"
    cli.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -c '
        "'import sys; from cac_mhub.cli import main; sys.exit(main(sys.argv[1:]))' \"$@\"\n",
        encoding="utf-8",
    )
    cli.chmod(0o755)
    input_dir, output_dir = tmp_path / "input_data", tmp_path / "output_data"
    make_ct(input_dir / "series", hu=np.zeros((12, 16, 16)))
    result = run_entrypoint("--workflow", "import", "--quiet", cli=cli, input_dir=input_dir, output_dir=output_dir)
    assert result.returncode == 0, result.stderr
    reports = list(output_dir.glob("*/report.json"))
    assert len(reports) == 1
    assert json.loads(reports[0].read_text(encoding="utf-8"))["status"] == "processed"
    assert (output_dir / "cohort.csv").is_file() and (output_dir / "cohort.json").is_file()
    assert [p.name for p in output_dir.iterdir() if p.name.startswith(".")] == []
