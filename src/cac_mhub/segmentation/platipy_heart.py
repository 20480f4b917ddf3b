"""DeepCAC2's published heart localiser: platipy's nnU-Net v1 heart model, detected, never downloaded.

MHub's deepcac2 crops around the heart that ``nnUNet_predict`` draws with platipy's open heart
model: task ``Task400_OPEN_HEART_1FOLD``, configuration ``3d_lowres``, trainer
``nnUNetTrainerV2__nnUNetPlansv2.1``, fold ``all``, test-time mirroring on (its Dockerfile unpacks
Zenodo record 6585664, ``Task400_OPEN_HEART_3d_lowres.zip``, into platipy's weights folder). Here
platipy itself runs it (``platipy.imaging.projects.nnunet.run.run_segmentation``) when the
package, its nnU-Net v1 and the weights are installed. platipy downloads a missing model on its
own; so the weights are looked for first and platipy is called only when they are there.

The image goes to nnU-Net as this project holds it (DICOM order: columns, rows, ascending slices,
the order of MHub's NIfTI), so the mask comes back on the CT grid with no reorientation.
"""

from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .card import ModelError, sha256_file

TASK = "Task400_OPEN_HEART_1FOLD"
CONFIGURATION = "3d_lowres"
TRAINER = "nnUNetTrainerV2__nnUNetPlansv2.1"
FOLD = "all"
CHECKPOINT = "model_final_checkpoint.model"
WEIGHTS_ZIP = "Task400_OPEN_HEART_3d_lowres.zip (Zenodo record 6585664)"
INSTALL = "pip install 'platipy[cardiac]' (platipy with its nnU-Net v1)"


def weights_roots(folder: str = "") -> list[Path]:
    """Folders that may hold ``nnUNet/3d_lowres/Task400_OPEN_HEART_1FOLD``: the option's, then
    $RESULTS_FOLDER (platipy's and nnU-Net v1's), the folder above $WEIGHTS_FOLDER (MHub's), and
    ~/.platipy/nnUNet_models (platipy's default)."""
    roots = [Path(os.path.expandvars(folder)).expanduser()] if folder else []
    if os.environ.get("RESULTS_FOLDER"):
        roots.append(Path(os.environ["RESULTS_FOLDER"]).expanduser())
    if os.environ.get("WEIGHTS_FOLDER"):
        roots.append(Path(os.environ["WEIGHTS_FOLDER"]).expanduser().parent)
    roots.append(Path.home() / ".platipy" / "nnUNet_models")
    return roots


def trainer_folder(root: Path) -> Path:
    """Where the trained model lies under a weights root (platipy's layout)."""
    return root / "nnUNet" / CONFIGURATION / TASK / TRAINER


def is_installed(trainer: Path) -> bool:
    """plans.pkl and the ``all`` fold's checkpoint with its .pkl: what nnU-Net v1 loads."""
    fold = trainer / FOLD
    return (trainer / "plans.pkl").is_file() and (fold / CHECKPOINT).is_file() and (fold / f"{CHECKPOINT}.pkl").is_file()


def find_weights(folder: str = "") -> Path:
    """The weights root holding the installed model, or a :class:`ModelError` naming where it was looked for."""
    roots = weights_roots(folder)
    for root in roots:
        if is_installed(trainer_folder(root)):
            return root
    where = " or ".join(str(trainer_folder(r)) for r in dict.fromkeys(roots))
    raise ModelError(f"method platipy: no {TASK} {CONFIGURATION} weights at {where} (plans.pkl and "
                     f"{FOLD}/{CHECKPOINT} expected); unpack {WEIGHTS_ZIP} under <root>/nnUNet/{CONFIGURATION}/ "
                     "and name <root> with HeartLocator.heart_model or $RESULTS_FOLDER; nothing is downloaded here")


def check_packages() -> None:
    """platipy and nnU-Net v1 importable, or a :class:`ModelError` that says what to install."""
    missing = [name for name in ("platipy", "nnunet") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelError(f"method platipy: {' and '.join(missing)} not installed in this environment; {INSTALL} "
                         f"yourself, with the weights ({WEIGHTS_ZIP}) under <root>/nnUNet/{CONFIGURATION}/ "
                         "(<root>: HeartLocator.heart_model, $RESULTS_FOLDER or ~/.platipy/nnUNet_models); "
                         "nothing is installed or downloaded here")


@contextmanager
def results_folder(root: Path) -> Iterator[None]:
    """$RESULTS_FOLDER set to ``root`` while platipy runs (it reads the weights from there), then restored."""
    before = os.environ.get("RESULTS_FOLDER")
    os.environ["RESULTS_FOLDER"] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RESULTS_FOLDER", None)
        else:
            os.environ["RESULTS_FOLDER"] = before


class PlatipyHeartModel:
    """platipy's heart model; :meth:`segment` gives a heart mask on the CT grid (HeartModel's interface)."""

    source = "platipy"

    def __init__(self, folder: str = "") -> None:
        check_packages()
        self.root = find_weights(folder)
        self.folder = trainer_folder(self.root)
        checkpoint = self.folder / FOLD / CHECKPOINT
        self.sha256 = {str(checkpoint.relative_to(self.folder)): sha256_file(checkpoint)}

    def describe(self) -> dict[str, Any]:
        return {"heart_model": str(self.folder), "heart_model_task": TASK, "heart_model_configuration": CONFIGURATION,
                "heart_model_sha256": dict(self.sha256)}

    def segment(self, hu: np.ndarray, spacing_zyx: Sequence[float], direction: Sequence[float]) -> np.ndarray:
        """Boolean heart mask on the grid of ``hu`` (platipy's first structure: the heart)."""
        import SimpleITK as sitk
        from platipy.imaging.projects.nnunet.run import NNUNET_SETTINGS_DEFAULTS, run_segmentation

        if not is_installed(self.folder):  # platipy would fetch a model that is gone
            raise RuntimeError(f"platipy heart weights no longer at {self.folder}")
        image = sitk.GetImageFromArray(np.asarray(hu))
        image.SetSpacing(tuple(float(s) for s in tuple(spacing_zyx)[::-1]))
        image.SetDirection(tuple(float(d) for d in direction))
        settings = {**NNUNET_SETTINGS_DEFAULTS, "task": TASK, "model": CONFIGURATION, "folds": FOLD}
        with results_folder(self.root):
            structures = run_segmentation(image, settings)
        heart = structures.get("Struct_0")
        if heart is None:  # no label in the output: no heart
            return np.zeros(hu.shape, bool)
        mask = sitk.GetArrayFromImage(heart) > 0
        if mask.shape != hu.shape:
            raise RuntimeError(f"platipy returned a mask of shape {mask.shape} for a CT of {hu.shape}")
        return mask
