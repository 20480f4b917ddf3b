"""Volume assembly: HU rescale, padding, exact geometry, and every way a stack can be wrong."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cac_mhub.dicom.scan import scan
from cac_mhub.dicom.volume import GeometryRules, VolumeRejected, assemble, decode_hu
from tests.conftest import ball_volume


def only_series(folder: Path):
    series = scan(folder).series
    assert len(series) == 1
    return series[0]


def physical_centroid(volume, threshold=150.0) -> np.ndarray:
    """Mean LPS position of voxels above threshold."""
    idx = np.argwhere(volume.hu > threshold)[:, ::-1].astype(float)  # (x, y, z) indices
    spacing = np.array(volume.spacing_xyz)
    direction = np.array(volume.direction).reshape(3, 3)
    points = np.array(volume.origin_lps) + (idx * spacing) @ direction.T
    return points.mean(axis=0)


def test_hu_rescale_padding_and_geometry_are_exact(tmp_path, make_ct):
    rng = np.random.default_rng(1)
    hu = 2.0 * rng.integers(-500, 1000, size=(12, 20, 24))  # representable with slope 2
    hu[:, :2, :] = -3024  # outside the scan circle
    files = make_ct(tmp_path / "s", hu=hu, spacing=(1.25, 0.7, 0.6), origin=(-10.0, 20.0, -50.0),
                    rescale_slope=2.0, rescale_intercept=-4096.0, pixel_padding_value=0)
    random.Random(0).shuffle(files)  # file order must not matter
    volume, warnings = assemble(only_series(tmp_path / "s"))
    expected = hu.copy()
    expected[expected < -1024] = -1024
    assert warnings == []
    assert volume.hu.shape == (12, 20, 24)
    np.testing.assert_array_equal(volume.hu, expected)
    assert volume.spacing_zyx == pytest.approx((1.25, 0.7, 0.6))
    assert volume.origin_lps == pytest.approx((-10.0, 20.0, -50.0))
    assert volume.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert volume.sop_instance_uids[0] is not None and len(set(volume.sop_instance_uids)) == 12
    assert volume.acquisition["kvp"] == 120.0 and volume.acquisition["kernel_class"] == "soft"
    assert volume.stored_dtype == "int16" == volume.pixel_type  # integer slope and intercept: a NIfTI's int16


def test_stored_pixel_type_follows_the_rescale_not_later_resampling(tmp_path, make_ct):
    make_ct(tmp_path / "f", hu=ball_volume(inside=300.5), rescale_slope=0.5, rescale_intercept=-1024.0)
    volume, _ = assemble(only_series(tmp_path / "f"))
    assert volume.stored_dtype == "float32" and volume.hu.dtype == np.float32  # half HU: float32 storage
    make_ct(tmp_path / "t", hu=tilted_ball(20.0, (3.0, 4.0, 0.0)), spacing=(2.0, 1.0, 1.0),
            origin=(-20.0, -20.0, -30.0), gantry_tilt_deg=20.0)
    volume, _ = assemble(only_series(tmp_path / "t"))
    assert volume.resampled and volume.hu.dtype == np.float32 and volume.stored_dtype == "int16"


def test_sitk_image_matches_simpleitk_reader(tmp_path, make_ct):
    make_ct(tmp_path / "s", spacing=(2.0, 0.9, 0.9), origin=(5.0, -7.0, 30.0))
    volume, _ = assemble(only_series(tmp_path / "s"))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    reference = reader.Execute()
    ours = volume.to_sitk()
    assert ours.GetSpacing() == pytest.approx(reference.GetSpacing())
    assert ours.GetOrigin() == pytest.approx(reference.GetOrigin())
    assert ours.GetDirection() == pytest.approx(reference.GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(reference))


def test_missing_slice_rejected_or_resampled_with_warning(tmp_path, make_ct):
    hu = np.stack([np.full((8, 8), 10.0 * k) for k in range(12)])
    positions = [2.5 * k for k in range(12)]
    keep = [k for k in range(12) if k != 5]
    make_ct(tmp_path / "s", hu=hu[keep], z_positions=[positions[k] for k in keep])
    series = only_series(tmp_path / "s")
    with pytest.raises(VolumeRejected, match="missing slices: 1 slice"):
        assemble(series)
    volume, warnings = assemble(series, GeometryRules(irregular="resample"))
    assert volume.hu.shape[0] == 12 and volume.resampled
    assert float(volume.hu[5].mean()) == pytest.approx(50.0)  # interpolated between 40 and 60
    assert volume.sop_instance_uids[5] is None and volume.sop_instance_uids[4] is not None
    assert any("linearly resampled" in w for w in warnings)


def test_uneven_spacing_rejected(tmp_path, make_ct):
    z = [0, 2.5, 5, 7.5, 9.0, 11.5, 14, 16.5, 19, 21.5]
    make_ct(tmp_path / "s", hu=ball_volume((10, 16, 16), radius=3), z_positions=z)
    with pytest.raises(VolumeRejected, match="uneven slice spacing"):
        assemble(only_series(tmp_path / "s"))


def test_duplicate_positions_rejected(tmp_path, make_ct):
    make_ct(tmp_path / "s", hu=ball_volume((6, 16, 16), radius=3), z_positions=[0, 0, 2.5, 2.5, 5, 5])
    with pytest.raises(VolumeRejected, match="duplicate slice positions: 6 slices at 3 distinct positions"):
        assemble(only_series(tmp_path / "s"))


def test_too_few_slices(tmp_path, make_ct):
    make_ct(tmp_path / "s", hu=ball_volume((2, 16, 16), radius=3))
    with pytest.raises(VolumeRejected, match="too few slices"):
        assemble(only_series(tmp_path / "s"))


def tilted_ball(tilt_deg: float, center, shape=(30, 40, 40), spacing=(2.0, 1.0, 1.0), origin=(-20.0, -20.0, -30.0)):
    """HU array of a ball sampled on the sheared grid a tilted gantry produces (see synth)."""
    t = math.radians(tilt_deg)
    row, col = np.array([1.0, 0, 0]), np.array([0, math.cos(t), math.sin(t)])
    k, j, i = np.indices(shape, dtype=float)
    points = (np.array(origin)[:, None, None, None] + np.array([0, 0, 1.0])[:, None, None, None] * k * spacing[0]
              + row[:, None, None, None] * i * spacing[2] + col[:, None, None, None] * j * spacing[1])
    distance = np.linalg.norm(points - np.array(center)[:, None, None, None], axis=0)
    return np.where(distance <= 8.0, 400.0, 0.0)


def test_gantry_tilt_resampled_to_orthogonal_grid_keeps_object_in_place(tmp_path, make_ct):
    center = (3.0, 4.0, 0.0)
    make_ct(tmp_path / "s", hu=tilted_ball(20.0, center), spacing=(2.0, 1.0, 1.0),
            origin=(-20.0, -20.0, -30.0), gantry_tilt_deg=20.0)
    series = only_series(tmp_path / "s")
    with pytest.raises(VolumeRejected, match="gantry tilt 20.00 deg"):
        assemble(series, GeometryRules(gantry_tilt="reject"))
    volume, warnings = assemble(series)
    assert any("gantry tilt 20.00 deg" in w for w in warnings)
    assert volume.resampled and all(u is None for u in volume.sop_instance_uids)
    direction = np.array(volume.direction).reshape(3, 3)
    np.testing.assert_allclose(direction, np.eye(3), atol=1e-9)  # orthogonal, axial
    assert volume.spacing_zyx == pytest.approx((2.0, 1.0, 1.0))
    np.testing.assert_allclose(physical_centroid(volume), center, atol=0.6)
    ball_voxels = (volume.hu > 200).sum() * 2.0
    assert ball_voxels == pytest.approx(4 / 3 * math.pi * 8**3, rel=0.1)


def test_truncated_file_fails_with_file_name(tmp_path, make_ct):
    files = make_ct(tmp_path / "s")
    data = files[3].read_bytes()
    files[3].write_bytes(data[: len(data) - 500])
    with pytest.raises(ValueError, match=files[3].name):
        assemble(only_series(tmp_path / "s"))


def test_every_transfer_syntax_decodes_to_the_same_hu(shared_ct):
    folder = shared_ct / "cornerstone_ct_transfer_syntaxes"
    reference, _ = decode_hu(folder / "CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm")
    lossy = (".4.50.", ".4.51.", ".4.53.", ".4.55.", ".4.81.", ".4.91.")
    for path in sorted(folder.glob("CTImage.dcm_*")):
        hu, _ = decode_hu(path)
        difference = np.abs(hu.astype(float) - reference)
        if any(s in path.name for s in lossy):
            assert float(difference.mean()) < 25, path.name
        else:
            assert float(difference.max()) == 0, path.name
    for name in ("CT1_J2KR", "CT2_J2KR", "CT0012.fragmented_no_bot_jpeg_baseline.51.dcm"):
        try:
            hu, ds = decode_hu(folder / name)
            assert hu.shape == (int(ds.Rows), int(ds.Columns))
        except ValueError as error:  # a multi-frame object is refused with a reason, never misread
            assert name in str(error)


def test_real_tilted_series_resampled(shared_ct):
    volume, warnings = assemble(only_series(shared_ct / "dcm_qa_ct/Philips_phantom_tilt_minus18.5"))
    assert any("gantry tilt 18.50 deg" in w for w in warnings)
    assert volume.spacing_zyx[0] == pytest.approx(2.5, abs=0.01)


def test_real_thorax_geometry(shared_ct):
    volume, warnings = assemble(only_series(shared_ct / "itkelastix_thorax_00"))
    assert volume.hu.shape == (141, 512, 512) and volume.hu.dtype == np.int16
    assert volume.spacing_zyx[0] == pytest.approx(2.0)
    assert warnings == []


def test_contrast_detected_from_image_on_real_cta_not_on_plain_thorax(shared_ct, tmp_path, make_ct):
    from cac_mhub.dicom.volume import contrast_from_image

    image = sitk.ReadImage(str(shared_ct / "totalseg_refs/cta_heart_cropped/ct_cropped.nii.gz"))
    cta = sitk.GetArrayFromImage(image)
    # through DICOM without any contrast header: only the image can tell
    make_ct(tmp_path / "cta", hu=cta, spacing=image.GetSpacing()[::-1])
    volume, _ = assemble(only_series(tmp_path / "cta"))
    assert volume.acquisition["contrast"] is False  # the header says nothing
    assert contrast_from_image(volume.hu, volume.spacing_zyx).startswith("image:")
    plain, _ = assemble(only_series(shared_ct / "itkelastix_thorax_00"))
    assert contrast_from_image(plain.hu, plain.spacing_zyx) == ""
