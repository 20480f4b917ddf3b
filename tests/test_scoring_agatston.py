"""Agatston scorer on hand-built volumes whose scores are known by arithmetic."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cac_mhub.scoring.agatston import LESION_COLUMNS, _mask_indices, score
from cac_mhub.scoring.categories import cac_drs, risk_category, risk_group
from cac_mhub.scoring.naive import naive_agatston

PIXEL = 0.5  # mm: 4 pixels = 1 mm^2
SPACING = (3.0, PIXEL, PIXEL)
CAC = {1: "CAC"}


def empty(shape: tuple[int, int, int] = (3, 16, 16)) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(shape, dtype=np.int16), np.zeros(shape, dtype=np.uint8)


def test_single_lesion_area_times_weight() -> None:
    hu, labels = empty()
    hu[1, 4:6, 4:6] = 450
    labels[1, 3:7, 3:7] = 1
    result = score(hu, SPACING, labels, CAC)
    assert result.agatston == pytest.approx(1.0 * 4)  # 1 mm^2 x weight 4 x 3/3
    assert result.lesion_count == 1
    assert result.volume_mm3 == pytest.approx(4 * 0.25 * 3.0)
    row = result.lesion_rows()[0]
    assert row["slice"] == 1 and row["pixels"] == 4 and row["weight"] == 4
    assert row["centroid_zyx"] == [1.0, 4.5, 4.5]
    assert set(row) == set(LESION_COLUMNS)


def test_area_limit_is_inclusive() -> None:
    hu, labels = empty()
    hu[1, 2:4, 2:4] = 300  # exactly 1 mm^2: kept
    hu[1, 8, 8:11] = 300  # 0.75 mm^2: dropped
    labels[:] = 1
    result = score(hu, SPACING, labels, CAC)
    assert result.lesion_count == 1
    assert result.agatston == pytest.approx(3.0)


def test_area_limit_with_non_round_pixel() -> None:
    hu, labels = empty()
    hu[1, 2, 2:4] = 500  # 2 x 0.49 = 0.98 mm^2: dropped
    hu[1, 8, 8:11] = 500  # 3 x 0.49 = 1.47 mm^2: kept
    labels[:] = 1
    result = score(hu, (3.0, 0.7, 0.7), labels, CAC)
    assert result.lesion_count == 1
    assert result.agatston == pytest.approx(3 * 0.49 * 4)


def test_min_area_pixels_overrides_mm2() -> None:
    hu, labels = empty()
    hu[1, 2, 2:4] = 500
    labels[:] = 1
    assert score(hu, SPACING, labels, CAC).lesion_count == 0
    result = score(hu, SPACING, labels, CAC, min_area_pixels=2)
    assert result.lesion_count == 1
    assert result.agatston == pytest.approx(0.5 * 4)
    assert result.profile.min_area_mm2 is None and result.profile.min_area_pixels == 2


def test_diagonal_contact_joins_lesions_and_takes_the_higher_weight() -> None:
    hu, labels = empty()
    hu[1, 2:4, 2:4] = 150
    hu[1, 4:6, 4:6] = 450  # touches the first blob only at a corner
    labels[:] = 1
    result = score(hu, SPACING, labels, CAC)
    assert result.lesion_count == 1
    assert result.agatston == pytest.approx(2.0 * 4)

    hu[1, 4:6, 4:6] = 0
    hu[1, 5:7, 5:7] = 450  # one-pixel gap: two lesions
    result = score(hu, SPACING, labels, CAC)
    assert result.lesion_count == 2
    assert result.agatston == pytest.approx(1.0 * 1 + 1.0 * 4)


def test_contact_across_slices_does_not_join() -> None:
    hu, labels = empty()
    hu[0, 2:4, 2:4] = 150
    hu[1, 2:4, 2:4] = 450
    labels[:] = 1
    result = score(hu, SPACING, labels, CAC)
    assert result.lesion_count == 2
    assert result.agatston == pytest.approx(1.0 + 4.0)


@pytest.mark.parametrize(
    "peak, weight",
    [(130, 1), (199, 1), (199.9, 1), (200, 2), (299, 2), (300, 3), (399.5, 3), (400, 4), (2000, 4)],
)
def test_weight_boundaries(peak: float, weight: int) -> None:
    hu = np.zeros((1, 8, 8), dtype=np.float32)
    labels = np.ones_like(hu, dtype=np.uint8)
    hu[0, 2:4, 2:4] = 130
    hu[0, 2, 2] = peak
    result = score(hu, (3.0, PIXEL, PIXEL), labels, CAC)
    assert result.lesions["weight"].tolist() == [weight]
    assert result.agatston == pytest.approx(1.0 * weight)


def test_threshold_is_per_voxel_inside_the_mask() -> None:
    hu, labels = empty()
    labels[1, 1:9, 1:9] = 1
    hu[1, 1:9, 1:9] = 129  # mask voxels just below the threshold
    hu[1, 4:6, 4:6] = 130
    result = score(hu, SPACING, labels, CAC)
    assert result.agatston == pytest.approx(1.0)
    assert result.volume_mm3 == pytest.approx(4 * 0.25 * 3)
    hu[1, 4:6, 4:6] = 129
    assert score(hu, SPACING, labels, CAC).agatston == 0.0


def test_calcium_outside_the_mask_is_ignored() -> None:
    hu, labels = empty()
    hu[1, 2:4, 2:4] = 800
    labels[1, 10:12, 10:12] = 1
    assert score(hu, SPACING, labels, CAC).agatston == 0.0


@pytest.mark.parametrize("increment", [0.625, 1.25, 1.5, 2.5, 3.0, 5.0])
def test_normalised_by_increment(increment: float) -> None:
    hu, labels = empty()
    hu[1, 4:6, 4:6] = 250
    labels[:] = 1
    result = score(hu, (increment, PIXEL, PIXEL), labels, CAC, slice_thickness=3.0)
    assert result.agatston == pytest.approx(1.0 * 2 * increment / 3.0)
    assert result.volume_mm3 == pytest.approx(4 * 0.25 * increment)
    assert result.to_dict()["geometry"]["slice_thickness_mm"] == 3.0


def test_overlapping_reconstruction_is_not_over_counted() -> None:
    """3 mm slices every 1.5 mm see a 3 mm calcium twice; it must count once in total."""
    hu = np.zeros((4, 8, 8), dtype=np.int16)
    labels = np.ones_like(hu, dtype=np.uint8)
    hu[1:3, 2:4, 2:4] = 450  # two overlapping slices show it
    result = score(hu, (1.5, PIXEL, PIXEL), labels, CAC, slice_thickness=3.0)
    assert result.agatston == pytest.approx(4.0)  # same as one contiguous 3 mm slice
    assert result.lesion_count == 2


def test_custom_normalisation_and_threshold() -> None:
    hu, labels = empty()
    hu[1, 4:6, 4:6] = 140
    labels[:] = 1
    assert score(hu, SPACING, labels, CAC, normalise_to_mm=1.5).agatston == pytest.approx(2.0)
    assert score(hu, SPACING, labels, CAC, threshold_hu=150).agatston == 0.0


def test_volume_and_mass() -> None:
    hu, labels = empty()
    hu[1, 4:6, 4:6] = [[200, 300], [400, 500]]
    labels[:] = 1
    uncalibrated = score(hu, SPACING, labels, CAC)
    assert uncalibrated.mass_mg is None and not uncalibrated.calibrated
    voxel = 0.25 * 3.0
    assert uncalibrated.mass_hu_mm3 == pytest.approx(1400 * voxel)
    calibrated = score(hu, SPACING, labels, CAC, mass_calibration=0.8)
    # mass = c x mean HU x volume, volume in cm^3: 0.8 x 350 x (4 x 0.75 / 1000)
    assert calibrated.mass_mg == pytest.approx(0.8 * 350 * 4 * voxel / 1000)
    assert calibrated.to_dict()["mass_calibrated"] is True
    assert calibrated.lesion_rows()[0]["mean_hu"] == pytest.approx(350)


def test_empty_mask_scores_zero() -> None:
    hu, labels = empty()
    hu[:] = 900
    result = score(hu, SPACING, labels, {})
    assert result.agatston == 0.0 and result.volume_mm3 == 0.0 and result.lesion_count == 0
    assert result.risk_category == "very low" and result.risk_group == 0
    assert result.cac_drs == "A0"
    summary = result.summary_row()
    assert summary["agatston"] == 0.0 and summary["lesions"] == 0
    assert all(result.per_artery[name].agatston == 0.0 for name in result.per_artery)


def test_mask_without_calcium_scores_zero() -> None:
    hu, labels = empty()
    labels[:] = 1
    hu[:] = 100
    assert score(hu, SPACING, labels, CAC).agatston == 0.0


def test_per_artery_majority_and_ties() -> None:
    hu, labels = empty()
    names = {1: "LAD", 2: "LCX", 3: "RCA", 4: "LM"}
    hu[1, 2, 2:7] = 300  # one lesion: 3 voxels LAD, 2 voxels LCX
    labels[1, 2, 2:5], labels[1, 2, 5:7] = 1, 2
    hu[2, 8, 2:6] = 500  # tie 2:2 between RCA (3) and LM (4): smallest label value wins
    labels[2, 8, 2:4], labels[2, 8, 4:6] = 4, 3
    result = score(hu, SPACING, labels, names)
    assert result.per_artery["LAD"].agatston == pytest.approx(1.25 * 3)
    assert result.per_artery["LCX"].agatston == 0.0
    assert result.per_artery["RCA"].agatston == pytest.approx(1.0 * 4)
    assert result.per_artery["LM"].agatston == 0.0
    assert result.lesions["mixed_labels"].tolist() == [True, True]
    assert any("majority" in w for w in result.warnings)
    assert result.cac_drs == "A1/N2"


def test_per_artery_sums_to_total() -> None:
    rng = np.random.default_rng(1)
    hu = rng.integers(-100, 700, size=(6, 32, 32)).astype(np.int16)
    labels = rng.integers(0, 6, size=hu.shape).astype(np.uint8)
    names = {1: "LM", 2: "LAD", 3: "LCX", 4: "RCA", 5: "CAC"}
    result = score(hu, SPACING, labels, names, mass_calibration=0.75)
    parts = result.per_artery.values()
    assert sum(p.agatston for p in parts) == pytest.approx(result.agatston)
    assert sum(p.volume_mm3 for p in parts) == pytest.approx(result.volume_mm3)
    assert sum(p.mass_mg for p in parts) == pytest.approx(result.mass_mg)  # type: ignore[misc]
    assert sum(p.lesions for p in parts) == result.lesion_count


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("profile", ["standard", "deepcac"])
def test_matches_plain_loop_on_random_volumes(seed: int, profile: str) -> None:
    rng = np.random.default_rng(seed)
    hu = rng.normal(120, 150, size=(5, 40, 37)).round().astype(np.int16)
    labels = (rng.random(hu.shape) < 0.5).astype(np.uint8)
    spacing = (1.25, 0.68, 0.68)
    result = score(hu, spacing, labels, CAC, profile=profile)
    agatston, volume, lesions = naive_agatston(hu, spacing, labels, profile=profile)
    assert result.agatston == pytest.approx(agatston, rel=1e-12, abs=1e-9)
    assert result.volume_mm3 == pytest.approx(volume)
    assert result.lesion_count == lesions


def test_deepcac_profile_convention() -> None:
    hu = np.zeros((2, 12, 12), dtype=np.int16)
    labels = np.zeros_like(hu, dtype=np.uint8)
    labels[0, 1:3, 1:3] = 1  # 4 pixels, all 0 HU except one: weight by peak, no threshold
    hu[0, 1, 1] = 450
    labels[0, 6, 6:9] = 1  # 3 pixels: dropped (DeepCAC keeps > 3)
    hu[0, 6, 6:9] = 800
    labels[1, 5:7, 5:7] = 1  # 4 pixels below 130 HU: weight 0, not a lesion
    hu[1, 5:7, 5:7] = 120
    spacing = (2.5, 0.68, 0.68)
    result = score(hu, spacing, labels, CAC, profile="deepcac")
    factor = round(2.5 * 0.68 * 0.68 / 3, 3)
    assert factor == 0.385
    assert result.agatston == pytest.approx(round(4 * factor * 4, 3))
    assert result.lesion_count == 1
    assert result.profile.name == "deepcac" and result.to_dict()["profile"]["threshold_hu"] is None
    standard = score(hu, spacing, labels, CAC)
    # standard: the lone 450 HU pixel is below 1 mm^2; the 3-pixel 800 HU lesion (1.39 mm^2) counts
    assert standard.agatston == pytest.approx(3 * 0.4624 * 4 * 2.5 / 3)


def test_deepcac_ignores_standard_options_with_warning() -> None:
    hu, labels = empty()
    result = score(hu, SPACING, labels, CAC, profile="deepcac", threshold_hu=150.0)
    assert any("ignored options: threshold_hu" in w for w in result.warnings)


def test_kvp_adjusted_threshold() -> None:
    hu = np.zeros((1, 8, 8), dtype=np.int16)
    labels = np.ones_like(hu, dtype=np.uint8)
    hu[0, 1:3, 1:3] = 140  # above 130, below the 100 kVp threshold of 145
    hu[0, 5:7, 5:7] = 221  # weight 2 at 120 kVp; weight 1 at 100 kVp (2 from 222 HU)
    plain = score(hu, SPACING, labels, CAC, kvp=100.0)
    assert plain.agatston == pytest.approx(1 + 2)
    adjusted = score(hu, SPACING, labels, CAC, kvp=100.0, kvp_adjusted_threshold=True)
    assert adjusted.profile.threshold_hu == 145.0 and adjusted.profile.kvp_adjusted
    assert adjusted.profile.weight_cuts_hu == (145.0, 222.0, 334.0, 446.0)
    assert adjusted.agatston == pytest.approx(1.0)
    at_120 = score(hu, SPACING, labels, CAC, kvp=120.0, kvp_adjusted_threshold=True)
    assert at_120.agatston == pytest.approx(plain.agatston)
    unknown = score(hu, SPACING, labels, CAC, kvp=140.0, kvp_adjusted_threshold=True)
    assert unknown.profile.threshold_hu == 130.0 and not unknown.profile.kvp_adjusted
    assert any("no kVp-adjusted threshold" in w for w in unknown.warnings)


def test_input_layouts_give_identical_scores() -> None:
    rng = np.random.default_rng(7)
    hu = rng.integers(-50, 600, size=(3, 13, 11)).astype(np.int16)  # size not a multiple of 8
    labels = (rng.random(hu.shape) < 0.6).astype(np.uint8)
    labels[-1, -1, -1] = 1
    hu[-1, -1, -1] = 900
    reference = score(hu, SPACING, labels, CAC).to_dict()
    variants = [
        (hu.astype(np.float32), labels),
        (hu, labels.astype(bool)),
        (hu, labels.astype(np.int32)),
        (np.asfortranarray(hu), np.asfortranarray(labels)),
        (hu[:, :, ::-1][:, :, ::-1], labels[:, :, ::-1][:, :, ::-1]),
    ]
    for variant_hu, variant_labels in variants:
        names = {1: "CAC"}
        assert score(variant_hu, SPACING, variant_labels, names).to_dict() == reference


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 5), (4, 64, 64), (3, 100, 77), (5, 128, 130)])
@pytest.mark.parametrize("dtype", [np.uint8, bool, np.int16])
def test_mask_scan_finds_every_voxel(shape: tuple[int, int, int], dtype: type) -> None:
    rng = np.random.default_rng(sum(shape))
    labels = (rng.random(shape) < 0.002).astype(dtype)
    labels.reshape(-1)[[0, -1]] = 1  # first and last voxel
    assert np.array_equal(_mask_indices(labels), np.flatnonzero(labels))
    assert _mask_indices(np.zeros(shape, dtype=dtype)).size == 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda hu, lab: (hu[0], lab[0]), "3D"),
        (lambda hu, lab: (hu, lab[:, :-1]), "does not match"),
        (lambda hu, lab: (hu, lab.astype(np.float32)), "integer or bool"),
    ],
)
def test_bad_arrays_raise_clear_errors(change, message: str) -> None:  # type: ignore[no-untyped-def]
    hu, labels = empty()
    bad_hu, bad_labels = change(hu, labels)
    with pytest.raises(ValueError, match=message):
        score(bad_hu, SPACING, bad_labels, CAC)


def test_nan_inside_the_mask_raises() -> None:
    hu = np.zeros((2, 8, 8), dtype=np.float32)
    labels = np.zeros_like(hu, dtype=np.uint8)
    labels[0, 2:4, 2:4] = 1
    hu[1, 0, 0] = np.nan  # outside the mask: not used, no error
    assert score(hu, SPACING, labels, CAC).agatston == 0.0
    hu[0, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        score(hu, SPACING, labels, CAC)


@pytest.mark.parametrize("spacing", [(0.0, 0.5, 0.5), (3.0, -0.5, 0.5), (3.0, math.nan, 0.5), (3.0, 0.5)])
def test_bad_spacing_raises(spacing: tuple[float, ...]) -> None:
    hu, labels = empty()
    with pytest.raises(ValueError, match="spacing"):
        score(hu, spacing, labels, CAC)


def test_unknown_labels_and_names_raise() -> None:
    hu, labels = empty()
    labels[0, 0, 0] = 3
    with pytest.raises(ValueError, match="no name"):
        score(hu, SPACING, labels, {1: "LAD"})
    with pytest.raises(ValueError, match="not one of"):
        score(hu, SPACING, labels, {3: "AORTA"})
    with pytest.raises(ValueError, match="unknown scoring profile"):
        score(hu, SPACING, labels, {3: "LAD"}, profile="fancy")
    with pytest.raises(ValueError, match="mass_calibration"):
        score(hu, SPACING, labels, {3: "LAD"}, mass_calibration=-1.0)


@pytest.mark.parametrize(
    "value, group, category, drs",
    [
        (0.0, 0, "very low", "A0"),
        (0.2, 1, "low", "A1"),
        (99.9, 1, "low", "A1"),
        (100.0, 1, "low", "A2"),
        (100.01, 2, "moderate", "A2"),
        (299.99, 2, "moderate", "A2"),
        (300.0, 2, "moderate", "A3"),
        (300.01, 3, "high", "A3"),
    ],
)
def test_categories(value: float, group: int, category: str, drs: str) -> None:
    assert risk_group(value) == group
    assert risk_category(value) == category
    assert cac_drs(value, {}, ("LM", "LAD", "LCX", "RCA")) == drs  # no named artery: no /N


def test_drs_vessel_count() -> None:
    arteries = ("LM", "LAD", "LCX", "RCA")
    per = {"LM": 1.0, "LAD": 0.0, "LCX": 50.0, "RCA": 400.0, "CAC": 10.0}
    assert cac_drs(461.0, per, arteries) == "A3/N3"


def test_to_dict_is_json_and_summary_row_is_flat() -> None:
    hu, labels = empty()
    hu[1, 4:6, 4:6] = 450
    labels[:] = 2
    result = score(hu, SPACING, labels, {2: "RCA"}, mass_calibration=0.8, kvp=120.0)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["agatston"] == 4.0 and data["lesion_count"] == 1
    assert data["per_artery"]["RCA"]["agatston"] == 4.0
    assert data["cac_drs"] == "A1/N1" and data["risk_category"] == "low"
    assert data["profile"]["name"] == "standard" and data["profile"]["threshold_hu"] == 130.0
    assert data["lesions"][0]["artery"] == "RCA"
    row = result.summary_row()
    assert list(row) == [
        "agatston", "volume_mm3", "mass_mg", "lesions", "risk_category", "cac_drs",
        "agatston_LM", "agatston_LAD", "agatston_LCX", "agatston_RCA", "agatston_CAC", "profile",
    ]
    assert all(not isinstance(v, (dict, list)) for v in row.values())
    assert row["agatston_RCA"] == 4.0
