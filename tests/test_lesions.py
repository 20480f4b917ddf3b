"""Whole lesions, the candidates no model labelled, the detector, arteries by position and the
confidence verdict: on hand-made anatomy where every answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cac_mhub.anatomy.analysis import Anatomy
from cac_mhub.anatomy.arteries import HeartFrame, artery_of, choose
from cac_mhub.anatomy.confidence import assess
from cac_mhub.anatomy.detector import Detector, load_detector, veto
from cac_mhub.anatomy.grid import CoarseGrid
from cac_mhub.anatomy.lesions import find_lesions
from cac_mhub.scoring.agatston import score

SPACING = (1.0, 1.0, 1.0)


def hand_built(noise: float = 0.0, seed: int = 0) -> tuple[Anatomy, np.ndarray]:
    """A 1 mm grid: ventricles (blood 40 HU) in epicardial fat, a vertebra behind, the aorta beside."""
    shape = (30, 80, 80)
    grid = CoarseGrid.for_volume(shape, SPACING, target_mm=1.0)
    hu = np.full(shape, -100.0, np.float32)
    body = np.zeros(shape, bool)
    body[:, 4:76, 4:76] = True
    mass = np.zeros(shape, bool)
    mass[3:27, 15:45, 15:45] = True
    hu[mass] = 40.0
    bone = np.zeros(shape, bool)
    bone[:, 62:72, 30:40] = True
    hu[bone] = 700.0
    aorta = np.zeros(shape, bool)
    aorta[:, 50:60, 50:60] = True
    hu[aorta] = 40.0
    region = np.zeros(shape, bool)
    region[1:29, 8:60, 8:60] = True
    region &= ~aorta
    if noise:
        hu += np.random.default_rng(seed).normal(0.0, noise, shape).astype(np.float32)
    empty = np.zeros(shape, bool)
    anatomy = Anatomy(grid, hu, body, empty, bone, aorta, mass, region, np.full(shape[0], np.nan), True)
    return anatomy, hu


def paint(hu: np.ndarray, box: tuple[slice, ...], value: float = 400.0) -> None:
    hu[box] = value


def test_a_partly_labelled_lesion_is_completed_to_its_whole_calcium() -> None:
    anatomy, hu = hand_built()
    lesion = (slice(10, 14), slice(10, 13), slice(20, 30))  # in the fat in front of the ventricles
    paint(hu, lesion)
    labels = np.zeros(hu.shape, np.uint8)
    labels[10, 10:13, 20:23] = 2  # the model labelled a corner of it
    found = find_lesions(labels, hu, anatomy, SPACING)
    completed = found.labels
    assert np.all(completed[lesion] == 2)
    assert found.completed_lesions == 1 and found.added_voxels == 4 * 3 * 10 - 9
    before = score(hu, SPACING, labels, {2: "LAD"}).agatston
    after = score(hu, SPACING, completed, {2: "LAD"}).agatston
    assert after > 3 * before
    assert found.candidates() == []  # labelled: not a candidate


@pytest.mark.parametrize("barrier", ["bone", "aorta", "blood_pool"])
def test_completion_stops_at_bone_aorta_and_the_blood_pool(barrier: str) -> None:
    anatomy, hu = hand_built()
    if barrier == "bone":  # a plaque in the fat touching the vertebra: the part on the bone stays out
        plaque = (slice(12, 14), slice(52, 62), slice(33, 37))
        beyond = (slice(12, 14), slice(62, 66), slice(33, 37))
    elif barrier == "aorta":
        plaque = (slice(12, 14), slice(46, 50), slice(40, 56))
        beyond = (slice(12, 14), slice(50, 53), slice(52, 56))
    else:  # running from the surface deep into the ventricles
        plaque = (slice(12, 14), slice(10, 30), slice(28, 31))
        beyond = (slice(12, 14), slice(22, 30), slice(28, 31))
    paint(hu, plaque)
    paint(hu, beyond)
    labels = np.zeros(hu.shape, np.uint8)
    labels[12, plaque[1].start, plaque[2].start] = 1
    completed = find_lesions(labels, hu, anatomy, SPACING).labels
    assert completed[plaque].any() and completed.sum() > 1
    assert not completed[beyond].any(), f"completion crossed into {barrier}"


def test_unlabelled_calcium_in_the_heart_region_is_listed_with_its_measurements() -> None:
    anatomy, hu = hand_built()
    paint(hu, (slice(8, 11), slice(11, 13), slice(30, 34)), 320.0)  # on the heart's surface, nobody labelled it
    paint(hu, (slice(8, 11), slice(70, 72), slice(10, 12)), 320.0)  # outside the region: not a candidate
    found = find_lesions(np.zeros(hu.shape, np.uint8), hu, anatomy, SPACING)
    candidates = found.candidates()
    assert len(candidates) == 1
    features = candidates[0].features
    assert features["peak_hu"] == 320.0 and features["volume_mm3"] == pytest.approx(24.0)
    assert features["agatston"] == pytest.approx(3 * 8.0 * 3 / 3.0)  # 3 slices x 8 mm2 x weight 3, 1 mm slices
    assert features["fat_share"] > 0.4
    assert -1.0 <= features["dist_mass_mm"] <= 3.0


def test_noise_speckle_of_a_low_dose_scan_is_not_a_candidate() -> None:
    anatomy, hu = hand_built(noise=70.0, seed=3)
    paint(hu, (slice(8, 12), slice(10, 13), slice(30, 35)), 600.0)
    found = find_lesions(np.zeros(hu.shape, np.uint8), hu, anatomy, SPACING)
    assert found.noise_hu > 50.0 and found.smoothing_mm > 0
    assert len(found.candidates()) == 1, [c.peak_zyx for c in found.candidates()]


def test_detector_files_round_trip_and_explain(tmp_path: Path) -> None:
    detector = Detector("t", "1", ("peak_hu", "volume_mm3"), frozenset({"volume_mm3"}), np.array([200.0, 2.0]),
                        np.array([100.0, 1.0]), np.array([2.0, 0.5]), -0.5, 0.6)
    path = tmp_path / "detector.json"
    path.write_text(json.dumps(detector.to_json()))
    loaded = load_detector(path)
    bright = {"peak_hu": 600.0, "volume_mm3": 20.0}
    assert loaded.probability(bright) == pytest.approx(detector.probability(bright))
    assert loaded.probability(bright) > 0.9 > loaded.probability({"peak_hu": 140.0, "volume_mm3": 1.0})
    assert loaded.probability({"peak_hu": float("nan"), "volume_mm3": 2.0}) == pytest.approx(
        1 / (1 + np.exp(0.5 - 0.5 * (np.log1p(2.0) - 2.0))))  # an undefined value enters as the mean
    assert loaded.reasons(bright)[0].startswith("peak_hu +")
    path.write_text(json.dumps({**detector.to_json(), "scale": [1.0]}))
    with pytest.raises(ValueError):
        load_detector(path)


def test_the_shipped_detector_loads_and_takes_a_bright_plaque_in_epicardial_fat() -> None:
    folder = Path(__file__).resolve().parents[1] / "models" / "cac-candidates"
    detector = load_detector(folder / "detector.json")
    anatomy, hu = hand_built()
    paint(hu, (slice(9, 13), slice(10, 13), slice(22, 30)), 650.0)
    candidate = find_lesions(np.zeros(hu.shape, np.uint8), hu, anatomy, SPACING).candidates()[0]
    assert detector.probability(candidate.features) >= detector.threshold


FRAME = HeartFrame(origin=np.array([100.0, 100.0, 100.0]), centre=np.array([60.0, 100.0, 120.0]),
                   long=np.array([-0.6, -0.5, 0.62]) / np.linalg.norm([-0.6, -0.5, 0.62]),
                   anterior=np.zeros(3), left=np.zeros(3), length_mm=120.0, base_mm=-50.0)


def _frame() -> HeartFrame:
    long = FRAME.long
    anterior = np.array([0.0, -1.0, 0.0]) - long * (-long[1])
    anterior /= np.linalg.norm(anterior)
    left = np.cross(long, anterior)
    left = left if left[2] > 0 else -left
    return HeartFrame(FRAME.origin, FRAME.centre, long, anterior, left, 120.0, -50.0)


@pytest.mark.parametrize("offset, artery", [
    ((0.0, 4.0, 14.0), "LM"),               # just left of the root
    ((-30.0, -35.0, -25.0), "RCA"),         # right anterior: the right atrioventricular groove
    ((5.0, -40.0, 20.0), "LAD"),            # anterior, a little left: the interventricular groove
    ((0.0, 10.0, 45.0), "LCX"),             # left and a little back: the left atrioventricular groove
])
def test_arteries_by_position_on_the_heart(offset, artery) -> None:
    frame = _frame()
    point = frame.centre + np.asarray(offset) if artery != "LM" else frame.origin + np.asarray(offset)
    assert artery_of(point, frame)[0] == artery


def test_the_model_label_stands_unless_the_position_clearly_disagrees() -> None:
    assert choose("LCX", ("LAD", 40.0)) == ("LAD", "position")
    assert choose("LCX", ("LAD", 5.0)) == ("LCX", "model")
    assert choose(None, ("RCA", 30.0)) == ("RCA", "position")
    assert choose("LAD", None) == ("LAD", "model")


def test_confidence_reasons() -> None:
    good = {"root_above_centre_mm": 40.0, "root_beside_centre_mm": 20.0, "lung_level": 0.8,
            "heart_region_cm3": 800.0, "region_on_field_edge": 0.0}
    assert assess(good, increment_mm=3.0, noise_hu=20.0)["verdict"] == "high"
    liver = {**good, "root_above_centre_mm": 120.0, "lung_level": 0.1}
    verdict = assess(liver, increment_mm=3.0, noise_hu=20.0)
    assert verdict["verdict"] == "low"
    assert {r["code"] for r in verdict["reasons"]} == {"root_position", "under_diaphragm"}
    assert assess({**good, "root_above_centre_mm": None}, increment_mm=3.0)["reasons"][0]["code"] == "no_root"
    thick_noisy = assess(good, increment_mm=5.0, noise_hu=50.0)
    assert thick_noisy["verdict"] == "medium" and {r["code"] for r in thick_noisy["reasons"]} == {"noisy", "thick_slices"}
    missed = assess(good, increment_mm=3.0, kept_agatston=0.0, unlabelled_agatston=150.0, doubtful_agatston=40.0)
    assert missed["verdict"] == "low"
    assert {r["code"] for r in missed["reasons"]} == {"unlabelled", "excluded_large"}
    cut = assess({**good, "region_on_field_edge": 0.7, "heart_centred_field_of_view": True, "lung_level": 0.0},
                 increment_mm=3.0)
    assert [r["code"] for r in cut["reasons"]] == ["field_cuts_heart"]
    weak = assess({**good, "heart_centred_field_of_view": True, "heart_weakly_wrapped": True}, increment_mm=3.0)
    assert weak["verdict"] == "medium" and [r["code"] for r in weak["reasons"]] == ["weak_heart"]
    assert assess(None, increment_mm=3.0)["verdict"] == "high"  # re-scoring: the region is not judged
    assert all(len(r["code"]) <= 16 for r in missed["reasons"] + verdict["reasons"] + cut["reasons"])


def test_the_veto_keeps_the_detector_inside_what_it_learnt() -> None:
    plaque = {"dist_bone_mm": 20.0, "peak_hu": 600.0, "noise_hu": 15.0, "volume_mm3": 80.0}
    assert veto(plaque, pixel_mm=0.7) is None
    assert veto(plaque, pixel_mm=4.0).startswith("pixels of 4.0 mm")  # a 4 mm-pixel chest
    assert veto({**plaque, "dist_bone_mm": 3.0}, pixel_mm=0.7) == "within 5 mm of bone"
    assert "posterior mediastinum" in veto({**plaque, "front_of_spine_mm": 9.0}, pixel_mm=0.7)
    assert veto({**plaque, "front_of_spine_mm": float("nan")}, pixel_mm=0.7) is None  # spine not seen
    # lidc_0306's apex at 87 HU of noise: 349 HU is noise; the same lesion on a quiet scan is not
    assert "noise SDs" in veto({**plaque, "peak_hu": 349.0, "noise_hu": 87.0}, pixel_mm=0.7)
    assert veto({**plaque, "peak_hu": 349.0}, pixel_mm=0.7) is None
    # a broad band that stays faint (lungdx_a0001's 5 mm inferior wall): partial volume, not calcium
    assert "too faint for its size" in veto({**plaque, "peak_hu": 215.0, "noise_hu": 10.0, "volume_mm3": 195.0},
                                            pixel_mm=0.7)
    assert veto({**plaque, "peak_hu": 215.0, "noise_hu": 10.0, "volume_mm3": 20.0}, pixel_mm=0.7) is None
