"""DeepCac2Runner: segment calcium with DeepCAC2's published 3D U-Net and the user's weights file."""

from __future__ import annotations

from typing import Any, ClassVar

from ..chain import ChainError, Context, Instance, Module, Option, SkipInstance, require_volume
from ..types import UNASSIGNED, Labels


class DeepCac2Runner(Module):
    """Reads ``instance.volume`` (and the heart region, when HeartLocator ran); sets ``instance.labels``
    (uint8, 1 = calcium, no artery: DeepCAC2 does not tell arteries apart).

    The weights are loaded and checked once, in ``setup``: a missing or foreign file stops the run
    before any series is read, with a message that says which file is expected and where.
    The box is centred on the heart region when there is one, else on the volume centre (the
    published rule without a heart), with a warning. See docs/deepcac2.md.
    """

    options: ClassVar[dict[str, Option]] = {
        "weights": Option(str, "", "vivid-haze-6_model.pt, or a folder holding it; empty: "
                          "<models folder>/deepcac2/ ($CAC_MHUB_MODELS_DIR)"),
        "sha256": Option(str, "", "expected sha256 of the weights file; empty: not pinned (always reported)"),
        "device": Option(str, "auto", "auto (GPU when present, else CPU), cuda or cpu", choices=("auto", "cuda", "cpu")),
        "edge_windows": Option(str, "predict", "predict: every voxel of the 256x256x58 box is predicted; "
                               "as_published: the published windows (last 32 x/y columns and 2 slices never "
                               "predicted; windows without heart skipped)", choices=("predict", "as_published")),
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

    def identity(self) -> Any:
        return None if self.model is None else {"weights_sha256": self.model.sha256}

    def run(self, instance: Instance, ctx: Context) -> None:
        volume = require_volume(instance, "segment")
        opts = self.settings
        anatomy = instance.anatomy
        found = anatomy is not None and anatomy.found
        if not found:
            instance.warn("DeepCAC2 box centred on the volume (no heart region): the published rule without a heart")
        try:
            result = self.model.segment(
                volume.hu, volume.spacing_zyx, centre_index=anatomy.region_centre() if found else None,
                heart=(anatomy.region, anatomy.grid.index_maps()) if found else None,
                edge_windows=opts["edge_windows"], mapped=opts["mapped"])
        except ValueError as error:
            raise SkipInstance(str(error)) from None
        result.extra["heart_from"] = anatomy.info.get("heart_source", "image") if found else None
        instance.labels = Labels(array=result.mask, names={1: UNASSIGNED}, source="model:deepcac2",
                                 extra=result.extra)
        instance.report["model"] = {"name": "deepcac2", "weights_sha256": self.model.sha256,
                                    "intended_use": "DeepCAC2 (Nürnberg et al.): non-contrast chest CT; "
                                                    "research use, see docs/deepcac2.md"}
