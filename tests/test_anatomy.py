"""Heart region, aorta, skeleton and the scoring guard: on phantoms, hand-built arrays and real chests.

Each failure that real scans showed has a case here: calcium on the spine, ribs, sternum and
costal cartilage, on the aortic wall, on ECG electrodes, on the aortic valve; a scan without a
heart (abdomen, neck, no lungs); a heart-only field of view; thick slices; low-dose noise.
"""

from __future__ import annotations

import numpy as np
import pytest

from cac_mhub.anatomy import analyse
from cac_mhub.anatomy.analysis import Anatomy
from cac_mhub.anatomy.contrast import contrast_evidence
from cac_mhub.anatomy.grid import CoarseGrid
from cac_mhub.anatomy.guard import guard, summarise
from cac_mhub.phantom.thorax import generate_thorax
from cac_mhub.scoring.agatston import score

SMALL = {"size": 256, "increment": 3.0, "z_extent_mm": 200.0, "burden": "severe"}


@pytest.fixture(scope="module")
def chest():
    phantom = generate_thorax(4242, **SMALL)
    return phantom, analyse(phantom.hu, phantom.spacing_zyx)


@pytest.fixture(scope="module")
def cardiac():
    """A heart-only (gated-like) reconstruction: lungs cut at the edges, spine at the border."""
    phantom = generate_thorax(4243, size=256, increment=3.0, burden="severe", fov_mm=210.0)
    return phantom, analyse(phantom.hu, phantom.spacing_zyx)


def everything_labelled(phantom) -> np.ndarray:
    """A model that labels every bright voxel: coronary truth plus every distractor (bone, aorta, ...)."""
    labels = phantom.labels.copy()
    labels[phantom.distractors > 0] = 5
    return labels


@pytest.mark.parametrize("case", ["chest", "cardiac"])
def test_heart_region_holds_the_coronaries_and_no_bone(case, request) -> None:
    phantom, anatomy = request.getfixturevalue(case)
    assert anatomy.found, anatomy.reason
    region = anatomy.full("region")
    coronary = phantom.labels > 0
    assert coronary.any()
    assert (region & coronary).sum() >= 0.9 * coronary.sum()
    assert not np.any(region & (phantom.distractors == 1)), "skeleton inside the heart region"
    assert not np.any(region & (phantom.distractors == 5)), "ECG electrode inside the heart region"


@pytest.mark.parametrize("case", ["chest", "cardiac"])
def test_guard_keeps_coronary_calcium_and_drops_bone_aorta_and_electrodes(case, request) -> None:
    phantom, anatomy = request.getfixturevalue(case)
    result = guard(everything_labelled(phantom), phantom.hu, anatomy)
    kept = result.kept > 0
    assert (kept & (phantom.labels > 0)).sum() >= 0.9 * (phantom.labels > 0).sum()
    for code, what in ((1, "bone"), (2, "aortic wall"), (5, "ECG electrode")):
        assert not np.any(kept & (phantom.distractors == code)), f"{what} calcium kept"
    verdicts = {c.verdict for c in result.candidates}
    assert "bone" in verdicts and "kept" in verdicts


def test_guard_summary_scores_what_it_removed(chest) -> None:
    phantom, anatomy = chest
    labels = everything_labelled(phantom)
    result = guard(labels, phantom.hu, anatomy)
    names = {1: "LM", 2: "LAD", 3: "LCX", 4: "RCA", 5: "CAC"}
    summary = summarise(result, lambda array: score(phantom.hu, phantom.spacing_zyx, array, names))
    everything = score(phantom.hu, phantom.spacing_zyx, labels, names).agatston
    kept = score(phantom.hu, phantom.spacing_zyx, result.kept, names).agatston
    removed = sum(block["agatston"] for block in summary["excluded"].values())
    assert removed > 0 and summary["excluded"]["bone"]["candidates"] > 0
    # lesions are per slice: the parts add up to the whole
    assert kept + removed == pytest.approx(everything, rel=1e-6)
    assert summary["kept"] + sum(b["candidates"] for b in summary["excluded"].values()) == summary["candidates"]


def _hand_built() -> tuple[Anatomy, np.ndarray]:
    """A 1 mm grid with one of each kind of place, so every verdict can be checked by hand."""
    shape = (20, 60, 60)
    grid = CoarseGrid.for_volume(shape, (1.0, 1.0, 1.0), target_mm=1.0)
    hu = np.full(shape, -100.0, np.float32)
    body = np.zeros(shape, bool)
    body[:, 5:55, 5:55] = True
    bone = np.zeros(shape, bool)
    bone[:, 45:52, 25:35] = True  # a vertebra
    aorta = np.zeros(shape, bool)
    aorta[:, 35:45, 40:50] = True
    mass = np.zeros(shape, bool)
    mass[2:18, 12:34, 12:34] = True  # ventricles
    region = (np.zeros(shape, bool))
    region[1:19, 8:38, 8:38] = True
    region &= ~aorta
    empty = np.zeros(shape, bool)
    anatomy = Anatomy(grid, hu, body, empty, bone, aorta, mass, region, np.full(shape[0], np.nan), True)
    return anatomy, hu


@pytest.mark.parametrize("where, verdict", [
    ((10, 10, 10), "kept"),          # epicardial fat at the heart's surface
    ((10, 48, 30), "bone"),          # on the vertebra
    ((10, 40, 45), "aorta"),         # on the aortic wall
    ((10, 2, 2), "outside_body"),    # an electrode on the skin
    ((10, 50, 10), "outside_heart"),  # in the body, away from the heart
    ((10, 23, 23), "intracardiac"),  # deep inside the ventricles: mitral annulus, papillary muscle
])
def test_each_verdict_on_hand_built_anatomy(where, verdict) -> None:
    anatomy, hu = _hand_built()
    labels = np.zeros(hu.shape, np.uint8)
    z, y, x = where
    hu[z, y - 1:y + 2, x - 1:x + 2] = 400.0
    labels[z, y - 1:y + 2, x - 1:x + 2] = 2
    result = guard(labels, hu, anatomy)
    assert [c.verdict for c in result.candidates] == [verdict]
    assert (result.kept.any()) == (verdict == "kept")


def test_thick_slices_and_low_dose_noise_still_find_the_heart() -> None:
    phantom = generate_thorax(4244, size=256, increment=5.0, z_extent_mm=220.0, noise_hu=60.0, burden="moderate")
    anatomy = analyse(phantom.hu, phantom.spacing_zyx)
    assert anatomy.found, anatomy.reason
    assert contrast_evidence(anatomy)[0] == "", "a non-contrast 5 mm scan was called contrast-enhanced"
    coronary = phantom.labels > 0
    if coronary.any():
        assert (anatomy.full("region") & coronary).sum() >= 0.8 * coronary.sum()


def test_no_heart_in_view_is_said_not_guessed(chest) -> None:
    phantom, anatomy = chest
    centre_mm = anatomy.info["centre_zyx_mm"][0]
    # the neck and upper thorax only: everything from 9 cm above the heart's centre
    upper = int((centre_mm + 90.0) / phantom.spacing_zyx[0])
    neck = analyse(phantom.hu[upper:], phantom.spacing_zyx)
    assert not neck.found and "no heart" in neck.reason
    # a solid phantom without lungs (a water cylinder with a bone)
    solid = np.full((30, 128, 128), -1000.0, np.float32)
    yy, xx = np.mgrid[:128, :128]
    solid[:, (yy - 64) ** 2 + (xx - 64) ** 2 < 55 ** 2] = 20.0
    solid[:, (yy - 90) ** 2 + (xx - 64) ** 2 < 8 ** 2] = 700.0
    none = analyse(solid, (3.0, 1.5, 1.5))
    assert not none.found and "no lungs" in none.reason


def test_contrast_is_judged_from_the_blood(chest) -> None:
    phantom, anatomy = chest
    evidence, measures = contrast_evidence(anatomy)
    assert evidence == "" and 20.0 <= measures["blood_pool_hu"] <= 70.0
    # the same chest with iodine in the heart and aorta: blood well above 150 HU
    enhanced = phantom.hu.astype(np.float32)
    enhanced[anatomy.full("heart_mass") | anatomy.full("aorta")] += 300.0
    evidence, _ = contrast_evidence(analyse(enhanced, phantom.spacing_zyx))
    assert evidence.startswith("image:")


# --- real chests: the scans that failed before ---------------------------------------------


def _real(shared_ct, name: str):
    from cac_mhub.dicom.scan import SelectionRules, scan, select
    from cac_mhub.dicom.volume import assemble

    folder = shared_ct / name
    if not folder.is_dir():
        pytest.skip(f"{name} not in the shared data")
    volume, _ = assemble(select(scan(folder).series, SelectionRules())[0])
    return volume


@pytest.mark.parametrize("name", ["ricord_chest_ge", "itkelastix_thorax_00"])
def test_real_chest_heart_region_is_in_front_of_the_spine_and_off_bone(shared_ct, name) -> None:
    volume = _real(shared_ct, name)
    anatomy = analyse(volume.hu, volume.spacing_zyx)
    assert anatomy.found, anatomy.reason
    voxel_cm3 = float(np.prod(anatomy.grid.spacing)) / 1000.0
    assert 400.0 <= anatomy.region.sum() * voxel_cm3 <= 1600.0  # a heart and its fat, not a chest
    assert not np.any(anatomy.region & anatomy.bone)
    assert anatomy.info["descending_aorta_slices"] >= 20
    evidence, measures = contrast_evidence(anatomy)
    assert evidence == "" and 20.0 <= measures["blood_pool_hu"] <= 70.0
    # every bright spot of the scan: none that the guard keeps touches bone or the aorta
    bright = ((volume.hu >= 130) & anatomy.full("body")).astype(np.uint8)
    result = guard(bright, volume.hu, anatomy)
    kept = result.kept > 0
    assert not np.any(kept & anatomy.full("bone")), "kept calcium on bone"
    assert not np.any(kept & anatomy.full("aorta")), "kept calcium on the aorta"
    assert kept.sum() < 0.01 * bright.sum()


@pytest.mark.parametrize("variant", [(0.0, 5.0, None), (0.0, 3.0, 220.0), (40.0, None, None)],
                         ids=["5mm", "cardiac-fov", "low-dose"])
def test_real_chest_variants_keep_their_heart_and_are_not_called_enhanced(shared_ct, variant) -> None:
    """What the 5 mm Siemens chests and gated calcium scans of the field looked like, made from a real chest."""
    from cac_mhub.training.recipe import _variant

    volume = _real(shared_ct, "ricord_chest_ge")
    hu, spacing = _variant(volume.hu, volume.spacing_zyx, *variant, seed=1)
    anatomy = analyse(hu, spacing)
    assert anatomy.found, anatomy.reason
    assert not np.any(anatomy.region & anatomy.bone)
    assert contrast_evidence(anatomy)[0] == ""


def test_real_abdomen_has_no_heart(shared_ct) -> None:
    volume = _real(shared_ct, "totalseg_refs/example_ct_dicom_j2k_emptyUIDs")
    anatomy = analyse(volume.hu, volume.spacing_zyx)
    assert not anatomy.found and anatomy.reason


@pytest.mark.parametrize("name", ["cta_heart_cropped", "cta_aorta_cropped"])
def test_contrast_enhanced_cta_crops_are_flagged(shared_ct, name) -> None:
    import SimpleITK as sitk

    path = shared_ct / "totalseg_refs" / name / "ct_cropped.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    image = sitk.ReadImage(str(path))
    hu = sitk.GetArrayFromImage(image)
    evidence, _ = contrast_evidence(analyse(hu, tuple(image.GetSpacing())[::-1]))
    assert evidence.startswith("image:"), evidence
