"""Export a trained nnU-Net fold as a lean model folder: weights only, card, checksums.

Why: nnU-Net checkpoints carry the optimizer state and training logs (several times the weight
size); the runner needs only the network weights, the plans and the dataset description.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..anatomy.crop import DEFAULT_BOX_MM
from ..segmentation.card import write_card

SYNTHETIC_WARNING = (
    "Demonstration and testing of the cac-mhub pipeline only. Trained on synthetic thorax phantoms, "
    "with real chest CT as calcium-free negatives only (no real calcium was ever labelled); NOT validated "
    "on real calcium and NOT for clinical use. Scores count only calcium inside the heart region found by "
    "HeartLocator. Replace it with a real nnU-Net v2 model (see docs/model.md) for any real analysis."
)


def export_model(fold_dir: Path, target: Path, name: str, version: str, training: dict[str, Any],
                 checkpoint: str | None = None, description: str | None = None,
                 inference_patch: tuple[int, ...] | None = None) -> Path:
    """Copy plans/dataset.json and a weights-only checkpoint of ``fold_dir`` into ``target``."""
    import torch

    fold_dir = Path(fold_dir)
    base = fold_dir.parent
    source = fold_dir / checkpoint if checkpoint else next(
        fold_dir / n for n in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")
        if (fold_dir / n).is_file())
    full = torch.load(source, map_location="cpu", weights_only=False)
    fold = str(full["init_args"]["fold"])
    lean = {
        "network_weights": {k: v.detach().float().contiguous() for k, v in full["network_weights"].items()},
        # The variant only changes augmentation; the network is the stock one, so stock nnU-Net
        # tools (nnUNetv2_predict_from_modelfolder) can load the folder too.
        "trainer_name": "nnUNetTrainer",
        "init_args": {"configuration": full["init_args"]["configuration"], "fold": fold},
        "inference_allowed_mirroring_axes": full.get("inference_allowed_mirroring_axes"),
        "current_epoch": int(full.get("current_epoch", 0)),
    }
    target = Path(target)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / f"fold_{fold}").mkdir(parents=True)
    torch.save(lean, tmp / f"fold_{fold}" / "checkpoint_final.pth")
    plans = json.loads((base / "plans.json").read_text())
    plans.pop("continue_training", None)
    if inference_patch:  # fully convolutional: a larger tile at inference covers the whole crop
        plans["configurations"][lean["init_args"]["configuration"]]["patch_size"] = list(inference_patch)
    (tmp / "plans.json").write_text(json.dumps(plans, indent=2))
    shutil.copyfile(base / "dataset.json", tmp / "dataset.json")
    labels = {int(v): k for k, v in json.loads((base / "dataset.json").read_text())["labels"].items() if int(v) > 0}
    training = dict(training, epochs_completed=lean["current_epoch"], checkpoint_source=source.name)
    card = {
        "name": name,
        "version": version,
        "description": description or (
            "2D nnU-Net v2 (PlainConvUNet, 5 stages, 16-128 features) that labels coronary calcium by "
            "artery inside a heart crop centred on the HeartLocator's heart region (lung-based estimate "
            "without it)."),
        "framework": "nnunetv2",
        "nnunet": {"configuration": lean["init_args"]["configuration"], "trainer": "nnUNetTrainer (trained with "
                   "cac_mhub.training.trainer.CacTrainer: no mirroring, +-15 deg rotation)",
                   "folds": [fold], "checkpoint": "checkpoint_final.pth"},
        "labels": labels,
        "input": {"modality": "CT", "units": "HU", "contrast": "none (non-contrast chest or calcium-scoring CT)",
                  "slice_increment_mm": "0.6-5", "orientation": "axial, LPS as read by the project",
                  "field_of_view": "whole chest or heart-only (cardiac) reconstructions"},
        "localisation": {"method": "lungs", "box_mm": list(DEFAULT_BOX_MM)},
        "postprocess": {"min_hu": 130.0, "lesion_vote": True},
        "training_data": ("Synthetic thorax phantoms from cac_mhub.phantom.thorax (seeds "
                          f"{training.get('seeds')}, style default, {training.get('cardiac_fov_share', 0):.0%} heart-only "
                          "fields of view) plus real chest CT as negatives (labels all background): "
                          f"{', '.join(training.get('real_negatives') or []) or 'none'}. No real calcium labels."),
        "training": training,
        "intended_use": SYNTHETIC_WARNING,
        "license": "MIT (weights and recipe, as the project)",
        "files": ["dataset.json", "plans.json", f"fold_{fold}/checkpoint_final.pth"],
    }
    write_card(tmp, card)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
