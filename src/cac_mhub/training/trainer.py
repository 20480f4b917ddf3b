"""nnU-Net trainer variant for coronary calcium on small hardware.

Why a variant: stock nnU-Net mirrors and rotates 2D patches by up to 180 degrees, which would
teach the network that the LAD and the RCA are interchangeable; artery identity depends on
left/right and anterior/posterior, so mirroring is off and rotations stay small. Calcium
lesions are a few voxels: deep supervision is off (nearest-neighbour downsampled targets lose
them and teach "no calcium" at the coarse outputs) and the cross-entropy weighs calcium
classes up, so that a short CPU training finds them. Epoch length and checkpoint frequency
are set for a CPU budget of tens of minutes.
"""

from __future__ import annotations

import numpy as np
import torch
from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


#: Cross-entropy weight of every calcium class relative to background.
FOREGROUND_CE_WEIGHT = 5.0


class CacTrainer(nnUNetTrainer):
    """nnUNetTrainer without mirroring, with +-15 degree rotations and short epochs."""

    def __init__(self, plans: dict, configuration: str, fold: int | str, dataset_json: dict,
                 device: torch.device = torch.device("cpu")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = 40
        self.num_val_iterations_per_epoch = 4
        self.num_epochs = 50
        self.save_every = 2
        self.oversample_foreground_percent = 0.6
        self.enable_deep_supervision = False

    def _build_loss(self):  # noqa: ANN202 - nnU-Net's signature
        from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
        from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

        heads = self.label_manager.num_segmentation_heads
        weight = torch.full((heads,), FOREGROUND_CE_WEIGHT, dtype=torch.float32, device=self.device)
        weight[0] = 1.0
        return DC_and_CE_loss({"batch_dice": self.configuration_manager.batch_dice, "smooth": 1e-5,
                               "do_bg": False, "ddp": self.is_ddp}, {"weight": weight}, weight_ce=1, weight_dice=1,
                              ignore_label=self.label_manager.ignore_label, dice_class=MemoryEfficientSoftDiceLoss)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):  # noqa: N802 - nnU-Net's name
        patch_size = self.configuration_manager.patch_size
        dim = len(patch_size)
        angle = 15.0 / 360.0 * 2.0 * np.pi
        rotation = (-angle, angle)
        if dim == 2:
            initial = get_patch_size(patch_size, rotation, rotation, rotation, (0.85, 1.25))
            dummy_2d = False
        else:
            no_rot = (0.0, 0.0)
            initial = get_patch_size(patch_size, rotation, no_rot, no_rot, (0.85, 1.25))
            dummy_2d = False
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial, None
