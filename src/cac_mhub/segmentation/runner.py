"""Load an nnU-Net v2 model folder (after checking its card) and label calcium on a CT grid.

Prediction is in memory through nnU-Net's own ``nnUNetPredictor`` (same preprocessing,
sliding window and resampling as ``nnUNetv2_predict``), with no NIfTI round trip. When the
card asks for it, the heart is located first and only that box is segmented, at the scan's
full in-plane resolution; the result is pasted back onto the full CT grid.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..anatomy.crop import locate_heart
from .card import ModelCard, ModelError, load_card, resolve_model, verify_files
from .nnunet_env import prepare_nnunet_env

log = logging.getLogger("cac_mhub.segmentation")


def pick_device(requested: str = "auto") -> Any:
    """torch device for ``auto`` / ``cuda`` / ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    if requested == "cuda":
        raise ModelError("device 'cuda' was requested but no CUDA GPU is available")
    log.info("no GPU found, running on CPU")
    return torch.device("cpu")


@dataclass
class Segmentation:
    """Calcium label map on the CT grid plus what the report needs to know about it."""

    array: np.ndarray
    names: dict[int, str]
    extra: dict[str, Any] = field(default_factory=dict)


class CacModel:
    """A verified, loaded nnU-Net v2 model, ready to predict many scans."""

    def __init__(self, model: str | Path, device: str = "auto", folds: Sequence[str] | None = None,
                 mirroring: bool = True, step_size: float = 0.5, threads: int = 0) -> None:
        prepare_nnunet_env()
        import torch

        self.card: ModelCard = load_card(resolve_model(str(model)))
        self.folds = [str(f) for f in folds] if folds else list(self.card.folds)
        unknown = [f for f in self.folds if f"fold_{f}/{self.card.checkpoint}" not in self.card.files]
        if unknown:
            raise ModelError(f"{self.card.ident}: fold(s) {', '.join(unknown)} not in the card "
                             f"(available: {', '.join(self.card.folds)})")
        needed = ["dataset.json", "plans.json"] + [f"fold_{f}/{self.card.checkpoint}" for f in self.folds]
        self.sha256 = verify_files(self.card, needed)
        self.device = pick_device(device)
        if threads > 0:
            torch.set_num_threads(threads)
        self.step_size = step_size
        self.mirroring = mirroring
        self.predictor = self._build_predictor()

    def _build_predictor(self) -> Any:
        checkpoints = [self.card.folder / f"fold_{fold}" / self.card.checkpoint for fold in self.folds]
        predictor, self.mirror_axes = build_predictor(self.card.folder, self.card.configuration, checkpoints,
                                                      self.device, self.step_size, self.mirroring)
        return predictor

    def segment(self, hu: np.ndarray, spacing_zyx: Sequence[float], crop: str = "auto",
                min_hu: float | None = None, lesion_vote: bool | None = None,
                heart_centre: Sequence[float] | None = None) -> Segmentation:
        """Label map (uint8, same shape as ``hu``) with the card's label values.

        ``crop``: ``auto`` follows the card, ``heart`` always crops, ``none`` never does. The box
        is centred on ``heart_centre`` (index z, y, x; from the HeartLocator) when given, else on
        the lung-based estimate.
        Voxels below ``min_hu`` (default: the card's, 130 HU) are cleared: calcium by definition.
        ``lesion_vote`` (default: the card's): see :func:`vote_lesions`.
        """
        start = time.perf_counter()
        use_crop = (crop == "heart") or (crop == "auto" and self.card.localisation.get("method") == "lungs")
        box_info: dict[str, Any] = {}
        slices: tuple[slice, ...] = (slice(None),) * 3
        if use_crop:
            box_mm = tuple(self.card.localisation.get("box_mm") or ()) or None
            box = locate_heart(hu, tuple(spacing_zyx), **({"box_mm": box_mm} if box_mm else {}),
                               centre_index=heart_centre)
            slices = box.slices
            box_info = box.as_dict()
        region = hu[slices]
        small, target = self._to_network_grid(region, spacing_zyx)
        predicted = self.predictor.predict_single_npy_array(small[None], {"spacing": target}, None, None, False)
        out = np.zeros(hu.shape, dtype=np.uint8)
        out[slices] = _nearest_resize(np.asarray(predicted, dtype=np.uint8), region.shape)
        threshold = self.card.min_hu if min_hu is None else min_hu
        if threshold is not None:
            out[hu < threshold] = 0
        vote = self.card.lesion_vote if lesion_vote is None else lesion_vote
        if vote and threshold is not None:
            out[slices] = vote_lesions(out[slices], hu[slices] >= threshold)
        extra = {
            "model": self.card.ident, "sha256": dict(self.sha256), "folds": list(self.folds),
            "device": str(self.device), "mirroring": bool(self.mirroring and self.mirror_axes),
            "step_size": self.step_size, "min_hu": threshold, "lesion_vote": bool(vote),
            "crop": box_info or "none",
            "seconds": round(time.perf_counter() - start, 3),
        }
        return Segmentation(out, dict(self.card.labels), extra)


    def _to_network_grid(self, region: np.ndarray, spacing_zyx: Sequence[float]) -> tuple[np.ndarray, list[float]]:
        """Resample to the plans' spacing with (bi/tri)linear interpolation in torch.

        Why not nnU-Net's own resampling: its cubic spline on the image and its linear resize of
        every class's logits back to the CT grid cost more than the network on CPU. Resampling
        the image here makes nnU-Net's resampling a no-op; the label map comes back at network
        resolution and is mapped onto the CT grid by nearest neighbour, then cut at 130 HU.
        """
        import torch
        import torch.nn.functional as F

        spacing = [float(s) for s in spacing_zyx]
        target_cfg = [float(s) for s in self.predictor.configuration_manager.spacing]
        target = spacing[: 3 - len(target_cfg)] + target_cfg
        shape = [max(1, int(round(n * s / t))) for n, s, t in zip(region.shape, spacing, target)]
        data = torch.from_numpy(np.ascontiguousarray(region, dtype=np.float32))
        if list(shape) == list(region.shape):
            return data.numpy(), target
        if shape[0] == region.shape[0]:  # in-plane only: bilinear per slice
            out = F.interpolate(data[:, None], size=shape[1:], mode="bilinear", align_corners=False)[:, 0]
        else:
            out = F.interpolate(data[None, None], size=shape, mode="trilinear", align_corners=False)[0, 0]
        # Reported at the plans' spacing, so nnU-Net finds nothing left to resample.
        return out.numpy(), target


def build_predictor(folder: Path, configuration: str, checkpoints: Sequence[Path], device: Any,
                    step_size: float = 0.5, mirroring: bool = True) -> tuple[Any, tuple[int, ...] | None]:
    """An in-memory ``nnUNetPredictor`` for an nnU-Net v2 results folder and its (verified) checkpoints,
    built from the plans (no trainer class lookup); returns it with the checkpoint's mirror axes."""
    import json

    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = json.loads((folder / "dataset.json").read_text())
    plans_manager = PlansManager(json.loads((folder / "plans.json").read_text()))
    config = plans_manager.get_configuration(configuration)
    parameters, mirror_axes = [], None
    for i, path in enumerate(checkpoints):
        checkpoint = _load_checkpoint(path)
        parameters.append(checkpoint["network_weights"])
        if i == 0:
            mirror_axes = checkpoint.get("inference_allowed_mirroring_axes")
    channels = determine_num_input_channels(plans_manager, config, dataset_json)
    heads = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    network = get_network_from_plans(
        config.network_arch_class_name, config.network_arch_init_kwargs,
        config.network_arch_init_kwargs_req_import, channels, heads, allow_init=False, deep_supervision=False)
    network.load_state_dict(parameters[0])
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints a CPU notice we log ourselves
        predictor = nnUNetPredictor(
            tile_step_size=step_size, use_gaussian=True, use_mirroring=mirroring,
            perform_everything_on_device=device.type == "cuda", device=device,
            verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, config, parameters, dataset_json,
                                    "nnUNetTrainer", tuple(mirror_axes) if mirror_axes else None)
    return predictor, tuple(mirror_axes) if mirror_axes else None


def vote_lesions(labels: np.ndarray, calcium: np.ndarray, min_fraction: float = 0.5) -> np.ndarray:
    """Give a whole calcium lesion the network's majority label when it labelled most of it.

    Why: the network works at 0.9 mm and its edges are nearest-neighbour mapped back, so a
    lesion can come back partly labelled or with two arteries. A lesion (3D 26-connected
    calcium voxels) of which at least ``min_fraction`` is labelled gets its majority label
    everywhere; lesions labelled less than that are left as they are (e.g. bone touched at
    its edge stays mostly unlabelled).
    """
    from scipy import ndimage

    component, n = ndimage.label(calcium, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return labels
    ids, values = component[calcium], labels[calcium].astype(np.int64)
    size = np.bincount(ids, minlength=n + 1)
    top = int(values.max()) + 1 if values.size else 1
    counts = np.bincount(ids * top + values, minlength=(n + 1) * top).reshape(n + 1, top)
    labelled = counts[:, 1:].sum(axis=1)
    majority = counts[:, 1:].argmax(axis=1) + 1 if top > 1 else np.zeros(n + 1, np.int64)
    take = (labelled > 0) & (labelled >= min_fraction * size)
    take[0] = False
    out = labels.copy()
    chosen = take[component]
    out[chosen] = majority[component[chosen]].astype(labels.dtype)
    return out


def _nearest_resize(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map (voxel centres mapped onto the small grid)."""
    index = [np.minimum((np.arange(n) + 0.5) * m / n, m - 1).astype(np.intp) for n, m in zip(shape, labels.shape)]
    return labels[np.ix_(*index)]


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint already verified by sha256; plain weights load without unpickling code."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - full nnU-Net checkpoints hold numpy objects; the sha256 was checked
        return torch.load(path, map_location="cpu", weights_only=False)
