"""CalciumDetector: whole lesions, lesions no model labelled, and arteries from the anatomy.

Between the segmentation (any backend) and AgatstonCalculator. See :mod:`cac_mhub.anatomy.lesions`
(completion, candidates), :mod:`cac_mhub.anatomy.detector` (which candidates are coronary) and
:mod:`cac_mhub.anatomy.arteries` (labels by position where the network cannot tell).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..anatomy.detector import veto
from ..chain import ChainError, Context, Instance, Module, Option, require_volume
from ..types import ARTERIES

log = logging.getLogger("cac_mhub")

DEFAULT_DETECTOR = "cac-candidates"


class CalciumDetector(Module):
    """Reads ``instance.labels``, ``volume`` and ``anatomy``; rewrites ``instance.labels`` and adds
    ``report["lesions"]``: what completion added, the lesions the detector took, the candidates it
    left out (with the Agatston they would add), and where artery labels came from."""

    options: ClassVar[dict[str, Option]] = {
        "complete": Option(bool, True, "grow each labelled lesion to its whole connected calcium (bounded by bone, "
                                       "aorta, valve lumen and blood pool)"),
        "detector": Option((str, bool), DEFAULT_DETECTOR, "model folder (or name under models/) of the candidate "
                           "detector; off (false): list unlabelled candidates but score none of them"),
        "min_probability": Option((float, type(None)), None, "take a candidate at or above this probability; "
                                                             "null: the detector's own threshold"),
        "arteries": Option(str, "auto", "artery labels: auto (the model's unless the position on the heart clearly "
                                        "says otherwise; position for lesions no model labelled), position, model",
                           choices=("auto", "position", "model")),
        "threshold_hu": Option(float, 130.0, "calcium threshold per voxel"),
    }

    detector: Any = None
    missing: str | None = None

    def setup(self, ctx: Context) -> None:
        name = self.settings["detector"]
        if name is False or name == "off":
            return
        name = DEFAULT_DETECTOR if name is True else name
        from ..anatomy.detector import load_detector
        from ..segmentation.card import models_root

        folder = Path(name).expanduser() if Path(name).expanduser().is_dir() else models_root() / name
        path = folder / "detector.json"
        if not path.is_file() and name == DEFAULT_DETECTOR:
            # An install without the shipped model (a bare pip install) still scores what the
            # segmentation labelled; the report says no detector ran.
            self.missing = str(folder)
            log.warning("CalciumDetector: no detector.json in %s: unlabelled candidates are listed, none scored",
                        folder)
            return
        if not path.is_file():
            raise ChainError(f"CalciumDetector: no detector.json in {folder} (set detector: off to score "
                             "model-labelled lesions only)")
        try:
            self.detector = load_detector(path)
        except (ValueError, KeyError) as error:
            raise ChainError(f"CalciumDetector: {path}: {error}") from None

    def identity(self) -> Any:
        return None if self.detector is None else {"detector_sha256": self.detector.sha256}

    def run(self, instance: Instance, ctx: Context) -> None:
        from ..anatomy.arteries import choose, heart_frame
        from ..anatomy.lesions import find_lesions
        from ..scoring.agatston import score

        volume = require_volume(instance, "complete calcium lesions")
        labels, anatomy = instance.labels, instance.anatomy
        if labels is None:
            return
        if anatomy is None or not anatomy.found:
            instance.report["lesions"] = {"applied": False, "why": "no heart region (HeartLocator not in the "
                                                                  "chain, or it found none)"}
            return
        opts = self.settings
        spacing = tuple(float(s) for s in volume.spacing_zyx)
        found = find_lesions(labels.array, volume.hu, anatomy, spacing, threshold_hu=opts["threshold_hu"],
                             complete=opts["complete"])
        value_of = {name: value for value, name in labels.names.items()}
        arteries_known = all(a in value_of for a in ARTERIES)
        frame = heart_frame(anatomy, spacing) if arteries_known and opts["arteries"] != "model" else None
        new = found.labels
        pixel_mm = max(spacing[1], spacing[2])
        threshold = self.detector.threshold if self.detector is not None and opts["min_probability"] is None \
            else (opts["min_probability"] if opts["min_probability"] is not None else float("inf"))
        detected, unlabelled, sources = [], [], {"model": 0, "position": 0, "none": 0}
        fallback = next(iter(sorted(labels.names)), 1)
        for lesion in found.lesions:
            where = tuple(lesion.voxels.T)
            model_name = labels.names.get(lesion.model_label) if lesion.model_label else None
            if not lesion.model_label:
                if not lesion.in_region:
                    continue
                vetoed = veto(lesion.features, pixel_mm, opts["threshold_hu"])
                probability = self.detector.probability(lesion.features) \
                    if self.detector is not None and not vetoed else None
                row = _row(lesion, probability, self.detector)
                if vetoed:
                    row["because"] = [vetoed]
                if probability is None or probability < threshold:
                    unlabelled.append((lesion, row))
                    continue
                detected.append(row)
            position = None
            if frame is not None:
                from ..anatomy.arteries import artery_of

                position = artery_of(np.asarray(lesion.centroid_zyx) * np.asarray(spacing), frame)
            if opts["arteries"] == "position" and position is not None:
                artery, source = position[0], "position"
            else:
                artery, source = choose(model_name if opts["arteries"] != "position" else None, position)
            sources[source] += 1
            value = value_of.get(artery) if artery else None
            new[where] = value if value is not None else (lesion.model_label or fallback)
            if not lesion.model_label:
                detected[-1]["artery"] = artery or labels.names.get(fallback, "")
        region = anatomy.full("region")
        before = score(volume.hu, spacing, np.where(region, labels.array, 0), labels.names).agatston
        instance.labels.array = new
        after = score(volume.hu, spacing, np.where(region, new, 0), labels.names).agatston
        unlabelled_map = np.zeros(volume.hu.shape, bool)
        for lesion, _ in unlabelled:
            unlabelled_map[tuple(lesion.voxels.T)] = True
        block = {
            "applied": True,
            "noise_hu": round(found.noise_hu, 1),
            "smoothing_mm": found.smoothing_mm,
            "completion": {"lesions_completed": found.completed_lesions, "voxels_added": found.added_voxels},
            "agatston_as_segmented": round(float(before), 3),
            "agatston_after": round(float(after), 3),
            "note": "Agatston inside the heart region, before the guard, as segmented and after completion and "
                    "the detector",
            "added_agatston": round(float(after - before), 3),
            "detector": self.detector.describe() if self.detector is not None else
            ({"name": "missing", "why": f"no detector.json in {self.missing}"} if self.missing else {"name": "off"}),
            "detected": detected,
            "unlabelled": [row for _, row in unlabelled],
            "unlabelled_agatston": round(sum(row["agatston"] for _, row in unlabelled), 3),
            "artery_source": sources,
        }
        instance.report["lesions"] = block
        instance.report["_unlabelled_map"] = unlabelled_map
        instance.report.setdefault("_columns", {}).update({
            "completion_added_agatston": block["added_agatston"],
            "detected_lesions": len(detected),
            "unlabelled_lesions": len(unlabelled),
            "unlabelled_agatston": block["unlabelled_agatston"],
        })


def _row(lesion: Any, probability: float | None, detector: Any) -> dict[str, Any]:
    """A report row: where the lesion is and what it measures, and the detector's say on it."""
    features = lesion.features
    row = {"peak_zyx": list(lesion.peak_zyx), "agatston": round(float(features["agatston"]), 3),
           "volume_mm3": round(float(features["volume_mm3"]), 3), "peak_hu": round(float(features["peak_hu"]), 1),
           "area_max_mm2": round(float(features["area_max_mm2"]), 3)}
    if probability is not None:
        row["probability"] = round(probability, 3)
        row["because"] = detector.reasons(features)
    return row
