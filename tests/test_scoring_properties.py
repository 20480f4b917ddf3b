"""Invariants of the standard Agatston score, checked on random volumes with hypothesis."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cac_mhub.scoring.agatston import score
from cac_mhub.scoring.naive import naive_agatston

SHAPE = (3, 12, 12)
NAMES = {1: "LAD", 2: "RCA", 3: "CAC"}


@st.composite
def volumes(draw: st.DrawFn, shape: tuple[int, int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Random HU (-200..1000) and labels (0..3, mostly calcium-dense) with a random grid."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    hu = rng.integers(-200, 1000, size=shape).astype(np.int16)
    density = draw(st.floats(0.05, 0.9))
    labels = np.where(rng.random(shape) < density, rng.integers(1, 4, size=shape), 0).astype(np.uint8)
    pixel = draw(st.sampled_from([0.3, 0.5, 0.68, 0.977]))
    increment = draw(st.sampled_from([0.625, 1.0, 1.5, 2.5, 3.0]))
    return hu, labels, (increment, pixel, pixel)


COMMON = settings(max_examples=60, deadline=None)


@COMMON
@given(volumes(), volumes())
def test_additive_over_disjoint_lesions(a, b) -> None:  # type: ignore[no-untyped-def]
    """Two volumes side by side with a gap column: the score is the sum of both."""
    hu_a, lab_a, spacing = a
    hu_b, lab_b, _ = b
    gap_hu = np.zeros((SHAPE[0], SHAPE[1], 1), dtype=np.int16)
    gap_lab = np.zeros_like(gap_hu, dtype=np.uint8)
    hu = np.concatenate([hu_a, gap_hu, hu_b], axis=2)
    labels = np.concatenate([lab_a, gap_lab, lab_b], axis=2)
    both = score(hu, spacing, labels, NAMES)
    first, second = score(hu_a, spacing, lab_a, NAMES), score(hu_b, spacing, lab_b, NAMES)
    assert both.agatston == pytest.approx(first.agatston + second.agatston)
    assert both.volume_mm3 == pytest.approx(first.volume_mm3 + second.volume_mm3)
    assert both.lesion_count == first.lesion_count + second.lesion_count
    for name in NAMES.values():
        assert both.per_artery[name].agatston == pytest.approx(
            first.per_artery[name].agatston + second.per_artery[name].agatston
        )


@COMMON
@given(volumes(), st.floats(0.0, 1.0))
def test_mask_voxels_below_threshold_do_not_change_the_score(sample, extra) -> None:  # type: ignore[no-untyped-def]
    hu, labels, spacing = sample
    before = score(hu, spacing, labels, NAMES)
    rng = np.random.default_rng(0)
    grown = labels.copy()
    add = (hu < 130) & (rng.random(hu.shape) < extra)
    grown[add] = rng.integers(1, 4, size=int(add.sum()))
    after = score(hu, spacing, grown, NAMES)
    assert after.to_dict()["agatston"] == before.to_dict()["agatston"]
    assert after.to_dict()["per_artery"] == before.to_dict()["per_artery"]
    assert after.lesion_count == before.lesion_count


@COMMON
@given(volumes(), st.integers(0, 2**32 - 1), st.integers(0, 400))
def test_monotone_in_hu(sample, seed, max_increase) -> None:  # type: ignore[no-untyped-def]
    hu, labels, spacing = sample
    rng = np.random.default_rng(seed)
    brighter = (hu + rng.integers(0, max_increase + 1, size=hu.shape)).astype(np.int16)
    low, high = score(hu, spacing, labels, NAMES), score(brighter, spacing, labels, NAMES)
    assert high.agatston >= low.agatston - 1e-9
    assert high.volume_mm3 >= low.volume_mm3 - 1e-9


@COMMON
@given(volumes())
def test_total_does_not_depend_on_artery_labels(sample) -> None:  # type: ignore[no-untyped-def]
    hu, labels, spacing = sample
    per_artery = score(hu, spacing, labels, NAMES)
    binary = score(hu, spacing, (labels > 0).astype(np.uint8), {1: "CAC"})
    assert per_artery.agatston == pytest.approx(binary.agatston)
    assert per_artery.lesion_count == binary.lesion_count


@COMMON
@given(volumes(), st.sampled_from(["standard", "deepcac"]))
def test_equals_the_plain_loop(sample, profile) -> None:  # type: ignore[no-untyped-def]
    hu, labels, spacing = sample
    result = score(hu, spacing, labels, NAMES, profile=profile)
    agatston, volume, lesions = naive_agatston(hu, spacing, labels, profile=profile)
    assert result.agatston == pytest.approx(agatston, rel=1e-12, abs=1e-9)
    assert result.volume_mm3 == pytest.approx(volume)
    assert result.lesion_count == lesions


@COMMON
@given(volumes(), st.integers(0, 3), st.integers(0, 3))
def test_flip_and_transpose_invariant(sample, flips, turns) -> None:  # type: ignore[no-untyped-def]
    """Lesions are in-plane 8-connected sets, so in-plane flips/rotations keep the score."""
    hu, labels, spacing = sample
    base = score(hu, spacing, labels, NAMES)
    moved_hu, moved_labels = np.rot90(hu, turns, axes=(1, 2)), np.rot90(labels, turns, axes=(1, 2))
    if flips & 1:
        moved_hu, moved_labels = moved_hu[:, ::-1], moved_labels[:, ::-1]
    if flips & 2:
        moved_hu, moved_labels = moved_hu[::-1], moved_labels[::-1]
    moved = score(moved_hu, spacing, moved_labels, NAMES)
    assert moved.agatston == pytest.approx(base.agatston)
    assert moved.lesion_count == base.lesion_count
