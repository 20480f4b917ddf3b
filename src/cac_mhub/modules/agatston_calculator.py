"""AgatstonCalculator: scores ``instance.labels`` on ``instance.volume`` (see docs/scoring.md)."""

from __future__ import annotations

import logging
from typing import Any, Callable, ClassVar

import numpy as np

from ..chain import Context, Instance, Module, Option, SkipInstance
from ..scoring.agatston import score
from ..scoring.profiles import PROFILE_NAMES, make_profile

MAX_OBLIQUE_DEG = 1.0
"""Largest angle between the array z axis and the patient z axis that still counts as axial."""
log = logging.getLogger("cac_mhub")
CONTRAST_SKIP_REASON = "contrast-enhanced CT: calcium scoring needs a non-contrast scan"


class AgatstonCalculator(Module):
    """Agatston / volume / mass scores, per artery, lesion table and risk categories."""

    options: ClassVar[dict[str, Option]] = {
        "profile": Option(str, "standard", "scoring convention: standard (Agatston), deepcac (DeepCAC) or deepcac2 "
                          "(DeepCAC2, integer total)",
                          choices=PROFILE_NAMES),
        "threshold_hu": Option(float, 130.0, "calcium threshold per voxel (standard profile)"),
        "kvp_adjusted_threshold": Option(bool, False, "use the kVp-specific threshold table"),
        "min_area_mm2": Option(float, 1.0, "smallest lesion area kept, inclusive"),
        "min_area_pixels": Option((int, type(None)), None, "smallest lesion pixel count; overrides mm2"),
        "mass_calibration": Option((float, type(None)), None,
                                   "mg hydroxyapatite per cm3 per HU; None = mass uncalibrated"),
        "normalise_to_mm": Option(float, 3.0, "scores scaled by increment / this"),
        "on_contrast": Option(str, "skip", "contrast-enhanced series: skip or score with a warning",
                              choices=("skip", "score")),
        "guard": Option(str, "auto", "score calcium only inside the heart region, never on bone, aorta or "
                        "valves: auto (when HeartLocator ran), on (required), off", choices=("auto", "on", "off")),
    }

    def run(self, instance: Instance, ctx: Context) -> None:
        volume, labels = instance.volume, instance.labels
        if volume is None:
            raise SkipInstance("no volume to score (NiftiConverter did not run or failed)")
        if labels is None:
            raise SkipInstance("no calcium labels to score (no segmentation model or SEG ran)")
        tilt = _slice_normal_angle_deg(volume.direction)
        if tilt > MAX_OBLIQUE_DEG:
            raise SkipInstance(
                f"non-axial grid (slice normal {tilt:.1f} deg from the patient z axis): "
                "Agatston scoring needs axial slices; resample to axial first"
            )
        if volume.acquisition.get("contrast"):
            if self.opts["on_contrast"] == "skip":
                raise SkipInstance(CONTRAST_SKIP_REASON)
            instance.warn("contrast-enhanced CT scored anyway (on_contrast=score): "
                          "iodine above the threshold inflates the score")
        standard = self.opts["profile"] == "standard"
        if not standard:
            changed = sorted(name for name in _STANDARD_ONLY if self.opts[name] != self.options[name].default)
            if changed:
                instance.warn(f"{self.opts['profile']} profile is fixed; ignored options: {', '.join(changed)}")
        def score_of(array: np.ndarray) -> Any:
            return score(
                volume.hu,
                volume.spacing_zyx,
                array,
                labels.names,
                profile=self.opts["profile"],
                threshold_hu=self.opts["threshold_hu"] if standard else None,
                kvp=_kvp(volume.acquisition.get("kvp")),
                kvp_adjusted_threshold=bool(self.opts["kvp_adjusted_threshold"]) and standard,
                min_area_mm2=self.opts["min_area_mm2"] if standard else None,
                min_area_pixels=self.opts["min_area_pixels"] if standard else None,
                normalise_to_mm=self.opts["normalise_to_mm"] if standard else None,
                mass_calibration=self.opts["mass_calibration"],
                slice_thickness=volume.slice_thickness,
            )

        self.apply_guard(instance, score_of)
        result = score_of(instance.labels.array)
        for message in result.warnings:
            instance.warn(message)
        instance.scores = result
        self.judge(instance, float(result.agatston), score_of)

    def judge(self, instance: Instance, kept: float, score_of: Callable[[np.ndarray], Any]) -> None:
        """The confidence verdict (:mod:`cac_mhub.anatomy.confidence`) into the report (the cohort row reads it)."""
        from ..anatomy.confidence import assess, summary_text
        from ..anatomy.lesions import blood_noise

        volume, anatomy = instance.volume, instance.anatomy
        lesions = instance.report.get("lesions") or {}
        noise = lesions.get("noise_hu")
        if noise is None and anatomy is not None and anatomy.found:
            noise = round(blood_noise(volume.hu, anatomy), 1)
        verdict = assess(instance.report.get("heart") if anatomy is not None else None,
                         increment_mm=volume.increment, slice_thickness_mm=volume.slice_thickness, noise_hu=noise,
                         kept_agatston=kept, doubtful_agatston=_doubtful(instance, score_of),
                         unlabelled_agatston=float(lesions.get("unlabelled_agatston") or 0.0))
        instance.report["confidence"] = verdict
        if verdict["verdict"] != "high":
            log.info("%s: confidence %s", instance.key, summary_text(verdict))

    def apply_guard(self, instance: Instance, score_of: Callable[[np.ndarray], Any]) -> None:
        """Clear every candidate outside the heart region or on bone/aorta/valves; report what went."""
        mode = self.opts["guard"]
        anatomy = instance.anatomy
        if mode == "off" or (mode == "auto" and anatomy is None):
            instance.report["guard"] = {"applied": False,
                                        "why": "guard off" if mode == "off" else "no HeartLocator in the chain"}
            return
        if anatomy is None or not anatomy.found:
            why = anatomy.reason if anatomy is not None else "HeartLocator did not run"
            raise SkipInstance(f"no heart region to guard the score with: {why}")
        from ..anatomy.guard import guard, summarise

        profile, _ = make_profile(self.opts["profile"], kvp=_kvp(instance.volume.acquisition.get("kvp")),
                                  **({"threshold_hu": self.opts["threshold_hu"],
                                      "kvp_adjusted_threshold": bool(self.opts["kvp_adjusted_threshold"])}
                                     if self.opts["profile"] == "standard" else {}))
        # candidates are calcium by the profile's own threshold (130 HU where it has none)
        threshold = profile.threshold_hu if profile.threshold_hu is not None else 130.0
        result = guard(instance.labels.array, instance.volume.hu, anatomy, threshold_hu=threshold)
        summary = {"applied": True, **summarise(result, score_of)}
        instance.report["guard"] = summary
        instance.report["_guard_result"] = result
        instance.labels.array = result.kept
        for reason, block in summary["excluded"].items():
            log.info("%s: guard excluded %d candidate(s) %s (Agatston %.1f)", instance.key,
                     block["candidates"], block["meaning"], block["agatston"])


def _doubtful(instance: Instance, score_of: Callable[[np.ndarray], Any]) -> float:
    """Agatston the guard left out that could still be coronary (:data:`DOUBTFUL_EXCLUSIONS`)."""
    from ..anatomy.confidence import DOUBTFUL_EXCLUSIONS

    result = instance.report.get("_guard_result")
    if result is None:
        return 0.0
    return float(sum(score_of(result.excluded_maps[reason]).agatston
                     for reason in DOUBTFUL_EXCLUSIONS if reason in result.excluded_maps))


_STANDARD_ONLY = ("threshold_hu", "kvp_adjusted_threshold", "min_area_mm2", "min_area_pixels",
                  "normalise_to_mm")


def _slice_normal_angle_deg(direction: tuple[float, ...]) -> float:
    """Angle between array axis z (column 2 of the ITK direction) and patient z (S)."""
    axis_z = np.array([direction[2], direction[5], direction[8]], dtype=float)
    cosine = abs(axis_z[2]) / max(float(np.linalg.norm(axis_z)), 1e-12)
    return float(np.degrees(np.arccos(min(1.0, cosine))))


def _kvp(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
