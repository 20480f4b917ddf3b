"""NnunetCacRunner and its internals, through a tiny nnU-Net v2 model built in a fixture.

The tiny model has untrained weights except for the output bias, which is set so that it
predicts one known label everywhere: every step of the real code path (card, checksums,
network construction from plans, nnU-Net predictor, resampling, crop, paste-back, 130 HU cut)
then has an exact expected result.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("nnunetv2")

from cac_mhub.chain import ChainError, Context, Instance, SkipInstance  # noqa: E402
from cac_mhub.segmentation.card import ModelError, load_card, write_card  # noqa: E402
from cac_mhub.segmentation.runner import CacModel, pick_device  # noqa: E402
from cac_mhub.types import Volume  # noqa: E402

TINY_LABEL = 2  # LAD


def tiny_plans(spacing_yx: tuple[float, float] = (1.0, 1.0)) -> dict:
    """Minimal nnU-Net v2 plans with one small 2D configuration."""
    return {
        "dataset_name": "Dataset999_Tiny", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [3.0, *spacing_yx],
        "original_median_shape_after_transp": [8, 32, 32],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 3071.0, "mean": 0.0, "median": 0.0, "min": -1024.0,
            "percentile_00_5": -1000.0, "percentile_99_5": 1500.0, "std": 400.0}},
        "configurations": {"2d": {
            "data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": [32, 32], "median_image_size_in_voxels": [32, 32], "spacing": list(spacing_yx),
            "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": 2, "features_per_stage": [4, 8], "conv_op": "torch.nn.modules.conv.Conv2d",
                    "kernel_sizes": [[3, 3], [3, 3]], "strides": [[1, 1], [2, 2]], "n_conv_per_stage": [1, 1],
                    "n_conv_per_stage_decoder": [1], "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": True}},
    }


def label_everywhere_weights(plans: dict, classes: int, label: int) -> dict:
    """Weights of the plans' 2D network whose output layer ignores the image and lets its bias
    decide: ``label`` everywhere."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = plans["configurations"]["2d"]["architecture"]
    torch.manual_seed(0)
    network = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                     1, classes, allow_init=True, deep_supervision=False)
    state = network.state_dict()
    weight_key = [k for k in state if k.startswith("decoder.seg_layers") and k.endswith("weight")][-1]
    bias_key = weight_key[: -len("weight")] + "bias"
    state[weight_key] = torch.zeros_like(state[weight_key])
    state[bias_key] = torch.full_like(state[bias_key], -5.0)
    state[bias_key][label] = 5.0
    return state


def build_tiny_model(folder: Path, localisation: dict | None = None) -> Path:
    """Write a complete model folder (plans, dataset.json, fold_0 weights, card) in a second."""
    plans = tiny_plans()
    state = label_everywhere_weights(plans, 5, TINY_LABEL)
    (folder / "fold_0").mkdir(parents=True)
    torch.save({"network_weights": state, "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "2d", "fold": "0"}, "inference_allowed_mirroring_axes": (0, 1)},
               folder / "fold_0" / "checkpoint_final.pth")
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "LM": 1, "LAD": 2, "LCX": 3, "RCA": 4},
        "numTraining": 0, "file_ending": ".nii.gz"}))
    write_card(folder, {
        "name": "tiny", "version": "0.0.1", "labels": {1: "LM", 2: "LAD", 3: "LCX", 4: "RCA"},
        "nnunet": {"configuration": "2d", "folds": ["0"], "checkpoint": "checkpoint_final.pth"},
        "localisation": localisation or {}, "postprocess": {"min_hu": 130.0},
        "training_data": "none (test fixture)", "intended_use": "tests only", "license": "MIT",
        "files": ["dataset.json", "plans.json", "fold_0/checkpoint_final.pth"]})
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def _calcium_volume() -> tuple[np.ndarray, tuple[float, float, float]]:
    rng = np.random.default_rng(3)
    hu = rng.normal(40.0, 15.0, size=(6, 40, 44)).astype(np.float32)
    hu[2, 10:13, 20:24] = 400.0
    hu[4, 30:32, 5:9] = 900.0
    return hu, (3.0, 0.7, 0.7)


def test_tiny_model_labels_exactly_the_calcium_voxels(tiny_model: Path) -> None:
    model = CacModel(tiny_model, device="cpu")
    hu, spacing = _calcium_volume()
    result = model.segment(hu, spacing, crop="none")
    assert result.array.dtype == np.uint8 and result.array.shape == hu.shape
    expected = np.where(hu >= 130.0, TINY_LABEL, 0)
    np.testing.assert_array_equal(result.array, expected)
    assert result.names == {1: "LM", 2: "LAD", 3: "LCX", 4: "RCA"}
    assert result.extra["model"] == "tiny@0.0.1"
    assert set(result.extra["sha256"]) == {"dataset.json", "plans.json", "fold_0/checkpoint_final.pth"}
    assert result.extra["folds"] == ["0"] and result.extra["device"] == "cpu"


def test_min_hu_none_keeps_network_output_everywhere(tiny_model: Path) -> None:
    model = CacModel(tiny_model, device="cpu", mirroring=False, step_size=1.0)
    hu, spacing = _calcium_volume()
    result = model.segment(hu, spacing, crop="none", min_hu=-5000.0)
    assert np.all(result.array == TINY_LABEL)
    assert result.extra["mirroring"] is False and result.extra["step_size"] == 1.0


def test_heart_crop_limits_labels_to_the_box(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "tiny_crop", localisation={"method": "lungs", "box_mm": [30.0, 20.0, 20.0]})
    model = CacModel(folder, device="cpu")
    hu = np.full((20, 64, 64), 500.0, dtype=np.float32)  # no lungs: the box falls back to the centre
    result = model.segment(hu, (3.0, 1.0, 1.0))
    (z0, z1), (y0, y1), (x0, x1) = result.extra["crop"]["box_zyx"]
    assert (z1 - z0, y1 - y0, x1 - x0) == (10, 20, 20)
    assert result.array[z0:z1, y0:y1, x0:x1].min() == TINY_LABEL
    assert result.array.sum() == TINY_LABEL * 10 * 20 * 20


def test_checksum_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "tiny")
    weights = folder / "fold_0" / "checkpoint_final.pth"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"sha256 mismatch for .*fold_0/checkpoint_final\.pth"):
        CacModel(folder, device="cpu")


def test_missing_weight_file_is_a_clear_error(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "tiny")
    (folder / "plans.json").unlink()
    with pytest.raises(ModelError, match=r"model file missing: .*plans\.json"):
        CacModel(folder, device="cpu")


def test_card_validation(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "tiny")
    card = yaml.safe_load((folder / "model.yml").read_text())
    card["labels"][2] = "LADX"
    (folder / "model.yml").write_text(yaml.safe_dump(card))
    with pytest.raises(ModelError, match="label 2 maps to 'LADX'"):
        load_card(folder)
    del card["license"]
    (folder / "model.yml").write_text(yaml.safe_dump(card))
    with pytest.raises(ModelError, match="missing required field.*license"):
        load_card(folder)


def test_unknown_fold_and_unknown_model(tiny_model: Path) -> None:
    with pytest.raises(ModelError, match="fold.*3.*not in the card"):
        CacModel(tiny_model, device="cpu", folds=["3"])
    with pytest.raises(ModelError, match="not found"):
        CacModel("no-such-model-anywhere", device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_auto_device_falls_back_to_cpu_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cac_mhub.segmentation"):
        assert pick_device("auto").type == "cpu"
    assert "no GPU found, running on CPU" in caplog.text
    with pytest.raises(ModelError, match="no CUDA GPU"):
        pick_device("cuda")


def test_module_sets_labels_on_the_volume_grid(tiny_model: Path, tmp_path: Path) -> None:
    from cac_mhub.modules.nnunet_cac_runner import NnunetCacRunner

    module = NnunetCacRunner(model=str(tiny_model), device="cpu", crop="none")
    ctx = Context(input_dir=tmp_path, output_dir=tmp_path, config={})
    module.setup(ctx)
    hu, spacing = _calcium_volume()
    instance = Instance(key="s1", volume=Volume(hu=hu.astype(np.int16), spacing_zyx=spacing, origin_lps=(0, 0, 0)))
    module.run(instance, ctx)
    labels = instance.labels
    assert labels is not None and labels.array.shape == hu.shape and labels.array.dtype == np.uint8
    assert labels.source == "model:tiny@0.0.1"
    assert labels.names[TINY_LABEL] == "LAD"
    assert labels.extra["device"] == "cpu" and "fold_0/checkpoint_final.pth" in labels.extra["sha256"]
    with pytest.raises(SkipInstance):
        module.run(Instance(key="s2"), ctx)


def test_module_setup_reports_a_broken_model_as_chain_error(tmp_path: Path) -> None:
    from cac_mhub.modules.nnunet_cac_runner import NnunetCacRunner

    folder = build_tiny_model(tmp_path / "tiny")
    (folder / "dataset.json").write_text("{}")
    with pytest.raises(ChainError, match="sha256 mismatch"):
        NnunetCacRunner(model=str(folder), device="cpu").setup(Context(tmp_path, tmp_path, {}))


def test_models_command_lists_cards(tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cac_mhub.segmentation.command import cmd_models

    assert cmd_models(argparse.Namespace(root=tiny_model.parent, verify=True)) == 0
    out = capsys.readouterr().out
    assert "tiny@0.0.1" in out and "checksums: ok" in out and "tests only" in out


DEFAULT_DICE_FLOOR = 0.5


@pytest.mark.slow
def test_default_model_finds_calcium_on_an_unseen_phantom() -> None:
    """The shipped model on a phantom seed never used in training: Dice of calcium voxels."""
    from cac_mhub.phantom.thorax import generate_thorax
    from cac_mhub.segmentation.card import models_root

    if not (models_root() / "cac-phantom-2d" / "model.yml").is_file():
        pytest.skip("default model not installed under models/")
    from cac_mhub.anatomy import analyse

    phantom = generate_thorax(777_001, increment=3.0, z_extent_mm=210.0, burden="severe")
    assert phantom.labels.any()
    model = CacModel("cac-phantom-2d", device="cpu")
    truth = phantom.labels > 0
    # as the default workflow runs it (and as it was trained): the crop centred on HeartLocator's region
    anatomy = analyse(phantom.hu, phantom.spacing_zyx)
    assert anatomy.found
    found = model.segment(phantom.hu, phantom.spacing_zyx, heart_centre=anatomy.region_centre()).array > 0
    dice = 2.0 * np.sum(truth & found) / (truth.sum() + found.sum())
    assert dice >= DEFAULT_DICE_FLOOR, f"Dice {dice:.3f} below floor {DEFAULT_DICE_FLOOR}"
    assert not np.any(found & (phantom.distractors == 1)), "calcium labelled on bone"
    # without a HeartLocator the crop is centred on the lung-based estimate: still finds the calcium
    # (it may label bone there, which only the guard with a heart region would keep out of the score)
    fallback = model.segment(phantom.hu, phantom.spacing_zyx).array > 0
    dice = 2.0 * np.sum(truth & fallback) / (truth.sum() + fallback.sum())
    assert dice >= DEFAULT_DICE_FLOOR, f"lung-centred crop: Dice {dice:.3f} below floor {DEFAULT_DICE_FLOOR}"


REAL_THORAX = Path(__file__).resolve().parents[2] / "shared/data/ct/itkelastix_thorax_00"


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_THORAX.is_dir(), reason="../shared/data/ct/itkelastix_thorax_00 not present")
def test_heart_localiser_on_a_real_thorax_ct() -> None:
    """On a real chest CT the box must hold the heart (slices 25-70 and rows 150-300 by inspection)."""
    import SimpleITK as sitk

    from cac_mhub.anatomy.crop import locate_heart

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(REAL_THORAX)))
    image = reader.Execute()
    hu = sitk.GetArrayFromImage(image)
    box = locate_heart(hu, tuple(image.GetSpacing()[::-1]))
    assert box.method == "lungs"
    zs, ys, xs = box.slices
    assert zs.start <= 25 and zs.stop >= 70
    assert ys.start <= 150 and ys.stop >= 290
    assert xs.start <= 190 and xs.stop >= 330


def test_lesion_vote_gives_a_mostly_labelled_lesion_one_label() -> None:
    from cac_mhub.segmentation.runner import vote_lesions

    calcium = np.zeros((3, 10, 10), bool)
    calcium[1, 1:4, 1:4] = True  # lesion A, 9 voxels
    calcium[1, 6:9, 6:9] = True  # lesion B, 9 voxels
    labels = np.zeros((3, 10, 10), np.uint8)
    labels[1, 1:4, 1:3] = 2  # A: 6 of 9 labelled, LAD
    labels[1, 1, 3] = 3  # one LCX voxel in A
    labels[1, 6, 6] = 4  # B: 1 of 9 labelled
    out = vote_lesions(labels, calcium)
    assert np.all(out[1, 1:4, 1:4] == 2)
    np.testing.assert_array_equal(out[1, 6:9, 6:9], labels[1, 6:9, 6:9])
    assert out[~calcium].max() == 0
