"""NnunetCacRunner: label coronary calcium by artery with an nnU-Net v2 model folder."""

from __future__ import annotations

from typing import Any, ClassVar

from ..chain import ChainError, Context, Instance, Module, Option, require_volume
from ..types import Labels


class NnunetCacRunner(Module):
    """Reads ``instance.volume``, sets ``instance.labels`` (uint8 on the volume grid).

    The model is loaded and its checksums verified once, in ``setup``, so a broken model folder
    stops the run before any series is read.
    """

    options: ClassVar[dict[str, Option]] = {
        "model": Option(str, "cac-phantom-2d", "model name under models/, or a path to a model folder"),
        "device": Option(str, "auto", "auto (GPU when present, else CPU), cuda or cpu",
                         choices=("auto", "cuda", "cpu")),
        "folds": Option((list, str, type(None)), None, "folds to ensemble, e.g. [0, 1] or 'all'; null: the card's"),
        "mirroring": Option(bool, True, "test-time mirroring, where the model allows it"),
        "step_size": Option(float, 0.5, "sliding-window step as a fraction of the patch size"),
        "crop": Option(str, "auto", "heart crop: auto (as the card says), heart, none",
                       choices=("auto", "heart", "none")),
        "min_hu": Option((float, type(None)), None, "clear labels below this HU; null: the card's (130)"),
        "lesion_vote": Option((bool, type(None)), None,
                              "label each calcium lesion by the network's majority; null: the card's"),
        "threads": Option(int, 0, "torch CPU threads; 0 keeps torch's default"),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.model: Any = None

    def setup(self, ctx: Context) -> None:
        from ..segmentation.card import ModelError
        from ..segmentation.runner import CacModel

        opts = self.settings
        folds = opts["folds"]
        if isinstance(folds, str):
            folds = [folds]
        try:
            self.model = CacModel(opts["model"], device=opts["device"],
                                  folds=[str(f) for f in folds] if folds else None,
                                  mirroring=opts["mirroring"], step_size=float(opts["step_size"]),
                                  threads=int(opts["threads"]))
        except ModelError as error:
            raise ChainError(f"NnunetCacRunner: {error}") from None

    def identity(self) -> Any:
        return None if self.model is None else {"model": self.model.card.ident, "sha256": self.model.sha256}

    def run(self, instance: Instance, ctx: Context) -> None:
        volume = require_volume(instance, "segment")
        opts = self.settings
        anatomy = instance.anatomy
        centre = anatomy.region_centre() if anatomy is not None and anatomy.found else None
        cropped = opts["crop"] == "heart" or (opts["crop"] == "auto" and self.model.card.localisation.get("method") == "lungs")
        if centre is None and cropped:
            instance.warn("no heart region (HeartLocator not in the chain, or it found none): the crop is "
                          "centred on a lung-based estimate, not on the heart region the model was trained on")
        result = self.model.segment(volume.hu, volume.spacing_zyx, crop=opts["crop"], min_hu=opts["min_hu"],
                                    lesion_vote=opts["lesion_vote"], heart_centre=centre)
        instance.labels = Labels(array=result.array, names=result.names,
                                 source=f"model:{self.model.card.ident}", extra=result.extra)
        instance.report["model"] = {"name": self.model.card.name, "version": self.model.card.version,
                                    "intended_use": self.model.card.intended_use}
