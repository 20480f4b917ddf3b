"""DeepCAC2's network, weights loader and segmentation steps, without the real weights.

The full-size network is built on the meta device and compared with the published key names
and shapes (the table below: MHub models/deepcac2/src/model.py, UNET3D(1, 1) with features
64/128/256/512). A randomly initialised state dict with a reduced width goes through the real
loader and the chain on a phantom.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

torch = pytest.importorskip("torch")

from cac_mhub.chain import ChainError, Context, Instance, module_class  # noqa: E402
from cac_mhub.segmentation import deepcac2 as dc  # noqa: E402
from cac_mhub.segmentation.card import ModelError  # noqa: E402
from cac_mhub.segmentation.deepcac2_net import PUBLISHED_FEATURES, UNet3D, load_network  # noqa: E402
from cac_mhub.segmentation.deepcac2_weights import WEIGHTS_FILE  # noqa: E402
from cac_mhub.types import Volume  # noqa: E402

SMALL = (4, 8, 16, 32)

#: Every tensor of the published state dict: name, shape ("-": a scalar).
PUBLISHED_KEYS = """
downs.0.conv.0.weight                  64x1x3x3x3
downs.0.conv.1.weight                  64
downs.0.conv.1.bias                    64
downs.0.conv.1.running_mean            64
downs.0.conv.1.running_var             64
downs.0.conv.1.num_batches_tracked     -
downs.0.conv.3.weight                  64x64x3x3x3
downs.0.conv.4.weight                  64
downs.0.conv.4.bias                    64
downs.0.conv.4.running_mean            64
downs.0.conv.4.running_var             64
downs.0.conv.4.num_batches_tracked     -
downs.1.conv.0.weight                  128x64x3x3x3
downs.1.conv.1.weight                  128
downs.1.conv.1.bias                    128
downs.1.conv.1.running_mean            128
downs.1.conv.1.running_var             128
downs.1.conv.1.num_batches_tracked     -
downs.1.conv.3.weight                  128x128x3x3x3
downs.1.conv.4.weight                  128
downs.1.conv.4.bias                    128
downs.1.conv.4.running_mean            128
downs.1.conv.4.running_var             128
downs.1.conv.4.num_batches_tracked     -
downs.2.conv.0.weight                  256x128x3x3x3
downs.2.conv.1.weight                  256
downs.2.conv.1.bias                    256
downs.2.conv.1.running_mean            256
downs.2.conv.1.running_var             256
downs.2.conv.1.num_batches_tracked     -
downs.2.conv.3.weight                  256x256x3x3x3
downs.2.conv.4.weight                  256
downs.2.conv.4.bias                    256
downs.2.conv.4.running_mean            256
downs.2.conv.4.running_var             256
downs.2.conv.4.num_batches_tracked     -
downs.3.conv.0.weight                  512x256x3x3x3
downs.3.conv.1.weight                  512
downs.3.conv.1.bias                    512
downs.3.conv.1.running_mean            512
downs.3.conv.1.running_var             512
downs.3.conv.1.num_batches_tracked     -
downs.3.conv.3.weight                  512x512x3x3x3
downs.3.conv.4.weight                  512
downs.3.conv.4.bias                    512
downs.3.conv.4.running_mean            512
downs.3.conv.4.running_var             512
downs.3.conv.4.num_batches_tracked     -
ups.0.weight                           1024x512x2x2x2
ups.0.bias                             512
ups.1.conv.0.weight                    512x1024x3x3x3
ups.1.conv.1.weight                    512
ups.1.conv.1.bias                      512
ups.1.conv.1.running_mean              512
ups.1.conv.1.running_var               512
ups.1.conv.1.num_batches_tracked       -
ups.1.conv.3.weight                    512x512x3x3x3
ups.1.conv.4.weight                    512
ups.1.conv.4.bias                      512
ups.1.conv.4.running_mean              512
ups.1.conv.4.running_var               512
ups.1.conv.4.num_batches_tracked       -
ups.2.weight                           512x256x2x2x2
ups.2.bias                             256
ups.3.conv.0.weight                    256x512x3x3x3
ups.3.conv.1.weight                    256
ups.3.conv.1.bias                      256
ups.3.conv.1.running_mean              256
ups.3.conv.1.running_var               256
ups.3.conv.1.num_batches_tracked       -
ups.3.conv.3.weight                    256x256x3x3x3
ups.3.conv.4.weight                    256
ups.3.conv.4.bias                      256
ups.3.conv.4.running_mean              256
ups.3.conv.4.running_var               256
ups.3.conv.4.num_batches_tracked       -
ups.4.weight                           256x128x2x2x2
ups.4.bias                             128
ups.5.conv.0.weight                    128x256x3x3x3
ups.5.conv.1.weight                    128
ups.5.conv.1.bias                      128
ups.5.conv.1.running_mean              128
ups.5.conv.1.running_var               128
ups.5.conv.1.num_batches_tracked       -
ups.5.conv.3.weight                    128x128x3x3x3
ups.5.conv.4.weight                    128
ups.5.conv.4.bias                      128
ups.5.conv.4.running_mean              128
ups.5.conv.4.running_var               128
ups.5.conv.4.num_batches_tracked       -
ups.6.weight                           128x64x2x2x2
ups.6.bias                             64
ups.7.conv.0.weight                    64x128x3x3x3
ups.7.conv.1.weight                    64
ups.7.conv.1.bias                      64
ups.7.conv.1.running_mean              64
ups.7.conv.1.running_var               64
ups.7.conv.1.num_batches_tracked       -
ups.7.conv.3.weight                    64x64x3x3x3
ups.7.conv.4.weight                    64
ups.7.conv.4.bias                      64
ups.7.conv.4.running_mean              64
ups.7.conv.4.running_var               64
ups.7.conv.4.num_batches_tracked       -
bottleneck.conv.0.weight               1024x512x3x3x3
bottleneck.conv.1.weight               1024
bottleneck.conv.1.bias                 1024
bottleneck.conv.1.running_mean         1024
bottleneck.conv.1.running_var          1024
bottleneck.conv.1.num_batches_tracked  -
bottleneck.conv.3.weight               1024x1024x3x3x3
bottleneck.conv.4.weight               1024
bottleneck.conv.4.bias                 1024
bottleneck.conv.4.running_mean         1024
bottleneck.conv.4.running_var          1024
bottleneck.conv.4.num_batches_tracked  -
final_conv.weight                      1x64x1x1x1
final_conv.bias                        1
"""


def module(name: str, **overrides: Any):  # type: ignore[no-untyped-def]
    cls = module_class(name)
    options = {key: option.default for key, option in cls.options.items()}
    options.update({key: cls.options[key].check(name, key, value) for key, value in overrides.items()})
    return cls(**options)


def save_random_weights(folder: Path, features: tuple[int, ...] = SMALL, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    network = UNet3D(1, 1, features)
    for m in network.modules():  # non-trivial BatchNorm statistics, so eval mode matters
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WEIGHTS_FILE
    torch.save(network.state_dict(), path)
    return path


# ----------------------------------------------------------------------------- network and weights


def test_full_size_network_has_exactly_the_published_keys_and_shapes() -> None:
    expected = {}
    for line in PUBLISHED_KEYS.strip().splitlines():
        name, shape = line.split()
        expected[name] = () if shape == "-" else tuple(int(n) for n in shape.split("x"))
    with torch.device("meta"):
        network = UNet3D()
    actual = {name: tuple(t.shape) for name, t in network.state_dict().items()}
    assert list(actual) == list(expected)  # same names, same order
    assert actual == expected
    assert len(expected) == 118 and PUBLISHED_FEATURES == (64, 128, 256, 512)
    weights = sum(int(np.prod(s)) for k, s in expected.items() if not k.endswith(("running_mean", "running_var"))
                  and not k.endswith("num_batches_tracked"))
    assert weights == sum(p.numel() for p in network.parameters())


def test_random_state_dict_goes_through_the_real_loader(tmp_path: Path) -> None:
    path = save_random_weights(tmp_path / "w")
    network, digest = load_network(path, SMALL)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not network.training
    reference = UNet3D(1, 1, SMALL)
    reference.load_state_dict(torch.load(path, weights_only=True))
    x = torch.rand(2, 1, 64, 64, 16)
    with torch.inference_mode():
        assert torch.equal(network(x), reference.eval()(x))


def test_missing_weights_name_the_file_and_where_it_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAC_MHUB_MODELS_DIR", str(tmp_path / "models"))
    runner = module("DeepCac2Runner", device="cpu")
    with pytest.raises(ChainError) as error:
        runner.setup(Context(tmp_path, tmp_path, {}))
    message = str(error.value)
    assert WEIGHTS_FILE in message and str(tmp_path / "models" / "deepcac2" / WEIGHTS_FILE) in message
    assert "nothing is downloaded" in message


def test_foreign_or_mismatched_files_are_refused(tmp_path: Path) -> None:
    path = save_random_weights(tmp_path / "w")
    with pytest.raises(ModelError, match=r"wrong shape: downs\.0\.conv\.0\.weight \(4, 1, 3, 3, 3\) "
                                         r"\(expected \(64, 1, 3, 3, 3\)\)"):
        load_network(path)  # a small network is not the published one
    state = torch.load(path, weights_only=True)
    state["extra.weight"] = state.pop("final_conv.weight")
    torch.save(state, tmp_path / "renamed.pt")
    with pytest.raises(ModelError, match=r"missing: final_conv\.weight; unexpected: extra\.weight"):
        load_network(tmp_path / "renamed.pt", SMALL)
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_network(path, SMALL, sha256="0" * 64)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot be read as a state dict"):
        load_network(tmp_path / "junk.pt", SMALL)
    torch.save({"model": UNet3D(1, 1, SMALL)}, tmp_path / "pickled.pt")
    with pytest.raises(ModelError):
        load_network(tmp_path / "pickled.pt", SMALL)


# ----------------------------------------------------------------------------- the published steps


def test_windows_cover_every_voxel_when_predicting_and_leave_the_published_gap() -> None:
    def coverage(corners: list[tuple[int, int, int]]) -> np.ndarray:
        seen = np.zeros(dc.BOX_ZYX, bool)
        pz, py, px = dc.PATCH_ZYX
        for z, y, x in corners:
            seen[z:z + pz, y:y + py, x:x + px] = True
        return seen

    predict = dc.window_corners("predict")
    assert len(predict) == 7 * 7 * 7 and coverage(predict).all()
    published = dc.window_corners("as_published")
    assert len(published) == 6 * 6 * 6
    # range(0, 256 - 64, 32) ends at 160: x, y >= 224 never predicted; range(0, 58 - 16, 8) ends at 40: z >= 56
    expected = np.ones(dc.BOX_ZYX, bool)
    expected[56:], expected[:, 224:], expected[:, :, 224:] = False, False, False
    np.testing.assert_array_equal(coverage(published), expected)
    assert dc.window_starts(256, 64, 32, "as_published") == [0, 32, 64, 96, 128, 160]
    assert dc.window_starts(58, 16, 8, "predict") == [0, 8, 16, 24, 32, 40, 42]
    assert published[:3] == [(0, 0, 0), (8, 0, 0), (16, 0, 0)]  # published loop order: z innermost


def test_as_published_skips_windows_without_heart() -> None:
    heart = np.zeros(dc.BOX_ZYX, bool)
    heart[20, 100, 100] = True
    corners = dc.window_corners("as_published", heart)
    # z starts 8, 16 (windows 8-24, 16-32) hold slice 20; y and x starts 64 and 96 hold 100
    assert sorted(corners) == sorted((z, y, x) for z in (8, 16) for y in (64, 96) for x in (64, 96))
    assert len(dc.window_corners("predict", heart)) == 343  # predict mode predicts every window


def _torchio_mask_start(first: int, last: int, size: int) -> int:
    """torchio CropOrPad(mask_name=...) on one axis, as its documentation states it (re-implemented here)."""
    centre = (first + last + 1) / 2
    if (size % 2 == 0) ^ (centre % 1 == 0):
        centre -= 0.5
    return int(centre - size / 2)


@pytest.mark.parametrize("size", [256, 58, 57])
@pytest.mark.parametrize(("first", "last"), [(10, 90), (10, 91), (0, 0), (200, 411), (3, 4)])
def test_heart_box_start_follows_torchio(size: int, first: int, last: int) -> None:
    assert dc.box_start(first, last + 1, size) == _torchio_mask_start(first, last, size)


def test_box_starts_around_the_masks_bounding_box() -> None:
    mask = np.zeros((30, 300, 300), bool)
    assert dc.mask_box_start(mask) is None
    mask[5:12, 40:90, 250:300] = True  # centres 8.5, 65, 275
    assert dc.mask_box_start(mask) == (-21, -63, 147)  # 8.5 - 29 -> -20.5 down to -21; 65 - 128; 275 - 128
    assert dc.cut(np.arange(6).reshape(1, 1, 6), (0, 0, -2), (1, 1, 4)).ravel().tolist() == [0, 0, 0, 1]
    assert dc.paste(np.ones((1, 1, 4), np.uint8), (0, 0, -2), (1, 1, 3)).ravel().tolist() == [1, 1, 0]


@pytest.mark.parametrize(("n", "size", "start"), [(300, 256, 22), (301, 256, 23), (200, 256, -28), (201, 256, -28)])
def test_box_without_heart_is_centred_as_torchio_does(n: int, size: int, start: int) -> None:
    assert dc.centre_start(n, size) == start


def test_resampled_grid_is_torchios() -> None:
    ct = dc.nifti_geometry((0.625, 0.7, 0.7), (-10.0, 20.0, 30.0))
    shape, grid = dc.resampled_grid((300, 512, 512), ct)
    assert shape == (75, 512, 512) and grid.spacing_xyz == (0.7, 0.7, 2.5)
    # the first voxel's edge on the scan's edge: its centre half a target voxel in from the scan's edge
    assert grid.origin_lps[2] == pytest.approx(30.0 - 0.3125 + 1.25)
    assert grid.origin_lps[0] == pytest.approx(-10.0)
    assert dc.resampled_grid((61, 512, 512), dc.nifti_geometry((2.5, 0.6, 0.6), (0, 0, 0)))[0] == (61, 439, 439)
    # the NIfTI's float32 geometry
    assert dc.nifti_geometry((2.5, 0.7, 0.7), (0.1, 0, 0)).spacing_xyz[0] == float(np.float32(0.7))


def test_resampling_is_linear_and_follows_the_pixel_type() -> None:
    rng = np.random.default_rng(1)
    hu = rng.normal(0, 300, size=(12, 20, 18)).astype(np.float32)
    ct = dc.Geometry((0.58, 0.58, 1.25), (0.0, 0.0, 0.0))
    shape, grid = dc.resampled_grid(hu.shape, ct)
    out = sitk_array(dc.resample(dc.as_image(hu, ct), shape, grid))
    # independent: source index (j + 0.5) * t / s - 0.5, edge value within half a voxel, 0 beyond
    coords = [(np.arange(n) + 0.5) * t / s - 0.5 for n, t, s in zip(shape, dc.SPACING_ZYX, (1.25, 0.58, 0.58))]
    expected = ndimage.map_coordinates(hu, np.meshgrid(*coords, indexing="ij"), order=1, mode="nearest")
    inside = np.ones(shape, bool)
    for axis, (c, n) in enumerate(zip(coords, hu.shape)):
        view = [1, 1, 1]
        view[axis] = -1
        inside &= ((c >= -0.5) & (c < n - 0.5)).reshape(view)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.where(inside, expected, 0.0), atol=1e-3)
    # int16 stays int16, cast toward zero: 10 and 13 -> 10.75 -> 10; -10 and -13 -> -10.75 -> -10
    pair = np.array([[[10, 13, -10, -13]]], np.int16)
    coarse = dc.Geometry((1.4, 0.7, 2.5), (0.0, 0.0, 0.0))
    shape, grid = dc.resampled_grid(pair.shape, coarse)
    as_float = sitk_array(dc.resample(dc.as_image(pair.astype(np.float32), coarse), shape, grid)).ravel()
    as_int16 = sitk_array(dc.resample(dc.as_image(pair, coarse), shape, grid)).ravel()
    assert as_float[1:3].tolist() == [10.75, 12.25] and as_int16[1:3].tolist() == [10, 12]
    assert as_float[5] == -10.75 and as_int16[5] == -10 and as_int16.dtype == np.int16
    assert dc.stored_pixels(np.array([1.5, -2.5, 40000.0]), "int16").tolist() == [2, -2, 32767]


def sitk_array(image: Any) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image)


def test_normalise_clips_then_rescales_to_unit_range() -> None:
    box = np.array([[[-1000.0, -135.0, 0.0, 500.0, 2000.0, 250.0]]], dtype=np.float32)
    out = dc.normalise(box)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.ravel(), [0.0, 0.0, 135 / 635, 1.0, 1.0, 385 / 635], atol=1e-6)
    np.testing.assert_array_equal(dc.normalise(box.astype(np.int16)), out)  # int16: clamped as integers
    with pytest.raises(ValueError, match="one intensity"):
        dc.normalise(np.full((2, 2, 2), 900.0, np.float32))


def _prepared(ct_shape: tuple[int, int, int], spacing_zyx: tuple[float, float, float], start: tuple[int, int, int],
              size: tuple[int, int, int], origin: tuple[float, float, float] = (-3.3, 7.1, 12.9)) -> dc.Prepared:
    ct = dc.nifti_geometry(spacing_zyx, origin)
    shape, grid = dc.resampled_grid(ct_shape, ct)
    crop = dc.Crop(start, shape, spacing_zyx, "test", size=size)
    return dc.Prepared(np.zeros(size, np.float32), None, crop, grid, ct, ct_shape)


def test_box_back_on_the_ct_grid_by_nearest_neighbour() -> None:
    prepared = _prepared((10, 20, 20), dc.SPACING_ZYX, (2, -3, 4), (4, 8, 8))
    box = np.zeros(prepared.crop.size, bool)
    box[1, 4, 2] = True
    out = dc.to_ct_grid(box, prepared)
    assert out.dtype == np.uint8 and out.sum() == 1 and out[3, 1, 6] == 1  # box index + start
    # a coarser CT: each CT voxel takes the box voxel its centre falls in
    # z: CT slice 1 sits on the edge between box slices 2 and 3 (continuous index 2.5, exact in binary
    # with origin 0): SimpleITK rounds half up, to 3; y, x: (j + 0.5) * 1.5 / 0.7 - 0.5 rounds to 3 and 5
    prepared = _prepared((4, 4, 4), (5.0, 1.5, 1.5), (0, 0, 0), (8, 8, 8), origin=(0.0, 0.0, 0.0))
    box = np.zeros(prepared.crop.size, bool)
    box[2, 3, 5] = True
    assert dc.to_ct_grid(box, prepared).sum() == 0
    box[3, 3, 5] = True
    out = dc.to_ct_grid(box, prepared)
    assert out.sum() == 1 and out[1, 1, 2] == 1
    # torchio's inverse crop moves the origin there and back: the same grid, up to float steps
    moved = dc.uncropped_grid(prepared.grid, (-5, 17, 200))
    np.testing.assert_allclose(moved.origin_lps, prepared.grid.origin_lps, atol=1e-9)
    assert moved.spacing_xyz == prepared.grid.spacing_xyz and moved.direction == prepared.grid.direction


def test_mapped_mask_keeps_whole_bright_regions_touching_the_prediction_per_slice() -> None:
    hu = np.zeros((3, 12, 12), np.int16)
    hu[1, 2:5, 2:5] = 300  # touched by the prediction: kept whole
    hu[1, 5, 5] = 140  # joined by a corner: same 8-connected region
    hu[1, 8:10, 8:10] = 500  # not touched: left out
    hu[0, 2:5, 2:5] = 300  # right below the kept region, another slice: not touched there
    hu[2, 6, 6] = 129  # below 130 HU
    prediction = np.zeros(hu.shape, np.uint8)
    prediction[1, 3, 3] = 1
    prediction[1, 0, 0] = 1  # predicted but not bright: gone
    prediction[2, 6, 6] = 1
    mapped = dc.map_to_calcium(hu, prediction)
    expected = np.zeros(hu.shape, np.uint8)
    expected[1, 2:5, 2:5] = 1
    expected[1, 5, 5] = 1
    np.testing.assert_array_equal(mapped, expected)


class _Identity(torch.nn.Module):
    """Logit = the input: every window predicts sigmoid(image) wherever it lies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_windows_are_averaged_and_put_back_in_the_right_orientation() -> None:
    rng = np.random.default_rng(2)
    image = rng.normal(size=dc.BOX_ZYX).astype(np.float32)
    expected = 1.0 / (1.0 + np.exp(-image.astype(np.float64)))
    for mode in ("predict", "as_published"):
        out = dc.predict_windows(_Identity(), image, dc.window_corners(mode), torch.device("cpu"), batch_size=5)
        if mode == "predict":
            np.testing.assert_allclose(out, expected, rtol=1e-6)
        else:
            np.testing.assert_allclose(out[:56, :224, :224], expected[:56, :224, :224], rtol=1e-6)
            assert out[56:].max() == 0 and out[:, 224:].max() == 0 and out[:, :, 224:].max() == 0


class _Recorder(torch.nn.Module):
    """Remembers the shape of what it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return torch.zeros_like(x)


def test_network_sees_windows_as_x_y_z() -> None:
    recorder = _Recorder()
    dc.predict_windows(recorder, np.zeros(dc.BOX_ZYX, np.float32), [(0, 0, 0), (8, 0, 0), (16, 0, 0)],
                       torch.device("cpu"), batch_size=2)
    assert recorder.shapes == [(2, 1, 64, 64, 16), (1, 1, 64, 64, 16)]


def test_cpu_and_gpu_run_one_prediction_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_random_weights(tmp_path / "w")
    model = dc.DeepCac2Model(tmp_path / "w", device="cpu", features=SMALL)
    calls: list[Any] = []
    real = dc.predict_windows

    def spy(network: Any, image: np.ndarray, corners: Any, device: Any, batch_size: int = 4) -> np.ndarray:
        calls.append(device)
        return real(network, image, corners[:2], device, batch_size)

    monkeypatch.setattr(dc, "predict_windows", spy)
    hu = np.full((30, 60, 60), -800, np.int16)
    hu[10:20, 20:40, 20:40] = 40
    model.segment(hu, (2.5, 0.7, 0.7))
    assert calls == [torch.device("cpu")]
    if torch.cuda.is_available():
        gpu = dc.DeepCac2Model(tmp_path / "w", device="cuda", features=SMALL)
        gpu.segment(hu, (2.5, 0.7, 0.7))
        assert calls[-1].type == "cuda"
    else:
        with pytest.raises(ModelError, match="no CUDA GPU"):
            dc.DeepCac2Model(tmp_path / "w", device="cuda", features=SMALL)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def phantom():  # type: ignore[no-untyped-def]
    from cac_mhub.phantom.thorax import generate_thorax

    return generate_thorax(4250, size=256, increment=3.0, z_extent_mm=200.0, burden="severe")


@pytest.mark.slow
def test_random_weights_run_end_to_end_on_a_phantom(phantom, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """HeartLocator -> DeepCac2Runner (reduced width, random weights) -> DeepCacReportExporter -> score."""
    path = save_random_weights(tmp_path / "w")
    ctx = Context(input_dir=tmp_path / "in", output_dir=tmp_path / "out", config={})
    volume = Volume(hu=phantom.hu, spacing_zyx=phantom.spacing_zyx, origin_lps=phantom.origin_lps,
                    slice_thickness=phantom.slice_thickness, acquisition={"kvp": 120.0, "contrast": False})
    instance = Instance(key="1.2.3", volume=volume)
    module("HeartLocator").run(instance, ctx)
    runner = module("DeepCac2Runner", weights=str(path), features=list(SMALL), device="cpu", batch_size=8,
                    edge_windows="as_published", mapped=True)
    runner.setup(ctx)
    runner.run(instance, ctx)
    labels = instance.labels
    assert labels is not None and labels.array.shape == phantom.hu.shape and labels.array.dtype == np.uint8
    assert set(np.unique(labels.array)) <= {0, 1} and labels.names == {1: "CAC"}
    extra = labels.extra
    assert extra["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == instance.report["model"]["weights_sha256"]
    assert extra["crop"]["centred_on"] == "heart region" and extra["crop"]["size_zyx"] == [58, 256, 256]
    assert 0 < extra["windows"] < 216 and extra["edge_windows"] == "as_published" and extra["mapped"] is True
    assert extra["device"] == "cpu" and "not the published size" in extra["network"]
    assert extra["heart_from"] == "image"
    # the mapped mask holds only >= 130 HU voxels
    assert np.all(phantom.hu[labels.array > 0] >= 130)
    # a known box: around the bounding box of the heart region resampled to 0.7 x 0.7 x 2.5 mm
    region = instance.anatomy.full("region")
    ct = dc.nifti_geometry(phantom.spacing_zyx, phantom.origin_lps)
    shape, grid = dc.resampled_grid(phantom.hu.shape, ct)
    resampled = sitk_array(dc.resample(dc.as_image(region.astype(np.uint8), ct), shape, grid, nearest=True)) > 0
    assert extra["crop"]["start_zyx"] == list(dc.mask_box_start(resampled))
    assert extra["crop"]["pixel_type"] == "int16" == volume.pixel_type  # integer HU: the NIfTI's int16
    block = instance.report["deepcac2"]
    assert block["localiser"] == "image" and block["published_configuration"] is False
    assert any("heart from image" in d for d in block["differences"])
    assert not any("edge_windows" in d for d in block["differences"])
    json.dumps(extra)  # the report can carry it
    module("AgatstonCalculator", guard="on").run(instance, ctx)
    assert instance.scores is not None


def test_without_a_heart_region_the_box_is_centred_on_the_volume(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_random_weights(tmp_path / "w")
    monkeypatch.setattr(dc, "predict_windows", lambda network, image, corners, device, batch_size=4:
                        np.zeros(image.shape))
    hu = np.full((24, 80, 80), 40, np.int16)
    hu[:, 30:50, 30:50] = 400
    ctx = Context(input_dir=tmp_path, output_dir=tmp_path, config={})
    instance = Instance(key="k", volume=Volume(hu=hu, spacing_zyx=(2.5, 0.7, 0.7), origin_lps=(0, 0, 0)))
    for edge_windows, windows in (("predict", 343), ("as_published", 0)):  # as published: an empty heart, no window
        instance = Instance(key="k", volume=Volume(hu=hu, spacing_zyx=(2.5, 0.7, 0.7), origin_lps=(0, 0, 0)))
        runner = module("DeepCac2Runner", weights=str(path), features=list(SMALL), device="cpu", batch_size=16,
                        edge_windows=edge_windows)
        runner.setup(ctx)
        runner.run(instance, ctx)
        crop = instance.labels.extra["crop"]
        assert crop["centred_on"] == "volume centre" and crop["start_zyx"] == [-17, -88, -88]
        assert instance.labels.extra["windows"] == windows
        assert any("centred on the volume" in w for w in instance.warnings)
        differences = instance.report["deepcac2"]["differences"]
        assert any("heart from none" in d for d in differences)
        assert any("edge_windows predict" in d for d in differences) == (edge_windows == "predict")
