"""DeepCAC2 as published, run with torchio 0.19.1 itself, beside this project's backend.

The published steps (MHub ``models/deepcac2``: ``src/subject.py`` and ``src/inference.py``) are
re-run here with torchio on NIfTI files of synthetic CTs and a given heart mask, at several
spacings and in both pixel types a NIfTI converter writes (int16, float32). The backend gets the
same CT as arrays and geometry. Both use one network (the published layout with reduced widths
and seeded random weights; its size does not change what is compared). The crop must start at the
same voxel, the network's input must be the same to the bit, and the masks on the CT grid must be
identical, voxel for voxel.

torchio is a test dependency (``requirements-test.txt``, MHub's pinned 0.19.1); without it the
tests skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tio = pytest.importorskip("torchio")
sitk = pytest.importorskip("SimpleITK")

from cac_mhub.segmentation import deepcac2 as dc  # noqa: E402
from cac_mhub.segmentation.deepcac2_net import UNet3D  # noqa: E402

if tio.__version__ != "0.19.1":  # pragma: no cover - the pin is in requirements-test.txt
    pytest.skip(f"torchio {tio.__version__} installed; the published pipeline pins 0.19.1", allow_module_level=True)

SMALL = (2, 4, 8, 16)

# -------------------------------------------------------------------------- the published steps


def published_transform() -> Any:
    """``get_tfx((0.7, 0.7, 2.5), (256, 256, 58), apply_znorm=True)`` of src/subject.py."""
    return tio.Compose([
        tio.Resample(target=(0.7, 0.7, 2.5)),
        tio.CropOrPad(target_shape=(256, 256, 58), mask_name="heart"),
        tio.Clamp(out_min=-135, out_max=500, keep={"image": "image_original_hu"}),
        tio.ZNormalization(exclude=["image_original_hu"]),
        tio.RescaleIntensity(out_min_max=(0, 1), exclude=["image_original_hu"]),
    ])


def averaged(windows: list[tuple[int, int, int, np.ndarray]], shape: tuple[int, int, int]) -> np.ndarray:
    """``np.sum(out, axis=3) / div`` of src/inference.py, one x slab at a time.

    The published ``out`` holds one float64 volume per window (gigabytes); its sum over the window
    axis is a separate row sum per voxel, so summing the same rows slab by slab gives the same bits.
    """
    w, h, d = shape
    pw = windows[0][3].shape[0] if windows else 0
    result = np.zeros(shape)
    for x0 in range(0, w, 8):
        x1 = min(w, x0 + 8)
        rows = np.zeros((x1 - x0, h, d, len(windows)))
        div = np.zeros((x1 - x0, h, d))
        for k, (wi, hi, di, pred) in enumerate(windows):
            lo, hi_x = max(wi, x0), min(wi + pw, x1)
            if lo >= hi_x:
                continue
            part = pred[lo - wi:hi_x - wi]
            rows[lo - x0:hi_x - x0, hi:hi + part.shape[1], di:di + part.shape[2], k] = part
            div[lo - x0:hi_x - x0, hi:hi + part.shape[1], di:di + part.shape[2]] += 1
        div[div == 0] = 1
        result[x0:x1] = np.sum(rows, axis=3) / div
    return result


def run_published(ct_path: Path, heart_path: Path, network: Any) -> dict[str, Any]:
    """``predict_sample`` of src/inference.py on the CPU: crop start, network input, CT-grid mask."""
    subject = tio.Subject(image=tio.ScalarImage(ct_path), heart=tio.LabelMap(heart_path))
    resampled = tio.Resample(target=(0.7, 0.7, 2.5))(subject)
    padding, cropping = tio.CropOrPad((256, 256, 58), mask_name="heart").compute_crop_or_pad(resampled)
    padding, cropping = padding or (0,) * 6, cropping or (0,) * 6
    start_xyz = [cropping[2 * i] - padding[2 * i] for i in range(3)]

    subject_tfx = published_transform()(subject)
    image_np = subject_tfx.image.numpy().squeeze()
    heart_np = subject_tfx.heart.numpy().squeeze()
    w, h, d = image_np.shape
    pw, ph, pd = 64, 64, 16
    windows = []
    with torch.inference_mode():
        for wi in range(0, w - pw, 32):
            for hi in range(0, h - ph, 32):
                for di in range(0, d - pd, 8):
                    if heart_np[wi:wi + pw, hi:hi + ph, di:di + pd].sum() == 0:
                        continue
                    ins = torch.tensor(np.array(image_np[wi:wi + pw, hi:hi + ph, di:di + pd])).unsqueeze(0).unsqueeze(1)
                    pred = network(ins).sigmoid().squeeze(1).squeeze(0).detach().cpu().numpy()
                    windows.append((wi, hi, di, pred))
    out_final = (averaged(windows, (w, h, d)) > 0.5).astype(int)
    subject_tfx["cacpred"] = tio.LabelMap(tensor=torch.Tensor(out_final).unsqueeze(0), affine=subject_tfx.image.affine)
    subject_tt = tio.Resample(subject.image)(subject_tfx.apply_inverse_transform(image_interpolation="linear"))
    mask = subject_tt["cacpred"].numpy().squeeze(0).transpose(2, 1, 0)
    return {"start_zyx": tuple(start_xyz[::-1]), "image_zyx": image_np.transpose(2, 1, 0), "mask": mask,
            "windows": len(windows), "box_mask_voxels": int(out_final.sum())}


# -------------------------------------------------------------------------- synthetic CTs


def synthetic_ct(shape: tuple[int, int, int], spacing_zyx: tuple[float, float, float], heart_mm: tuple[float, float, float],
                 pixel_type: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A chest-like CT (air, body, lungs, a heart with calcium, ribs, an outside-FOV ring at -2048) and its heart."""
    rng = np.random.default_rng(seed)
    z, y, x = (np.arange(n) * s for n, s in zip(shape, spacing_zyx))
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    cy, cx = y[-1] / 2, x[-1] / 2
    hu = np.full(shape, -1000.0)
    body = ((yy - cy) / (0.45 * y[-1])) ** 2 + ((xx - cx) / (0.48 * x[-1])) ** 2 <= 1
    hu[body] = 30.0
    for side in (-1, 1):
        lung = ((yy - cy) / (0.3 * y[-1])) ** 2 + ((xx - cx - side * 0.22 * x[-1]) / (0.16 * x[-1])) ** 2 <= 1
        hu[lung] = -850.0
    ribs = body & ~(((yy - cy) / (0.42 * y[-1])) ** 2 + ((xx - cx) / (0.45 * x[-1])) ** 2 <= 1)
    hu[ribs & (np.sin(zz / 7.0) > 0.3)] = 700.0
    hz, hy, hx = heart_mm
    heart = ((zz - hz) / 16.0) ** 2 + ((yy - hy) / 20.0) ** 2 + ((xx - hx) / 22.0) ** 2 <= 1  # small: few windows
    hu[heart] = 45.0
    inside = np.argwhere(heart)
    for index in inside[rng.choice(len(inside), 12, replace=False)]:  # calcified plaques
        region = tuple(slice(max(0, i - 1), i + 2) for i in index)
        hu[region] = rng.uniform(250, 900)
    hu += rng.normal(0, 25, shape)
    hu[((yy - cy) ** 2 + (xx - cx) ** 2) > (0.5 * min(y[-1], x[-1])) ** 2] = -2048.0  # outside the FOV
    if pixel_type == "int16":
        return np.rint(hu).astype(np.int16), heart
    return hu.astype(np.float32), heart


def write_nifti(array: np.ndarray, spacing_zyx: tuple[float, float, float], origin: tuple[float, float, float],
                path: Path) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """One torch thread: small windows run fastest so (both pipelines share the setting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def network() -> Any:
    """The published layout, reduced widths, seeded; BatchNorm statistics taken from CT windows and
    the output bias set so that about a fifth of the voxels come out as calcium (a random network
    otherwise answers one value everywhere, and a constant mask would prove nothing)."""
    torch.manual_seed(21)
    model = UNet3D(1, 1, SMALL)
    spacing = (2.5, 0.7, 0.7)
    hu, heart = synthetic_ct((40, 300, 300), spacing, (50.0, 105.0, 105.0), "float32", seed=0)
    image = dc.prepare(hu, dc.nifti_geometry(spacing, (0.0, 0.0, 0.0)), heart).image
    windows = torch.stack([torch.from_numpy(np.ascontiguousarray(image[z:z + 16, y:y + 64, x:x + 64].transpose(2, 1, 0)))
                           for z, y, x in [(8, 64, 64), (16, 96, 96), (24, 128, 96), (32, 96, 128)]])[:, None]
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.momentum = None  # running statistics = the mean over these windows
            module.reset_running_stats()
    with torch.no_grad():
        model.train()(windows)
        logits = model.eval()(windows)
        model.final_conv.bias -= torch.quantile(logits.flatten(), 0.8)
    return model


# (in-plane mm, slice mm, matrix, slices, heart centre z/y/x in mm, origin)
CASES = {
    "0.60x1.25": (0.6, 1.25, 320, 96, (60.0, 70.0, 100.0), (-96.3, -121.7, -310.25)),
    "0.68x2.5": (0.68, 2.5, 352, 44, (55.0, 120.0, 120.0), (-119.68, -140.12, 17.5)),
    "0.70x3.0": (0.7, 3.0, 340, 40, (70.0, 118.0, 125.0), (-118.65, -118.65, -402.0)),
    "0.78x2.0": (0.78, 2.0, 300, 64, (64.0, 140.0, 90.0), (-117.0, -160.3, 1204.0)),
}


@pytest.mark.slow
@pytest.mark.parametrize("pixel_type", ["int16", "float32"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_backend_matches_torchio_voxel_for_voxel(case: str, pixel_type: str, network: Any, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    in_plane, thickness, matrix, slices, heart_mm, origin = CASES[case]
    spacing = (thickness, in_plane, in_plane)
    hu, heart = synthetic_ct((slices, matrix, matrix), spacing, heart_mm, pixel_type, seed=len(case) + slices)
    ct_path = write_nifti(hu, spacing, origin, tmp_path / "image.nii.gz")
    heart_path = write_nifti(heart.astype(np.uint8), spacing, origin, tmp_path / "heart.nii.gz")
    published = run_published(ct_path, heart_path, network)

    prepared = dc.prepare(hu, dc.nifti_geometry(spacing, origin), heart, pixel_type)
    assert prepared.crop.start == published["start_zyx"]
    assert np.array_equal(prepared.image, published["image_zyx"])  # the network's input, to the bit

    model = dc.DeepCac2Model.__new__(dc.DeepCac2Model)  # the loaded-weights object, without a file
    model.network, model.device, model.batch_size = network, torch.device("cpu"), 4
    model.path, model.sha256, model.features, model.published = Path("random"), "", SMALL, False
    result = model.segment(hu, spacing, origin, heart=heart, edge_windows="as_published", pixel_type=pixel_type)
    mask = result.mask
    expected = published["mask"]
    assert result.extra["windows"] == published["windows"] > 0
    assert 0 < expected.sum() < expected.size  # a mask that could differ
    differing = int(np.count_nonzero(mask != (expected > 0)))
    other = "float32" if pixel_type == "int16" else "int16"  # the test can fail: the other pixel type differs
    other_differing = int(np.count_nonzero(model.segment(hu, spacing, origin, heart=heart, edge_windows="as_published",
                                                         pixel_type=other).mask != (expected > 0)))
    print(f"| {case} ({matrix}x{matrix}x{slices}) | {pixel_type} | {prepared.crop.start} | {published['windows']} | "
          f"{int(expected.sum())} | {differing} | {other_differing} |")
    assert differing == 0
    assert other_differing > 0
