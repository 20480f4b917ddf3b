"""HeartLocator ``method: platipy``: DeepCAC2's published localiser, detected, never downloaded.

platipy (with nnU-Net v1) is not installed here and cannot be beside the pinned packages; the
loading path runs against a stand-in ``platipy`` package that has platipy's entry point
(``platipy.imaging.projects.nnunet.run``: ``NNUNET_SETTINGS_DEFAULTS``, ``run_segmentation``) and
refuses, as platipy would download, when the weights are not where it is told to look.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cac_mhub.chain import ChainError, Context, Instance, module_class
from cac_mhub.segmentation import platipy_heart
from cac_mhub.types import Volume

STAND_IN = '''
import json, os
from pathlib import Path
import SimpleITK as sitk

NNUNET_SETTINGS_DEFAULTS = {"task": "Task400_OPEN_HEART_1FOLD", "model": "3d_lowres", "folds": None,
                            "disable_tta": False, "chk": "model_final_checkpoint"}
CALLS = []


def run_segmentation(img, settings=NNUNET_SETTINGS_DEFAULTS):
    task_path = Path(os.environ["RESULTS_FOLDER"]) / "nnUNet" / settings["model"] / settings["task"]
    if not task_path.exists():
        raise RuntimeError("would download " + settings["task"])
    CALLS.append({"settings": dict(settings), "results_folder": os.environ["RESULTS_FOLDER"],
                  "spacing": list(img.GetSpacing()), "size": list(img.GetSize())})
    return {"Struct_0": img > 500}
'''


def module(name: str, **overrides: Any):  # type: ignore[no-untyped-def]
    cls = module_class(name)
    return cls(**{**{k: o.default for k, o in cls.options.items()}, **overrides})


def install_weights(root: Path) -> Path:
    trainer = platipy_heart.trainer_folder(root)
    (trainer / "all").mkdir(parents=True)
    (trainer / "plans.pkl").write_bytes(b"plans")
    (trainer / "all" / "model_final_checkpoint.model").write_bytes(b"checkpoint")
    (trainer / "all" / "model_final_checkpoint.model.pkl").write_bytes(b"info")
    return trainer


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("RESULTS_FOLDER", "WEIGHTS_FOLDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture
def stand_in(clean_env: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    packages = clean_env / "site"
    run_dir = packages / "platipy" / "imaging" / "projects" / "nnunet"
    run_dir.mkdir(parents=True)
    for folder in (packages / "platipy", packages / "platipy" / "imaging", packages / "platipy" / "imaging" / "projects",
                   run_dir, packages / "nnunet"):
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").write_text("")
    (run_dir / "run.py").write_text(STAND_IN)
    monkeypatch.syspath_prepend(str(packages))
    yield packages
    for name in [n for n in sys.modules if n.split(".")[0] in ("platipy", "nnunet")]:
        del sys.modules[name]


def test_without_platipy_the_error_names_what_to_install_and_where_the_weights_go(clean_env: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real = platipy_heart.importlib.util.find_spec
    monkeypatch.setattr(platipy_heart.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("platipy", "nnunet") else real(name, *a))
    with pytest.raises(ChainError) as error:
        module("HeartLocator", method="platipy").setup(Context(clean_env, clean_env, {}))
    message = str(error.value)
    assert "\n" not in message and "platipy and nnunet not installed" in message
    assert "pip install 'platipy[cardiac]'" in message and "Task400_OPEN_HEART_3d_lowres.zip" in message
    assert "nnUNet/3d_lowres/" in message and "nothing is installed or downloaded" in message


def test_without_weights_the_error_names_every_place_looked(stand_in: Path, clean_env: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESULTS_FOLDER", str(clean_env / "results"))
    monkeypatch.setenv("WEIGHTS_FOLDER", str(clean_env / "mhub" / "nnUNet"))
    with pytest.raises(ChainError) as error:
        module("HeartLocator", method="platipy", heart_model=str(clean_env / "mine")).setup(
            Context(clean_env, clean_env, {}))
    message = str(error.value)
    for root in (clean_env / "mine", clean_env / "results", clean_env / "mhub", clean_env / "home" / ".platipy" / "nnUNet_models"):
        assert str(platipy_heart.trainer_folder(root)) in message
    assert "nothing is downloaded" in message and "\n" not in message
    # a half-installed model (no checkpoint) is not installed
    trainer = install_weights(clean_env / "results")
    (trainer / "all" / "model_final_checkpoint.model").unlink()
    with pytest.raises(ChainError, match="no Task400_OPEN_HEART_1FOLD 3d_lowres weights"):
        module("HeartLocator", method="platipy").setup(Context(clean_env, clean_env, {}))


def test_weights_are_found_in_platipys_and_mhubs_folders(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_weights(clean_env / "home" / ".platipy" / "nnUNet_models")
    assert platipy_heart.find_weights() == clean_env / "home" / ".platipy" / "nnUNet_models"
    install_weights(clean_env / "mhub")
    monkeypatch.setenv("WEIGHTS_FOLDER", str(clean_env / "mhub" / "nnUNet"))  # MHub's Dockerfile sets this
    assert platipy_heart.find_weights() == clean_env / "mhub"
    install_weights(clean_env / "mine")
    assert platipy_heart.find_weights(str(clean_env / "mine")) == clean_env / "mine"


def test_platipy_draws_the_heart_on_the_ct_grid(stand_in: Path, clean_env: Path) -> None:
    root = clean_env / "weights"
    install_weights(root)
    locator = module("HeartLocator", method="platipy", heart_model=str(root), on_missing="continue")
    locator.setup(Context(clean_env, clean_env, {}))
    assert locator.heart.source == "platipy" and locator.identity() == {
        "heart_model_sha256": {"all/model_final_checkpoint.model": platipy_heart.sha256_file(
            platipy_heart.trainer_folder(root) / "all" / "model_final_checkpoint.model")}}
    rng = np.random.default_rng(4)
    hu = rng.integers(-1000, 1200, size=(9, 30, 40)).astype(np.int16)  # not symmetric: a flip or transpose shows
    instance = Instance(key="k", volume=Volume(hu=hu, spacing_zyx=(3.0, 0.7, 0.65), origin_lps=(0.0, 0.0, 0.0)))
    locator.run(instance, Context(clean_env, clean_env, {}))
    np.testing.assert_array_equal(instance.heart_mask, hu > 500)
    assert instance.anatomy.info["heart_source"] == "platipy"
    report = instance.report["heart"]
    assert report["method"] == "platipy" and report["heart_model_task"] == "Task400_OPEN_HEART_1FOLD"
    json.dumps(report)
    calls = sys.modules["platipy.imaging.projects.nnunet.run"].CALLS
    assert calls[-1]["settings"]["task"] == "Task400_OPEN_HEART_1FOLD" and calls[-1]["settings"]["model"] == "3d_lowres"
    assert calls[-1]["settings"]["folds"] == "all" and calls[-1]["settings"]["disable_tta"] is False
    assert calls[-1]["results_folder"] == str(root) and "RESULTS_FOLDER" not in os.environ  # restored
    assert calls[-1]["spacing"] == [0.65, 0.7, 3.0] and calls[-1]["size"] == [40, 30, 9]


def test_published_differences_name_each_departure() -> None:
    from cac_mhub.modules.deepcac2_runner import published_differences

    assert published_differences("as_published", "platipy", True, "int16", "int16", False) == []
    differences = published_differences("predict", "image", False, "float32", "int16", True)
    assert [d.split(" ")[0] for d in differences] == ["edge_windows", "heart", "network", "resampled", "the"]
    assert "platipy's nnU-Net v1 Task400_OPEN_HEART_1FOLD 3d_lowres" in differences[1]
