"""Heart masks from an nnU-Net v2 heart model: the user's model folder, or TotalSegmentator's weights.

Why: HeartLocator's image rules find the heart from HU alone; a user who has a heart model (or
TotalSegmentator, installed with its weights) can let it draw the heart instead. Nothing is
downloaded: TotalSegmentator is only *detected* (the package importable, its weights on disk)
and its heart model is run through nnU-Net v2 here, never through TotalSegmentator's own entry
points (which fetch missing weights and report usage over the network).

Orientation: nnU-Net sees what its reader made of the training files. TotalSegmentator (and most
public models) read RAS-canonical NIfTI: ``[z, y, x]`` arrays that run superior, anterior, right.
This project's volumes run superior, posterior, left (DICOM order): ``axes='ras'`` flips y and x
before the model and back after it; ``axes='native'`` hands the array as it is.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .card import ModelError, sha256_file
from .nnunet_env import prepare_nnunet_env

CHECKPOINT = "checkpoint_final.pth"
#: TotalSegmentator v2 model folders that hold a heart label, preferred first: the 3 mm "fast"
#: model of the whole body (enough for a heart region, cheap on a CPU), then the 1.5 mm cardiac part.
TOTALSEG_HEART_FOLDERS = ("Dataset297_TotalSegmentator_total_3mm_1559subj",
                          "Dataset293_TotalSegmentator_part3_cardiac_1559subj")
AXES = ("ras", "native")


def totalsegmentator_weights_dir() -> Path:
    """Where TotalSegmentator keeps its weights: $TOTALSEG_WEIGHTS_PATH, else
    ($TOTALSEG_HOME_DIR or ~/.totalsegmentator)/nnunet/results (its own rule)."""
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"]).expanduser()
    home = Path(os.environ.get("TOTALSEG_HOME_DIR") or Path.home() / ".totalsegmentator").expanduser()
    return home / "nnunet" / "results"


def find_totalsegmentator_model() -> Path:
    """The installed TotalSegmentator heart model folder, or a :class:`ModelError` saying what is missing."""
    if importlib.util.find_spec("totalsegmentator") is None:
        raise ModelError("method totalsegmentator: the totalsegmentator package is not installed in this "
                         "environment (install it yourself; this project never installs or downloads it)")
    root = totalsegmentator_weights_dir()
    for name in TOTALSEG_HEART_FOLDERS:
        if (root / name).is_dir():
            try:
                return model_folder(root / name)
            except ModelError:
                continue
    raise ModelError(f"method totalsegmentator: no TotalSegmentator heart weights under {root} (looked for "
                     f"{' or '.join(TOTALSEG_HEART_FOLDERS)} with fold_*/{CHECKPOINT}); run TotalSegmentator once "
                     "yourself (e.g. with --fast) or set TOTALSEG_WEIGHTS_PATH; nothing is downloaded here")


def model_folder(folder: Path) -> Path:
    """The nnU-Net v2 results folder (dataset.json, plans.json, fold_*/checkpoint_final.pth) at
    ``folder`` or, for a dataset folder, its one trainer__plans__configuration subfolder."""
    folder = Path(folder).expanduser()
    if _is_results_folder(folder):
        return folder
    subs = sorted(p for p in folder.iterdir() if _is_results_folder(p)) if folder.is_dir() else []
    if len(subs) == 1:
        return subs[0]
    if len(subs) > 1:
        raise ModelError(f"{folder} holds several nnU-Net configurations ({', '.join(p.name for p in subs)}); "
                         "name one of them")
    raise ModelError(f"{folder} is not an nnU-Net v2 model folder (dataset.json, plans.json and "
                     f"fold_*/{CHECKPOINT} expected)")


def _is_results_folder(path: Path) -> bool:
    return (path / "dataset.json").is_file() and (path / "plans.json").is_file() and any(path.glob(f"fold_*/{CHECKPOINT}"))


def heart_label(dataset: dict[str, Any], label: int | None) -> int:
    """The label value of the heart: ``label`` when given, else the one named ``heart`` in dataset.json."""
    labels = {str(k).lower(): v for k, v in dict(dataset.get("labels") or {}).items()}
    if label is not None:
        if int(label) not in {v for v in labels.values() if isinstance(v, int)}:
            raise ModelError(f"heart label {label} is not a label of the model ({_label_list(labels)})")
        return int(label)
    if isinstance(labels.get("heart"), int):
        return int(labels["heart"])
    raise ModelError(f"the model has no label named 'heart' ({_label_list(labels)}); set HeartLocator.heart_label")


def _label_list(labels: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "no labels in dataset.json"


def ras_flips(direction: Sequence[float]) -> tuple[bool, bool, bool]:
    """Which array axes (z, y, x) to flip so that they run superior, anterior, right (RAS).

    ``direction`` is the ITK matrix as 9 numbers (column i: the LPS direction of array axis x, y, z).
    Axes that do not lie along their patient axis (a non-axial grid) are left as they are.
    """
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    wanted = (-1.0, -1.0, 1.0)  # RAS in LPS terms: -x (right), -y (anterior), +z (superior)
    flips = []
    for axis in (2, 1, 0):  # array z, y, x = matrix columns 2, 1, 0
        column = matrix[:, axis]
        along = int(np.argmax(np.abs(column)))
        flips.append(along == axis and np.sign(column[along]) != wanted[axis])
    return tuple(flips)  # type: ignore[return-value]


class HeartModel:
    """A loaded nnU-Net v2 heart model; :meth:`segment` gives a heart mask on the CT grid."""

    def __init__(self, folder: Path | str, label: int | None = None, device: str = "auto", axes: str = "ras",
                 source: str = "nnunet") -> None:
        prepare_nnunet_env()
        from .runner import build_predictor, pick_device

        if axes not in AXES:
            raise ModelError(f"axes must be one of {AXES}, got {axes!r}")
        self.folder = model_folder(Path(folder))
        self.source, self.axes = source, axes
        dataset = json.loads((self.folder / "dataset.json").read_text())
        self.label = heart_label(dataset, label)
        configuration = self.folder.name.split("__")[-1]
        plans = json.loads((self.folder / "plans.json").read_text())
        if configuration not in plans.get("configurations", {}):
            names = list(plans.get("configurations", {}))
            if len(names) != 1:
                raise ModelError(f"{self.folder}: cannot tell the configuration (folder name "
                                 f"trainer__plans__configuration expected; plans have {', '.join(names)})")
            configuration = names[0]
        self.checkpoints = sorted(self.folder.glob(f"fold_*/{CHECKPOINT}"))
        self.sha256 = {str(p.relative_to(self.folder)): sha256_file(p) for p in self.checkpoints}
        self.device = pick_device(device)
        self.predictor, _ = build_predictor(self.folder, configuration, self.checkpoints, self.device)

    def describe(self) -> dict[str, Any]:
        return {"heart_model": str(self.folder), "heart_label": self.label, "heart_model_axes": self.axes,
                "heart_model_sha256": dict(self.sha256)}

    def segment(self, hu: np.ndarray, spacing_zyx: Sequence[float], direction: Sequence[float]) -> np.ndarray:
        """Boolean heart mask on the grid of ``hu``."""
        flips = ras_flips(direction) if self.axes == "ras" else (False, False, False)
        axes = tuple(i for i, flip in enumerate(flips) if flip)
        image = np.flip(hu, axis=axes) if axes else hu
        labels = self.predictor.predict_single_npy_array(
            np.ascontiguousarray(image, dtype=np.float32)[None], {"spacing": [float(s) for s in spacing_zyx]},
            None, None, False)
        mask = np.asarray(labels) == self.label
        return np.ascontiguousarray(np.flip(mask, axis=axes)) if axes else mask


def load_heart_model(method: str, folder: str = "", label: int | None = None, device: str = "auto",
                     axes: str = "ras") -> Any:
    """The heart model of HeartLocator's ``method`` (nnunet: ``folder``; totalsegmentator, platipy: detected)."""
    if method == "platipy":  # DeepCAC2's published localiser (nnU-Net v1; its own device choice)
        from .platipy_heart import PlatipyHeartModel

        return PlatipyHeartModel(folder)
    if method == "totalsegmentator":
        return HeartModel(find_totalsegmentator_model(), label, device, "ras", "totalsegmentator")
    if not folder:
        raise ModelError("method nnunet needs heart_model: an nnU-Net v2 model folder with a heart label")
    return HeartModel(folder, label, device, axes, "nnunet")
