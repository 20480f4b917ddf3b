"""HeartLocator: find the heart region (and say so when there is none), judge contrast from its blood."""

from __future__ import annotations

from typing import ClassVar

from ..chain import Context, Instance, Module, Option, SkipInstance


class HeartLocator(Module):
    """Reads ``instance.volume``; sets ``instance.anatomy`` (see :mod:`cac_mhub.anatomy`).

    Every later step uses the same heart: the segmentation crops to it, the scoring guard keeps
    calcium only inside it, qc.png outlines it. A series without a heart in view is skipped
    with the reason (upper thorax only, abdomen, head, a phantom without lungs), never scored 0.
    """

    options: ClassVar[dict[str, Option]] = {
        "method": Option(str, "image", "how the heart is found: image (lungs, body, bone, aorta from HU)",
                         choices=("image",)),
        "on_missing": Option(str, "skip", "no heart in the field of view: skip the series, or continue "
                             "without a region (the scoring guard then refuses it)", choices=("skip", "continue")),
        "detect_contrast": Option(bool, True, "judge contrast from the blood in the heart and mediastinum"),
    }

    def run(self, instance: Instance, ctx: Context) -> None:
        from ..anatomy import analyse
        from ..anatomy.contrast import contrast_evidence

        volume = instance.volume
        if volume is None:
            raise SkipInstance("no CT volume to locate the heart in (NiftiConverter must run first)")
        if min(volume.hu.shape) < 2:
            raise SkipInstance(f"volume too small to locate the heart: shape {tuple(volume.hu.shape)}")
        anatomy = analyse(volume.hu, volume.spacing_zyx)
        instance.anatomy = anatomy
        summary = anatomy.summary()
        if self.opts["detect_contrast"]:
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
        if self.opts["on_missing"] == "skip":
            raise SkipInstance(f"no heart region: {anatomy.reason}")
        instance.warn(f"no heart region: {anatomy.reason}")
