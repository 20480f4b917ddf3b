"""DeepCac2Runner: segment calcium with DeepCAC2's published 3D U-Net and the user's weights file."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from ..chain import ChainError, Context, Instance, Module, Option, SkipInstance, require_volume
from ..types import UNASSIGNED, Labels

log = logging.getLogger("cac_mhub")

#: The heart localiser of the published pipeline (MHub deepcac2: platipy's nnU-Net v1 heart model).
PUBLISHED_LOCALISER = "platipy"


def published_differences(edge_windows: str, localiser: str, published_network: bool, pixel_type: str,
                          stored_type: str, resampled: bool) -> list[str]:
    """How a run differs from the published configuration, one short reason each (empty: it does not)."""
    out = []
    if edge_windows != "as_published":
        out.append(f"edge_windows {edge_windows} (published: as_published)")
    if localiser != PUBLISHED_LOCALISER:
        out.append(f"heart from {localiser} (published: platipy's nnU-Net v1 Task400_OPEN_HEART_1FOLD 3d_lowres)")
    if not published_network:
        out.append("network widths are not the published 64/128/256/512")
    if pixel_type != stored_type:
        out.append(f"resampled as {pixel_type} (the series' NIfTI holds {stored_type})")
    if resampled:
        out.append("the series was resampled on reading (gantry tilt or irregular slices)")
    return out


class DeepCac2Runner(Module):
    """Reads ``instance.volume`` and the heart (HeartLocator's); sets ``instance.labels`` (uint8,
    1 = calcium, no artery: DeepCAC2 does not tell arteries apart).

    The weights are loaded and checked once, in ``setup``: a missing or foreign file stops the run
    before any series is read, with a message that says which file is expected and where.
    The box is centred on the heart model's own mask when HeartLocator ran one (``platipy`` is the
    published localiser), else on the heart region, else on the volume centre (the published rule
    without a heart), with a warning. The report's ``deepcac2`` block names the localiser and says
    how the run differs from the published configuration. See docs/deepcac2.md.
    """

    options: ClassVar[dict[str, Option]] = {
        "weights": Option(str, "", "vivid-haze-6_model.pt, or a folder holding it; empty: "
                          "<models folder>/deepcac2/ ($CAC_MHUB_MODELS_DIR)"),
        "sha256": Option(str, "", "expected sha256 of the weights file; empty: not pinned (always reported)"),
        "device": Option(str, "auto", "auto (GPU when present, else CPU), cuda or cpu", choices=("auto", "cuda", "cpu")),
        "edge_windows": Option(str, "as_published", "as_published: the published windows (last 32 x/y columns and "
                               "2 slices of the 256x256x58 box never predicted; windows without heart skipped); "
                               "predict: every voxel of the box is predicted (not published; can add calcium "
                               "outside the heart to DeepCAC.report.json)", choices=("as_published", "predict")),
        "pixel_type": Option(str, "auto", "pixel type the CT is resampled in: auto (as_published: the series' "
                             "stored type, int16 for integer HU as its NIfTI holds them; predict: float32), "
                             "int16 or float32", choices=("auto", "int16", "float32")),
        "mapped": Option(bool, False, "replace the prediction by the >= 130 HU per-slice regions it touches "
                         "(DeepCAC2's mapped mask)"),
        "batch_size": Option(int, 4, "windows per network call (memory vs speed; results do not change)"),
        "threads": Option(int, 0, "torch CPU threads; 0 keeps torch's default"),
        "features": Option(list, [64, 128, 256, 512], "U-Net widths per level; the published weights need "
                           "[64, 128, 256, 512] (smaller only for tests and benchmarks)"),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.model: Any = None

    def setup(self, ctx: Context) -> None:
        from ..segmentation.card import ModelError
        from ..segmentation.deepcac2 import DeepCac2Model

        opts = self.settings
        if opts["batch_size"] < 1 or not opts["features"] or not all(isinstance(f, int) and f > 0
                                                                     for f in opts["features"]):
            raise ChainError("DeepCac2Runner: batch_size must be >= 1 and features positive integers")
        try:
            self.model = DeepCac2Model(opts["weights"], device=opts["device"], features=opts["features"],
                                       sha256=opts["sha256"], batch_size=opts["batch_size"], threads=opts["threads"])
        except ModelError as error:
            raise ChainError(f"DeepCac2Runner: {error}") from None
        if opts["edge_windows"] != "as_published":
            log.warning("DeepCac2Runner: edge_windows %s is not the published configuration; DeepCAC.report.json "
                        "is unguarded, report.json's guarded score stands beside it", opts["edge_windows"])

    def identity(self) -> Any:
        return None if self.model is None else {"weights_sha256": self.model.sha256}

    def run(self, instance: Instance, ctx: Context) -> None:
        volume = require_volume(instance, "segment")
        opts = self.settings
        heart, localiser = self.heart(instance)
        if heart is None:
            instance.warn("DeepCAC2 box centred on the volume (no heart region): the published rule without a heart"
                          + ("; as published, no window is predicted" if opts["edge_windows"] == "as_published" else ""))
        pixel_type = opts["pixel_type"]
        if pixel_type == "auto":
            pixel_type = volume.pixel_type if opts["edge_windows"] == "as_published" else "float32"
        try:
            result = self.model.segment(volume.hu, volume.spacing_zyx, volume.origin_lps, volume.direction, heart=heart,
                                        edge_windows=opts["edge_windows"], mapped=opts["mapped"], pixel_type=pixel_type)
        except ValueError as error:
            raise SkipInstance(str(error)) from None
        differences = published_differences(opts["edge_windows"], localiser, self.model.published, pixel_type,
                                            volume.pixel_type, volume.resampled)
        result.extra["heart_from"] = localiser
        instance.labels = Labels(array=result.mask, names={1: UNASSIGNED}, source="model:deepcac2",
                                 extra=result.extra)
        instance.report["model"] = {"name": "deepcac2", "weights_sha256": self.model.sha256,
                                    "intended_use": "DeepCAC2 (Nürnberg et al.): non-contrast chest CT; "
                                                    "research use, see docs/deepcac2.md"}
        instance.report["deepcac2"] = {"localiser": localiser, "edge_windows": opts["edge_windows"],
                                       "pixel_type": pixel_type, "published_configuration": not differences,
                                       "differences": differences}

    @staticmethod
    def heart(instance: Instance) -> tuple[Any, str]:
        """The heart to crop around and who drew it: a heart model's own mask, else the heart region."""
        anatomy = instance.anatomy
        localiser = str(anatomy.info.get("heart_source", "image")) if anatomy is not None else "none"
        mask = instance.heart_mask
        if mask is not None and mask.any():
            return mask, localiser
        if anatomy is not None and anatomy.found:
            return anatomy.full("region"), localiser
        return None, localiser
