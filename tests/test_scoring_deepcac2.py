"""The deepcac2 profile: DeepCAC2's published Agatston, worked out by hand on hand-built masks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cac_mhub.scoring.agatston import published_factor, published_order, score
from cac_mhub.scoring.naive import naive_agatston

CAC = {1: "CAC"}
SPACING = (2.5, 0.7, 0.7)  # z, y, x


def hand_built() -> tuple[np.ndarray, np.ndarray]:
    """Two slices, five objects; the score of each is worked out in the test below."""
    hu = np.full((2, 16, 16), -50, dtype=np.int16)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    # slice 0, A: a plus of 5 pixels at 100 HU (below 130: DeepCAC2 still weighs it 1)
    for y, x in ((2, 3), (3, 2), (3, 3), (3, 4), (4, 3)):
        labels[0, y, x], hu[0, y, x] = 1, 100
    # slice 0, B: 3 pixels at 600 HU (<= 3 pixels: dropped)
    labels[0, 13, 12:15], hu[0, 13, 12:15] = 1, 600
    # slice 0, C: 4 pixels touching only by corners (8-connected: one object), peak 250 HU
    for i in range(4):
        labels[0, 6 + i, 8 + i] = 1
    hu[0, 7, 9] = 250
    # slice 1, D: 6 pixels, peak 450 HU; the rest of the object at -50 HU still counts
    labels[1, 2:4, 2:5] = 1
    hu[1, 2, 2] = 450
    # slice 1, E: 4 pixels, peak 199 HU
    labels[1, 12, 4:8], hu[1, 12, 4:8] = 1, 199
    return hu, labels


def test_deepcac2_score_of_hand_built_masks_worked_out_by_hand() -> None:
    hu, labels = hand_built()
    # pixel factor: round(0.7 * 0.7 * 2.5 / 3, 3) = round(0.408333, 3) = 0.408
    factor = 0.408
    assert published_factor(SPACING) == factor
    a = round(5 * factor * 1, 3)  # 2.040: 100 HU peak weighs 1 (no 130 HU gate)
    c = round(4 * factor * 2, 3)  # 3.264: peak 250 HU -> 2
    d = round(6 * factor * 4, 3)  # 9.792: peak 450 HU -> 4
    e = round(4 * factor * 1, 3)  # 1.632: peak 199 HU -> 1
    assert (a, c, d, e) == (2.04, 3.264, 9.792, 1.632)
    total = a + c + d + e  # 16.728 (B, 3 pixels, is dropped)
    assert round(total) == 17
    result = score(hu, SPACING, labels, CAC, profile="deepcac2")
    assert result.agatston == 17.0
    assert result.lesion_count == 4
    assert sorted(result.lesions["agatston"].tolist()) == sorted([a, c, d, e])
    assert result.risk_group == 1 and result.to_dict()["profile"]["name"] == "deepcac2"


def test_deepcac2_beside_the_other_profiles_on_the_same_masks() -> None:
    hu, labels = hand_built()
    deepcac = score(hu, SPACING, labels, CAC, profile="deepcac")
    # DeepCAC (v1): the 100 HU object weighs 0 and is no lesion; 3 decimals, not an integer
    assert deepcac.agatston == pytest.approx(3.264 + 9.792 + 1.632) and deepcac.lesion_count == 3
    standard = score(hu, SPACING, labels, CAC)
    # standard: only voxels >= 130 HU count: B (3 x 0.49 mm2, 600 HU), C's one 250 HU pixel
    # (0.49 mm2 < 1 mm2: dropped), D's one 450 HU pixel (dropped), E (4 x 0.49 mm2 at 199 HU)
    assert standard.agatston == pytest.approx((3 * 0.49 * 4 + 4 * 0.49 * 1) * 2.5 / 3)


@pytest.mark.parametrize(("pixels", "expected"), [(5, 2.0), (7, 4.0)])
def test_integer_total_rounds_half_to_even_as_python_round(pixels: int, expected: float) -> None:
    """Pixel factor 0.5 (1 x 1 x 1.5 mm): 5 pixels score 2.5 -> 2, 7 pixels 3.5 -> 4, as ``round``."""
    hu = np.zeros((1, 8, 8), dtype=np.int16)
    labels = np.zeros_like(hu, dtype=np.uint8)
    labels[0, 2, :pixels] = 1
    result = score(hu, (1.5, 1.0, 1.0), labels, CAC, profile="deepcac2")
    assert result.agatston == expected


def test_pixel_factor_uses_the_float32_spacing_of_the_nifti_file() -> None:
    """0.65 mm pixels at 3 mm: 0.4225 exactly; float64 0.65 rounds to 0.423, NIfTI's float32 to 0.422."""
    assert round(0.65 * 0.65 * 3.0 / 3, 3) == 0.423
    assert published_factor((3.0, 0.65, 0.65)) == 0.422
    hu = np.full((1, 8, 8), 300, dtype=np.int16)
    labels = np.zeros_like(hu, dtype=np.uint8)
    labels[0, 1:3, 1:3] = 1  # 4 pixels, weight 3: 4 * 0.422 * 3 = 5.064 -> 5
    assert score(hu, (3.0, 0.65, 0.65), labels, CAC, profile="deepcac2").lesions["agatston"].tolist() == [5.064]


def test_components_are_summed_in_the_published_order() -> None:
    """Slice by slice; within a slice by first voxel in [x, y] raster order (x before y)."""
    lesion = np.array([0, 0, 1, 1, 2])
    z = np.array([1, 1, 0, 0, 1])
    y = np.array([5, 5, 9, 9, 1])
    x = np.array([2, 3, 7, 7, 4])
    # lesion 1 is in slice 0: first; lesion 0 (x=2) comes before lesion 2 (x=4) although y is larger
    assert published_order(lesion, z, y, x, 3, (2, 16, 16)).tolist() == [1, 0, 2]


def test_options_for_the_fixed_profile_are_ignored_with_a_warning() -> None:
    hu, labels = hand_built()
    result = score(hu, SPACING, labels, CAC, profile="deepcac2", threshold_hu=150.0, min_area_mm2=2.0)
    assert result.agatston == 17.0
    assert any("deepcac2 profile is fixed; ignored options: min_area_mm2, threshold_hu" in w for w in result.warnings)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.625, 1.25, 2.5, 3.0]), st.floats(0.5, 0.98))
def test_equals_a_plain_loop_of_the_published_scorer(seed: int, increment: float, pixel: float) -> None:
    rng = np.random.default_rng(seed)
    hu = rng.normal(150, 150, size=(3, 24, 21)).round().astype(np.int16)
    labels = (rng.random(hu.shape) < 0.45).astype(np.uint8)
    spacing = (increment, pixel, pixel)
    result = score(hu, spacing, labels, CAC, profile="deepcac2")
    agatston, volume, lesions = naive_agatston(hu, spacing, labels, profile="deepcac2")
    assert result.agatston == agatston  # exactly: same rounding, same order of sums
    assert result.lesion_count == lesions
