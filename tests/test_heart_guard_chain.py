"""HeartLocator and the scoring guard in the chain: reasons, reports, qc.png, real chests end to end."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest

from cac_mhub.chain import Context, Instance, SkipInstance, module_class
from cac_mhub.cli import main
from cac_mhub.phantom.thorax import generate_thorax
from cac_mhub.plots import EXCLUDED_COLOUR, REGION_COLOUR, lesion_overview
from cac_mhub.scoring.agatston import score
from cac_mhub.types import Labels, Volume


def module(name: str, **overrides: Any):  # type: ignore[no-untyped-def]
    cls = module_class(name)
    options = {key: option.default for key, option in cls.options.items()}
    options.update({key: cls.options[key].check(name, key, value) for key, value in overrides.items()})
    return cls(**options)


def colour_pixels(png: bytes, hex_colour: str) -> int:
    image = matplotlib.image.imread(io.BytesIO(png))[..., :3]
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(image - rgb).max(axis=-1) < 0.08).sum())


@pytest.fixture(scope="module")
def phantom():
    return generate_thorax(4250, size=256, increment=3.0, z_extent_mm=200.0, burden="severe")


def instance_of(phantom, labels: np.ndarray | None = None) -> Instance:
    volume = Volume(hu=phantom.hu, spacing_zyx=phantom.spacing_zyx, origin_lps=phantom.origin_lps,
                    slice_thickness=phantom.slice_thickness, acquisition={"kvp": 120.0, "contrast": False})
    array = phantom.labels.copy() if labels is None else labels
    names = {1: "LM", 2: "LAD", 3: "LCX", 4: "RCA", 5: "CAC"}
    return Instance(key="1.2.3", volume=volume, labels=Labels(array=array, names=names, source="test"))


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(input_dir=tmp_path / "in", output_dir=tmp_path / "out", config={})


def test_guarded_score_leaves_out_bone_and_aorta_and_says_what_it_left_out(phantom, ctx) -> None:
    everything = phantom.labels.copy()
    everything[phantom.distractors > 0] = 5
    instance = instance_of(phantom, everything)
    module("HeartLocator").run(instance, ctx)
    assert instance.anatomy.found and instance.report["heart"]["heart_found"]
    module("AgatstonCalculator").run(instance, ctx)
    truth = phantom.reference_scores().agatston
    unguarded = score(phantom.hu, phantom.spacing_zyx, everything, instance.labels.names).agatston
    guarded = instance.scores.agatston
    assert unguarded > truth and abs(guarded - truth) < 0.25 * (unguarded - truth) + 1.0
    report = json.loads(json.dumps(instance.report["guard"]))
    assert report["applied"] and report["excluded"]["bone"]["agatston"] > 0
    assert report["excluded_agatston"] > 0


def test_guard_on_needs_a_heart_region(phantom, ctx) -> None:
    instance = instance_of(phantom)
    with pytest.raises(SkipInstance, match="no heart region"):
        module("AgatstonCalculator", guard="on").run(instance, ctx)
    # without HeartLocator in the chain, 'auto' scores unguarded and says so
    module("AgatstonCalculator").run(instance, ctx)
    assert instance.report["guard"] == {"applied": False, "why": "no HeartLocator in the chain"}


def test_no_heart_in_view_skips_the_series_with_its_reason(phantom, ctx) -> None:
    centre = int(phantom.hu.shape[0] * 0.9)
    upper = generate_thorax(4250, size=256, increment=3.0, z_extent_mm=200.0, burden="severe")
    instance = instance_of(upper)
    instance.volume.hu = upper.hu[centre:]
    with pytest.raises(SkipInstance, match="no heart region: no"):
        module("HeartLocator").run(instance, ctx)
    assert instance.report["heart"]["heart_found"] is False


def test_qc_outlines_the_heart_region_and_what_was_left_out(phantom) -> None:
    from cac_mhub.anatomy import analyse
    from cac_mhub.anatomy.guard import guard

    anatomy = analyse(phantom.hu, phantom.spacing_zyx)
    everything = phantom.labels.copy()
    everything[phantom.distractors > 0] = 5
    result = guard(everything, phantom.hu, anatomy)
    names = {1: "LM", 2: "LAD", 3: "LCX", 4: "RCA", 5: "CAC"}
    scores = score(phantom.hu, phantom.spacing_zyx, result.kept, names).to_dict()
    png = lesion_overview(phantom.hu, result.kept, names, scores, phantom.spacing_zyx,
                          region=anatomy.full("region"), excluded=result.excluded_maps)
    assert colour_pixels(png, REGION_COLOUR) > 100
    assert colour_pixels(png, EXCLUDED_COLOUR) > 20
    plain = lesion_overview(phantom.hu, result.kept, names, scores, phantom.spacing_zyx)
    assert colour_pixels(plain, EXCLUDED_COLOUR) < colour_pixels(png, EXCLUDED_COLOUR)


@pytest.mark.parametrize("name", ["ricord_chest_ge", "itkelastix_thorax_00"])
def test_real_chests_without_coronary_calcium_score_near_zero(shared_ct, tmp_path, name) -> None:
    """The scans that once scored 756 (spine) and 56 (aortic wall): the default workflow, end to end."""
    source = shared_ct / name
    if not source.is_dir():
        pytest.skip(f"{name} not in the shared data")
    out = tmp_path / "out"
    assert main(["run", "--input", str(source), "--output", str(out), "--quiet"]) == 0
    reports = [json.loads(p.read_text()) for p in out.glob("*/report.json")]
    scored = [r for r in reports if r["status"] == "scored"]
    assert len(scored) == 1, [(r["status"], r["reason"]) for r in reports]
    report = scored[0]
    assert report["scores"]["agatston"] <= 10.0
    assert report["heart"]["heart_found"] and report["guard"]["applied"]
    assert (out / report["outputs"]["qc"]).is_file()
