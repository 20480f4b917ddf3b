"""Where the installation keeps its workflows (config/) and models (models/).

``CAC_MHUB_HOME`` names a folder holding ``config/`` and ``models/`` (the container sets
``/app``); ``CAC_MHUB_CONFIG_DIR`` / ``CAC_MHUB_MODELS_DIR`` override each. Without them the
repository root of this checkout is used.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def home() -> Path:
    return Path(os.environ.get("CAC_MHUB_HOME") or REPO_ROOT)


def config_dir() -> Path:
    return Path(os.environ.get("CAC_MHUB_CONFIG_DIR") or home() / "config")


def models_dir() -> Path:
    return Path(os.environ.get("CAC_MHUB_MODELS_DIR") or home() / "models")


DEFAULT_INPUT = Path("/app/data/input_data")
DEFAULT_OUTPUT = Path("/app/data/output_data")


def default_input() -> Path:
    return Path(os.environ.get("CAC_MHUB_INPUT_DIR") or DEFAULT_INPUT)


def default_output() -> Path:
    return Path(os.environ.get("CAC_MHUB_OUTPUT_DIR") or DEFAULT_OUTPUT)
