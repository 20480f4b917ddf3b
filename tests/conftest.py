"""Shared fixtures: the real CT data folder (skips when absent) and small synthetic CT series."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from cac_mhub.dicom.synth import CtSeriesSpec, write_ct_series

SHARED_CT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"

# Runs in tests stay in the test's process unless a test asks for workers (tests/test_cohort*.py).
os.environ.setdefault("CAC_MHUB_WORKERS", "1")


@pytest.fixture
def shared_ct() -> Path:
    if not SHARED_CT.is_dir():
        pytest.skip(f"real CT data not found at {SHARED_CT}")
    return SHARED_CT


def ball_volume(shape=(16, 32, 32), center=None, radius=5.0, inside=300.0, outside=0.0) -> np.ndarray:
    """A ball of `inside` HU in `outside` HU: an object whose position we can check after resampling."""
    z, y, x = np.indices(shape, dtype=float)
    cz, cy, cx = center if center is not None else [(s - 1) / 2 for s in shape]
    hu = np.full(shape, outside, dtype=float)
    hu[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius**2] = inside
    return hu


@pytest.fixture
def make_ct(tmp_path: Path):
    """Write a small synthetic CT series: make_ct(folder, hu=None, spacing=(2.5, .8, .8), **spec)."""

    def make(folder: str | Path, hu: np.ndarray | None = None, spacing=(2.5, 0.8, 0.8), origin=(-12.0, -12.0, 0.0),
             z_positions=None, file_names: str = "IM{index:04d}.dcm", **spec_values) -> list[Path]:
        out = Path(folder) if Path(folder).is_absolute() else tmp_path / folder
        if hu is None:
            hu = ball_volume()
        return write_ct_series(hu, out, spacing, origin, CtSeriesSpec(**spec_values), z_positions=z_positions,
                               file_names=file_names)

    return make


CLI = "import sys; from cac_mhub.cli import main; sys.exit(main(sys.argv[1:]))"


@contextmanager
def cli_running_until(args: list[str], ready: Callable[[], bool], timeout: float = 120,
                      **popen) -> Iterator[subprocess.Popen]:
    """``cac-mhub ARGS`` in a subprocess, handed over once ``ready()`` holds while it still runs
    (to be killed or stopped in the middle); killed on the way out whatever happened."""
    options = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen}
    process = subprocess.Popen([sys.executable, "-c", CLI, *args], **options)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None and not ready():
            time.sleep(0.005)
        assert process.poll() is None, "the run finished before it could be interrupted"
        yield process
    finally:
        process.kill()
        process.wait()
