"""Heart localisation as a choice: the image rules, an nnU-Net v2 heart model, TotalSegmentator's weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cac_mhub.anatomy import analyse
from cac_mhub.anatomy.analysis import with_heart_mask
from cac_mhub.chain import ChainError, Context, Instance, module_class
from cac_mhub.phantom.thorax import generate_thorax
from cac_mhub.segmentation.card import ModelError
from cac_mhub.segmentation.heart_model import heart_label, ras_flips
from cac_mhub.types import Volume


def module(name: str, **overrides: Any):  # type: ignore[no-untyped-def]
    cls = module_class(name)
    options = {key: option.default for key, option in cls.options.items()}
    options.update({key: cls.options[key].check(name, key, value) for key, value in overrides.items()})
    return cls(**options)


@pytest.fixture(scope="module")
def phantom():  # type: ignore[no-untyped-def]
    return generate_thorax(4250, size=256, increment=3.0, z_extent_mm=200.0, burden="severe")


@pytest.fixture(scope="module")
def anatomy(phantom):  # type: ignore[no-untyped-def]
    return analyse(phantom.hu, phantom.spacing_zyx)


def instance_of(phantom) -> Instance:  # type: ignore[no-untyped-def]
    volume = Volume(hu=phantom.hu, spacing_zyx=phantom.spacing_zyx, origin_lps=phantom.origin_lps,
                    acquisition={"kvp": 120.0, "contrast": False})
    return Instance(key="1.2.3", volume=volume)


# ----------------------------------------------------------------------------- the pure rebuild


def test_the_image_mass_given_back_rebuilds_the_same_region(anatomy) -> None:  # type: ignore[no-untyped-def]
    rebuilt = with_heart_mask(anatomy, anatomy.full("heart_mass"), "test")
    assert rebuilt.found and np.array_equal(rebuilt.region, anatomy.region)
    assert rebuilt.info["heart_source"] == "test" and "heart_source" not in anatomy.info
    # body, bone, aorta and spine are the image's
    assert rebuilt.bone is anatomy.bone and rebuilt.aorta is anatomy.aorta


def test_an_external_heart_moves_the_region_and_its_centre(phantom, anatomy) -> None:  # type: ignore[no-untyped-def]
    mass = anatomy.full("heart_mass")
    shifted = np.zeros_like(mass)
    shift = int(round(15.0 / phantom.spacing_zyx[2]))  # 15 mm to the patient's left
    shifted[:, :, shift:] = mass[:, :, :-shift]
    moved = with_heart_mask(anatomy, shifted, "nnunet")
    assert moved.found and moved.info["heart_source"] == "nnunet"
    assert moved.region_centre()[2] > anatomy.region_centre()[2]
    assert not np.any(moved.region & moved.bone) and not np.any(moved.region & moved.lungs)


def test_no_heart_from_the_model_is_said(anatomy) -> None:  # type: ignore[no-untyped-def]
    empty = with_heart_mask(anatomy, np.zeros(anatomy.grid.full_shape, bool), "totalsegmentator")
    assert not empty.found and "totalsegmentator heart model found no heart" in empty.reason
    assert not empty.region.any()


def test_ras_flips_and_heart_labels() -> None:
    assert ras_flips((1, 0, 0, 0, 1, 0, 0, 0, 1)) == (False, True, True)  # DICOM order: flip y and x
    assert ras_flips((-1, 0, 0, 0, -1, 0, 0, 0, -1)) == (True, False, False)
    assert heart_label({"labels": {"background": 0, "Heart": 3}}, None) == 3
    assert heart_label({"labels": {"background": 0, "heart": 1, "aorta": 2}}, 2) == 2
    with pytest.raises(ModelError, match="no label named 'heart'.*heart_label"):
        heart_label({"labels": {"background": 0, "liver": 1}}, None)
    with pytest.raises(ModelError, match="heart label 7 is not a label"):
        heart_label({"labels": {"background": 0, "heart": 1}}, 7)


# ----------------------------------------------------------------------------- HeartLocator with models


class _FakeHeart:
    """A heart model that returns a given mask (the image's mass, moved): HeartLocator must use it."""

    source = "nnunet"

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask
        self.seen: list[tuple[int, ...]] = []

    def segment(self, hu: np.ndarray, spacing_zyx: Any, direction: Any) -> np.ndarray:
        self.seen.append(hu.shape)
        return self.mask

    def describe(self) -> dict[str, Any]:
        return {"heart_model": "fake"}


def test_heart_locator_takes_the_models_heart(phantom, anatomy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    locator = module("HeartLocator", method="nnunet", heart_model="unused")
    locator.heart = _FakeHeart(anatomy.full("heart_mass"))
    instance = instance_of(phantom)
    locator.run(instance, Context(tmp_path, tmp_path, {}))
    assert locator.heart.seen == [phantom.hu.shape]
    assert instance.anatomy.found and instance.anatomy.info["heart_source"] == "nnunet"
    assert instance.report["heart"]["method"] == "nnunet" and instance.report["heart"]["heart_model"] == "fake"
    assert np.array_equal(instance.anatomy.region, anatomy.region)


def _tiny_heart_model(folder: Path) -> Path:
    """An nnU-Net v2 results folder (2D, 4 mm) whose output bias says 'heart' everywhere."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("nnunetv2")
    from tests.test_nnunet_runner import label_everywhere_weights, tiny_plans

    plans = tiny_plans((4.0, 4.0))
    plans["configurations"]["2d"]["patch_size"] = [64, 64]
    state = label_everywhere_weights(plans, 2, 1)
    (folder / "fold_0").mkdir(parents=True)
    torch.save({"network_weights": state, "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": None},
               folder / "fold_0" / "checkpoint_final.pth")
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "numTraining": 0,
                                                     "labels": {"background": 0, "heart": 1}, "file_ending": ".nii.gz"}))
    return folder


@pytest.mark.slow
def test_heart_locator_with_an_nnunet_heart_model_folder(phantom, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = _tiny_heart_model(tmp_path / "Dataset901_Heart" / "nnUNetTrainer__nnUNetPlans__2d")
    locator = module("HeartLocator", method="nnunet", heart_model=str(folder.parent), device="cpu")
    locator.setup(Context(tmp_path, tmp_path, {}))
    assert locator.heart.folder == folder and locator.heart.label == 1
    instance = instance_of(phantom)
    locator.run(instance, Context(tmp_path, tmp_path, {}))
    heart = instance.report["heart"]
    assert heart["method"] == "nnunet" and heart["heart_label"] == 1
    assert list(heart["heart_model_sha256"]) == ["fold_0/checkpoint_final.pth"]
    assert instance.anatomy.info["heart_source"] == "nnunet"
    assert instance.anatomy.heart_mass.all()  # the tiny model calls everything heart


def test_nnunet_method_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="method nnunet needs heart_model"):
        module("HeartLocator", method="nnunet").setup(Context(tmp_path, tmp_path, {}))
    with pytest.raises(ChainError, match="is not an nnU-Net v2 model folder"):
        module("HeartLocator", method="nnunet", heart_model=str(tmp_path)).setup(Context(tmp_path, tmp_path, {}))


def test_totalsegmentator_is_detected_never_fetched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from cac_mhub.segmentation import heart_model

    real = importlib.util.find_spec
    monkeypatch.setattr(heart_model.importlib.util, "find_spec",
                        lambda name, *a: None if name == "totalsegmentator" else real(name, *a))
    with pytest.raises(ChainError, match="totalsegmentator package is not installed"):
        module("HeartLocator", method="totalsegmentator").setup(Context(tmp_path, tmp_path, {}))
    # "installed", but no weights on disk: a clear error naming where they were looked for
    monkeypatch.setattr(heart_model.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "totalsegmentator" else real(name, *a))
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path / "weights"))
    with pytest.raises(ChainError, match=f"no TotalSegmentator heart weights under {tmp_path / 'weights'}.*"
                                         "nothing is downloaded"):
        module("HeartLocator", method="totalsegmentator").setup(Context(tmp_path, tmp_path, {}))
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH")
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "home"))
    assert heart_model.totalsegmentator_weights_dir() == tmp_path / "home" / "nnunet" / "results"


@pytest.mark.slow
def test_totalsegmentator_weights_on_disk_are_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from cac_mhub.segmentation import heart_model

    real = importlib.util.find_spec
    monkeypatch.setattr(heart_model.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "totalsegmentator" else real(name, *a))
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "home"))
    root = tmp_path / "home" / "nnunet" / "results"
    folder = _tiny_heart_model(root / heart_model.TOTALSEG_HEART_FOLDERS[1] / "nnUNetTrainer__nnUNetPlans__2d")
    locator = module("HeartLocator", method="totalsegmentator", device="cpu")
    locator.setup(Context(tmp_path, tmp_path, {}))
    assert locator.heart.source == "totalsegmentator" and locator.heart.folder == folder
    assert locator.heart.axes == "ras"
