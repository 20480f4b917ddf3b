"""HeartLocator: find the heart region (and say so when there is none), judge contrast from its blood."""

from __future__ import annotations

from typing import Any, ClassVar

from ..chain import ChainError, Context, Instance, Module, Option, SkipInstance, require_volume


class HeartLocator(Module):
    """Reads ``instance.volume``; sets ``instance.anatomy`` (see :mod:`cac_mhub.anatomy`).

    Every later step uses the same heart: the segmentation crops to it, the scoring guard keeps
    calcium only inside it, qc.png outlines it. A series without a heart in view is skipped
    with the reason (upper thorax only, abdomen, head, a phantom without lungs), never scored 0.
    """

    options: ClassVar[dict[str, Option]] = {
        "method": Option(str, "image", "how the heart is found: image (lungs, body, bone, aorta from HU); "
                         "nnunet (heart_model draws the heart); totalsegmentator (its installed weights draw it; "
                         "never downloaded); platipy (platipy's nnU-Net v1 Task400_OPEN_HEART_1FOLD, DeepCAC2's "
                         "published localiser; installed by you, never downloaded)",
                         choices=("image", "nnunet", "totalsegmentator", "platipy")),
        "heart_model": Option(str, "", "method nnunet: an nnU-Net v2 model folder with a heart label; method "
                              "platipy: the folder holding nnUNet/3d_lowres/Task400_OPEN_HEART_1FOLD (empty: "
                              "$RESULTS_FOLDER, ~/.platipy/nnUNet_models)"),
        "heart_label": Option((int, type(None)), None, "label value of the heart; null: the label named 'heart'"),
        "heart_axes": Option(str, "ras", "method nnunet: array order the model was trained on: ras (RAS NIfTI, "
                             "as TotalSegmentator) or native (this project's DICOM order)", choices=("ras", "native")),
        "device": Option(str, "auto", "heart model device: auto, cuda or cpu", choices=("auto", "cuda", "cpu")),
        "on_missing": Option(str, "skip", "no heart in the field of view: skip the series, or continue "
                             "without a region (the scoring guard then refuses it)", choices=("skip", "continue")),
        "detect_contrast": Option(bool, True, "judge contrast from the blood in the heart and mediastinum"),
    }

    heart: Any = None

    def setup(self, ctx: Context) -> None:
        opts = self.settings
        if opts["method"] == "image":
            return
        from ..segmentation.card import ModelError
        from ..segmentation.heart_model import load_heart_model

        try:
            self.heart = load_heart_model(opts["method"], opts["heart_model"], opts["heart_label"],
                                          opts["device"], opts["heart_axes"])
        except ModelError as error:
            raise ChainError(f"HeartLocator: {error}") from None

    def identity(self) -> Any:
        return None if self.heart is None else {"heart_model_sha256": self.heart.sha256}

    def run(self, instance: Instance, ctx: Context) -> None:
        from ..anatomy import analyse
        from ..anatomy.analysis import with_heart_mask
        from ..anatomy.contrast import contrast_evidence

        volume = require_volume(instance, "locate the heart")
        anatomy = analyse(volume.hu, volume.spacing_zyx)
        if self.heart is not None:  # body, bone, aorta from the image; the heart from the model
            mask = self.heart.segment(volume.hu, volume.spacing_zyx, volume.direction)
            anatomy = with_heart_mask(anatomy, mask, self.heart.source)
            instance.heart_mask = mask  # as drawn: DeepCAC2 crops around it as published
        instance.anatomy = anatomy
        summary = {"method": self.heart.source if self.heart is not None else "image", **anatomy.summary(),
                   **(self.heart.describe() if self.heart is not None else {})}
        if self.settings["detect_contrast"]:
            evidence, measures = contrast_evidence(anatomy)
            summary.update(measures)
            if evidence and not volume.acquisition.get("contrast"):
                volume.acquisition["contrast"], volume.acquisition["contrast_evidence"] = True, evidence
                instance.warn(f"contrast-enhanced CT ({evidence})")
        instance.report["heart"] = summary
        if anatomy.found:
            return
        if volume.acquisition.get("contrast"):
            return  # the scoring step skips it with the contrast reason
        if self.settings["on_missing"] == "skip":
            raise SkipInstance(f"no heart region: {anatomy.reason}")
        instance.warn(f"no heart region: {anatomy.reason}")
