"""Scores on the QRM-like calcium phantom equal the analytic references (to 0.1 %)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cac_mhub.phantom.calcium import (
    INSERT_DIAMETERS_MM,
    INSERT_HU,
    RECONSTRUCTIONS_MM,
    lattice_disc_count,
    make_calcium_phantom,
    slice_fraction,
    write_calcium_phantom_dicom,
    write_phantom_reconstructions,
)
from cac_mhub.scoring.agatston import ARTERY_ORDER, score

REL = 1e-3  # the 0.1 %


def _per_insert(result, label: int) -> float:  # type: ignore[no-untyped-def]
    return float(result.lesions["agatston"][result.lesions["label"] == label].sum())


def test_lattice_disc_count_matches_brute_force() -> None:
    for radius in (0, 0.5, 1, 1.5, 2, 2.5, 3, 4.2, 5, 7.07):
        top = int(radius) + 1
        a, b = np.mgrid[-top : top + 1, -top : top + 1]
        assert lattice_disc_count(radius) == int((a**2 + b**2 <= radius**2).sum())


def test_slice_fraction() -> None:
    centres = np.array([13.5, 14.25, 15.75, 22.0, 29.25, 30.75])
    assert slice_fraction(centres, 3.0, 15.0, 30.0).tolist() == [0.0, 0.25, 0.75, 1.0, 0.75, 0.25]


@pytest.mark.parametrize("increment, thickness", RECONSTRUCTIONS_MM)
def test_exact_phantom_scores_equal_reference(increment: float, thickness: float) -> None:
    phantom = make_calcium_phantom(increment, thickness)
    result = score(phantom.hu, phantom.spacing_zyx, phantom.labels, phantom.label_names,
                   slice_thickness=phantom.slice_thickness, mass_calibration=0.8)
    ref = phantom.reference
    assert result.agatston == pytest.approx(ref["agatston"], rel=REL)
    assert result.volume_mm3 == pytest.approx(ref["volume_mm3"], rel=REL)
    assert result.mass_hu_mm3 == pytest.approx(ref["mass_hu_mm3"], rel=REL)
    assert result.mass_mg == pytest.approx(0.8 * ref["mass_hu_mm3"] / 1000, rel=REL)
    assert result.lesion_count == ref["lesions"]
    for name in ARTERY_ORDER:
        assert result.per_artery[name].agatston == pytest.approx(
            ref["per_artery"][name]["agatston"], rel=REL, abs=1e-9)
    for label, insert_ref in ref["per_insert"].items():
        assert _per_insert(result, label) == pytest.approx(insert_ref["agatston"], rel=REL, abs=1e-9)


def test_contiguous_reconstructions_all_give_area_times_weight_times_length() -> None:
    """With thickness == increment the score must not depend on the increment."""
    pixel = 0.5
    expected = 0.0
    for hu in INSERT_HU:
        weight = 1 if hu < 200 else 2 if hu < 300 else 3 if hu < 400 else 4
        for diameter in INSERT_DIAMETERS_MM:
            area = lattice_disc_count(diameter / 2 / pixel) * pixel * pixel
            expected += area * weight * 15.0 / 3.0  # 15 mm long inserts
    for increment in (0.625, 1.25, 2.5, 3.0):
        phantom = make_calcium_phantom(increment, increment, pixel_mm=pixel)
        result = score(phantom.hu, phantom.spacing_zyx, phantom.labels, phantom.label_names)
        assert result.agatston == pytest.approx(expected, rel=1e-9)
        # volume of the discretised inserts: lattice area x 15 mm, whatever the increment
        assert result.volume_mm3 == pytest.approx(
            sum(lattice_disc_count(d / 2 / pixel) * pixel**2 * 15.0 for d in INSERT_DIAMETERS_MM) * len(INSERT_HU))


def test_lattice_inserts_are_close_to_the_continuous_geometry() -> None:
    phantom = make_calcium_phantom(3.0)
    for label, ref in phantom.reference["per_insert"].items():
        insert = next(i for i in phantom.inserts if i.label == label)
        circle = math.pi * insert.radius_mm**2
        assert abs(ref["area_mm2"] - circle) <= 2 * math.pi * insert.radius_mm * 0.5  # within a pixel ring


def test_overlapping_reconstruction_is_close_to_contiguous() -> None:
    """Thick overlapping slices blur the insert ends but must not double the score."""
    contiguous = make_calcium_phantom(1.5, 1.5)
    overlapping = make_calcium_phantom(1.5, 3.0)
    a = score(contiguous.hu, contiguous.spacing_zyx, contiguous.labels, contiguous.label_names).agatston
    b = score(overlapping.hu, overlapping.spacing_zyx, overlapping.labels, overlapping.label_names).agatston
    assert abs(b - a) / a < 0.05


@pytest.mark.parametrize("increment, thickness", [(0.625, 0.625), (1.25, 2.5), (3.0, 3.0)])
def test_partial_volume_phantom_within_bounds(increment: float, thickness: float) -> None:
    phantom = make_calcium_phantom(increment, thickness, mode="partial_volume")
    result = score(phantom.hu, phantom.spacing_zyx, phantom.labels, phantom.label_names)
    for label, ref in phantom.reference["per_insert"].items():
        measured = _per_insert(result, label)
        assert ref["agatston_min"] - 1e-9 <= measured <= ref["agatston_max"] + 1e-9, ref["name"]
    # long, big, dense cylinders are within 35 % of their ideal continuous score (thick slices
    # blur small spheres far more: partial volume inflates their score, as on real scanners)
    for label, ref in phantom.reference["per_insert"].items():
        if ref["name"] in ("cyl_450HU_5mm", "cyl_800HU_5mm", "cyl_800HU_4mm"):
            measured = _per_insert(result, label)
            assert abs(measured - ref["agatston_ideal"]) / ref["agatston_ideal"] < 0.35, ref["name"]


def test_noisy_phantom_within_bounds() -> None:
    phantom = make_calcium_phantom(
        2.5, 2.5, mode="partial_volume", noise_sd_hu=10.0, seed=3, hu_values=(250, 350, 450, 800)
    )
    result = score(phantom.hu, phantom.spacing_zyx, phantom.labels, phantom.label_names)
    assert phantom.hu[phantom.labels == 0].std() > 5  # there is noise
    for label, ref in phantom.reference["per_insert"].items():
        measured = _per_insert(result, label)
        assert ref["agatston_min"] - 1e-9 <= measured <= ref["agatston_max"] + 1e-9, ref["name"]


def test_exact_mode_rejects_noise() -> None:
    with pytest.raises(ValueError, match="noise"):
        make_calcium_phantom(3.0, noise_sd_hu=5.0)


def _read_series(folder: Path) -> tuple[np.ndarray, tuple[float, float, float], list[pydicom.Dataset]]:
    """Read a CT series back with pydicom only: sort by position, apply the rescale."""
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    hu = np.stack([
        ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        for ds in datasets
    ])
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    increments = np.diff(z)
    assert np.allclose(increments, increments[0])
    dy, dx = (float(v) for v in datasets[0].PixelSpacing)
    return hu, (float(increments[0]), dy, dx), datasets


@pytest.mark.parametrize("increment, thickness", [(0.625, 0.625), (1.25, 1.25), (2.5, 2.5), (3.0, 3.0), (1.5, 3.0)])
def test_dicom_round_trip_scores_equal_reference(tmp_path: Path, increment: float, thickness: float) -> None:
    phantom = make_calcium_phantom(increment, thickness)
    paths = write_calcium_phantom_dicom(phantom, tmp_path / "series")
    assert len(paths) == phantom.hu.shape[0]
    hu, spacing, datasets = _read_series(tmp_path / "series")
    assert np.array_equal(hu, phantom.hu)
    assert spacing == pytest.approx(phantom.spacing_zyx)
    assert float(datasets[0].SliceThickness) == pytest.approx(thickness)
    assert datasets[0].Modality == "CT" and float(datasets[0].RescaleIntercept) == -1024.0
    result = score(hu, spacing, phantom.labels, phantom.label_names,
                   slice_thickness=float(datasets[0].SliceThickness))
    assert result.agatston == pytest.approx(phantom.reference["agatston"], rel=REL)
    assert result.volume_mm3 == pytest.approx(phantom.reference["volume_mm3"], rel=REL)
    assert result.lesion_count == phantom.reference["lesions"]


def test_phantom_through_the_project_dicom_reader(tmp_path: Path) -> None:
    """Contract with the importer/converter: the assembled Volume scores to the reference."""
    scan = pytest.importorskip("cac_mhub.dicom.scan")
    volume_mod = pytest.importorskip("cac_mhub.dicom.volume")
    phantom = make_calcium_phantom(1.5, 3.0)
    write_calcium_phantom_dicom(phantom, tmp_path / "in" / "series")
    found = scan.scan(tmp_path / "in").series
    assert len(found) == 1
    volume, _ = volume_mod.assemble(found[0])
    assert volume.hu.shape == phantom.hu.shape and np.array_equal(volume.hu, phantom.hu)
    assert volume.spacing_zyx == pytest.approx(phantom.spacing_zyx)
    result = score(volume.hu, volume.spacing_zyx, phantom.labels, phantom.label_names,
                   slice_thickness=volume.slice_thickness)
    assert result.agatston == pytest.approx(phantom.reference["agatston"], rel=REL)
    assert result.to_dict()["geometry"]["slice_thickness_mm"] == pytest.approx(3.0)


def test_reconstruction_set_is_one_study(tmp_path: Path) -> None:
    written = write_phantom_reconstructions(tmp_path, [(3.0, 3.0), (1.25, 2.5)])
    assert sorted(written) == ["inc1.25_thk2.5", "inc3_thk3"]
    firsts = [pydicom.dcmread(sorted((tmp_path / name).glob("*.dcm"))[0]) for name in sorted(written)]
    assert firsts[0].StudyInstanceUID == firsts[1].StudyInstanceUID
    assert firsts[0].SeriesInstanceUID != firsts[1].SeriesInstanceUID
    assert {float(ds.SliceThickness) for ds in firsts} == {2.5, 3.0}
    for name, phantom in written.items():
        hu, spacing, _ = _read_series(tmp_path / name)
        result = score(hu, spacing, phantom.labels, phantom.label_names)
        assert result.agatston == pytest.approx(phantom.reference["agatston"], rel=REL)
