"""Shared fixtures: the real CT data folder (skips when absent) and small synthetic CT series."""

from __future__ import annotations

import os
from pathlib import Path

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
