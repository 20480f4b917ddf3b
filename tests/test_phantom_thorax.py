"""Synthetic thorax phantom: ground truth consistency, localisation, reference score, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from cac_mhub.anatomy.crop import locate_heart
from cac_mhub.phantom.thorax import CALCIUM_HU, generate_thorax

SMALL = {"z_extent_mm": 150.0, "increment": 3.0}


@pytest.fixture(scope="module")
def severe():
    return generate_thorax(11, burden="severe", **SMALL)


def test_same_seed_same_phantom() -> None:
    a = generate_thorax(5, **SMALL)
    b = generate_thorax(5, **SMALL)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.params == b.params
    assert not np.array_equal(a.hu, generate_thorax(6, **SMALL).hu)


def test_geometry_and_dtypes(severe) -> None:
    assert severe.hu.dtype == np.int16 and severe.labels.dtype == np.uint8
    assert severe.hu.shape == severe.labels.shape == severe.distractors.shape
    assert severe.hu.shape[1:] == (512, 512)
    assert severe.spacing_zyx[0] == 3.0 and severe.hu.shape[0] == 51
    assert 300 / 512 <= severe.spacing_zyx[1] <= 420 / 512
    assert severe.hu.min() >= -1024 and severe.hu.max() > 300


def test_labels_are_coronary_calcium_only(severe) -> None:
    labels = severe.labels
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}
    assert labels.any()
    assert np.all(severe.hu[labels > 0] >= CALCIUM_HU)
    assert not np.any((labels > 0) & (severe.distractors > 0))
    # Bone is always there, is bright, and is not coronary.
    assert np.any(severe.distractors == 1)
    # Every painted artery with a plaque that survived blur shows up with its own label.
    present = {severe.names[v] for v in np.unique(labels) if v}
    assert present <= {p.artery for p in severe.plaques}


def test_coronary_calcium_lies_on_the_heart(severe) -> None:
    z, y, x = np.nonzero(severe.labels)
    lps = np.stack([severe.origin_lps[0] + x * severe.spacing_zyx[2],
                    severe.origin_lps[1] + y * severe.spacing_zyx[1],
                    severe.origin_lps[2] + z * severe.spacing_zyx[0]], axis=1)
    distance = np.linalg.norm(lps - np.array(severe.heart_center_lps), axis=1)
    assert distance.max() < 95.0  # heart semi-axes <= 68 mm plus fat and vessel offsets


def test_zero_burden_has_no_coronary_calcium() -> None:
    phantom = generate_thorax(12, burden="zero", **SMALL)
    assert not phantom.labels.any() and not phantom.plaques
    assert phantom.reference_scores().agatston == 0.0


def test_reference_score_matches_per_artery_truth(severe) -> None:
    pytest.importorskip("cac_mhub.scoring.agatston")
    ref = severe.reference_scores()
    assert ref.agatston > 0
    total = sum(ref.per_artery[name].agatston for name in ("LM", "LAD", "LCX", "RCA"))
    assert total == pytest.approx(ref.agatston)
    for value, name in severe.names.items():
        has_voxels = bool(np.any(severe.labels == value))
        assert (ref.per_artery[name].volume_mm3 > 0) == has_voxels


@pytest.mark.parametrize("seed", [21, 22])
def test_heart_box_holds_every_coronary_voxel(seed: int) -> None:
    phantom = generate_thorax(seed, burden="moderate", increment=3.0, z_extent_mm=210.0)
    box = locate_heart(phantom.hu, phantom.spacing_zyx)
    assert box.method == "lungs"
    inside = phantom.labels[box.slices].astype(bool).sum()
    assert inside == phantom.labels.astype(bool).sum()
    centre_mm = [(c * s) for c, s in zip(box.center_index, phantom.spacing_zyx)]
    true_mm = [(h - o) for h, o in zip(phantom.heart_center_lps[::-1], phantom.origin_lps[::-1])]
    assert np.linalg.norm(np.subtract(centre_mm, true_mm)) < 45.0


def test_phantom_command_writes_dicom_and_truth(tmp_path: Path) -> None:
    import pydicom

    from cac_mhub.phantom.command import register, write_case

    truth = write_case(tmp_path / "case", seed=31, size=128, increment=3.0, burden="mild")
    files = sorted((tmp_path / "case" / "dicom").glob("*.dcm"))
    assert files and (tmp_path / "case" / "labels.nii.gz").is_file()
    first = pydicom.dcmread(files[0])
    assert first.Modality == "CT" and float(first.SliceThickness) == pytest.approx(truth["params"]["thickness"])
    saved = json.loads((tmp_path / "case" / "truth.json").read_text())
    assert saved["seed"] == 31 and saved["labels"]["2"] == "LAD"
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["phantom", "--output", str(tmp_path), "--seed", "3", "--size", "64"])
    assert args.func.__name__ == "cmd_phantom" and args.count == 1
