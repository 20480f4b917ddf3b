"""AgatstonCalculator as a chain module, on an Instance/Context built by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cac_mhub.chain import Context, Instance, SkipInstance, _timed, module_class
from cac_mhub.phantom.calcium import make_calcium_phantom
from cac_mhub.types import Labels, Volume


def make_module(**overrides: Any):  # type: ignore[no-untyped-def]
    cls = module_class("AgatstonCalculator")  # through the registry, as the chain does
    options = {name: option.default for name, option in cls.options.items()}
    for name, value in overrides.items():
        options[name] = cls.options[name].check("AgatstonCalculator", name, value)
    return cls(**options)


def phantom_instance(contrast: bool = False, kvp: float = 120.0) -> tuple[Instance, Any]:
    phantom = make_calcium_phantom(1.5, 3.0)
    volume = Volume(
        hu=phantom.hu,
        spacing_zyx=phantom.spacing_zyx,
        origin_lps=phantom.origin_lps,
        slice_thickness=phantom.slice_thickness,
        acquisition={"kvp": kvp, "contrast": contrast, "contrast_evidence": "ContrastBolusAgent" if contrast else ""},
    )
    labels = Labels(array=phantom.labels, names=phantom.label_names, source="file:phantom")
    return Instance(key="1.2.3", volume=volume, labels=labels), phantom


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(input_dir=tmp_path / "in", output_dir=tmp_path / "out", config={})


def test_scores_the_phantom(ctx: Context) -> None:
    instance, phantom = phantom_instance()
    make_module(mass_calibration=0.8).run(instance, ctx)
    result = instance.scores
    assert result.agatston == pytest.approx(phantom.reference["agatston"], rel=1e-3)
    assert result.lesion_count == phantom.reference["lesions"]
    data = json.loads(json.dumps(result.to_dict()))
    assert data["profile"]["name"] == "standard"
    assert data["geometry"]["slice_thickness_mm"] == 3.0 and data["geometry"]["increment_mm"] == 1.5
    assert data["mass_calibrated"] is True
    assert result.summary_row()["profile"] == "standard"
    assert instance.warnings == []


def test_deepcac_profile_is_named_in_the_result(ctx: Context) -> None:
    instance, _ = phantom_instance()
    make_module(profile="deepcac", threshold_hu=100.0).run(instance, ctx)
    assert instance.scores.to_dict()["profile"]["name"] == "deepcac"
    assert instance.scores.summary_row()["profile"] == "deepcac"
    assert any("ignored options: threshold_hu" in w for w in instance.warnings)


def test_no_labels_skips_with_reason(ctx: Context) -> None:
    instance, _ = phantom_instance()
    instance.labels = None
    with pytest.raises(SkipInstance, match="no calcium labels"):
        make_module().run(instance, ctx)


def test_contrast_is_skipped_by_default(ctx: Context) -> None:
    instance, _ = phantom_instance(contrast=True)
    module = make_module()
    _timed(instance, module, module.run, instance, ctx)
    assert instance.status == "skipped"
    assert instance.reason == (
        "AgatstonCalculator: contrast-enhanced CT: calcium scoring needs a non-contrast scan"
    )
    assert instance.scores is None


def test_contrast_scored_on_request_with_warning(ctx: Context) -> None:
    instance, phantom = phantom_instance(contrast=True)
    make_module(on_contrast="score").run(instance, ctx)
    assert instance.scores.agatston == pytest.approx(phantom.reference["agatston"], rel=1e-3)
    assert any("contrast-enhanced" in w for w in instance.warnings)


def test_kvp_adjusted_threshold_uses_the_volume_kvp(ctx: Context) -> None:
    instance, _ = phantom_instance(kvp=100.0)
    make_module(kvp_adjusted_threshold=True).run(instance, ctx)
    profile = instance.scores.to_dict()["profile"]
    assert profile["threshold_hu"] == 145.0 and profile["kvp"] == 100.0 and profile["kvp_adjusted"]


def test_options_reach_the_scorer(ctx: Context) -> None:
    instance, _ = phantom_instance()
    make_module(min_area_pixels=30, normalise_to_mm=1.5).run(instance, ctx)
    profile = instance.scores.profile
    assert profile.min_area_pixels == 30 and profile.normalise_to_mm == 1.5
    assert np.all(instance.scores.lesions["pixels"] >= 30)


def test_bad_input_fails_the_instance_with_a_clear_message(ctx: Context) -> None:
    instance, _ = phantom_instance()
    instance.labels.array = instance.labels.array[:, :-1]  # type: ignore[union-attr]
    module = make_module()
    _timed(instance, module, module.run, instance, ctx)
    assert instance.status == "failed"
    assert "does not match hu shape" in instance.reason


def test_flipped_axial_grid_is_scored(ctx: Context) -> None:
    instance, phantom = phantom_instance()
    instance.volume.direction = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0)  # type: ignore[union-attr]
    make_module().run(instance, ctx)
    assert instance.scores.agatston == pytest.approx(phantom.reference["agatston"], rel=1e-3)


def test_non_axial_grid_is_skipped(ctx: Context) -> None:
    instance, _ = phantom_instance()
    instance.volume.direction = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)  # type: ignore[union-attr]  # coronal
    with pytest.raises(SkipInstance, match="non-axial grid"):
        make_module().run(instance, ctx)
