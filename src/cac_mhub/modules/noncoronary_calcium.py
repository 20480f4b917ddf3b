"""NonCoronaryCalcium: aortic valve, mitral annulus and thoracic aorta calcium, scored apart (docs/scoring.md).

A module of its own after AgatstonCalculator, not a step inside it: it runs once the coronary
score is final, reads the scored coronary labels only to leave their voxels out, and writes
nothing the coronary score, SEG or SR totals are made from, so the coronary numbers cannot change.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..chain import Context, Instance, Module, Option


class NonCoronaryCalcium(Module):
    """Reads ``instance.volume`` and ``instance.anatomy`` (HeartLocator); adds ``report["noncoronary"]``."""

    options: ClassVar[dict[str, Option]] = {
        "threshold_hu": Option(float, 130.0, "calcium threshold per voxel (Agatston)"),
        "min_area_mm2": Option(float, 1.0, "smallest lesion area kept, inclusive (Agatston)"),
        "normalise_to_mm": Option(float, 3.0, "scores scaled by increment / this (Agatston)"),
    }

    def run(self, instance: Instance, ctx: Context) -> None:
        from ..anatomy.noncoronary import find_sites
        from ..dicom.demographics import demographics
        from ..scoring.noncoronary import score_sites

        volume, anatomy = instance.volume, instance.anatomy
        why = "no CT volume" if volume is None else "no HeartLocator in the chain" if anatomy is None else \
            "" if anatomy.found else f"no heart region ({anatomy.reason})"
        if why:
            instance.report["noncoronary"] = {"measured": False, "why": why, "in_coronary_total": False}
            return
        opts = self.settings
        coronary = instance.labels.array if instance.labels is not None else None
        sites = find_sites(volume.hu, anatomy, threshold_hu=opts["threshold_hu"], coronary=coronary)
        person = demographics(instance.series.first) if instance.series is not None and instance.series.headers else None
        result = score_sites(volume.hu, volume.spacing_zyx, sites, sex=person.sex if person else None,
                             ecg_gated=bool(volume.acquisition.get("ecg_gated")), threshold_hu=opts["threshold_hu"],
                             min_area_mm2=opts["min_area_mm2"], normalise_to_mm=opts["normalise_to_mm"],
                             slice_thickness=volume.slice_thickness)
        block: dict[str, Any] = {"measured": True, **result.to_dict()}
        instance.report["noncoronary"] = block
        instance.report["_noncoronary_sites"] = sites
        instance.report.setdefault("_columns", {}).update(result.summary_row())
