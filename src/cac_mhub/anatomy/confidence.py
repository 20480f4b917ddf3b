"""How much to trust a series' score: ``high``, ``medium`` or ``low``, and every reason (pure).

Why: a score of 0 from a scan whose heart region lies on the liver, or whose lesions the
detector could not judge, is not a reassuring 0. Each check below looks at one thing a reader
would look at; each finding has a level, and the verdict is the worst level found (``high``
when none). The reasons go into the report, the cohort table, the dashboard and the SR, so that
a doubtful series is never read as a plain, confident result.

Checks, in report order:

* ``root_position`` / ``root_beside``: the heart hangs from its aortic root; a heart
  centre far below or beside the root is the liver or a mass (low). No root found: ``no_root``, medium.
* ``under_diaphragm``: in a whole chest the ventricles sit between wide lungs; a centre
  where the lungs have shrunk to their bases is under the diaphragm (low).
* ``region_size``: a region far smaller or larger than a heart (medium).
* ``weak_heart``: a heart-centred view where no mass was wrapped in fat as a heart is; the
  thickest that passed every other test was taken (medium).
* ``field_cuts_heart``: the field of view's edge cuts the heart region in many slices (medium).
* ``noisy``: blood-pool noise of a low-dose or sharp-kernel scan (medium; very noisy: low).
* ``thick_slices``: 5 mm and thicker slices lose small lesions to partial volume (medium; 7 mm+: low).
* ``excluded_large``: calcium the guard left out that could still be coronary (called valve or
  intracardiac: a coronary plaque pressed into the atrioventricular groove can look so) is worth
  more than the score kept (medium); calcium on bone, the aorta, outside the region or the body
  is the guard working as meant (a region drawn wrong is judged by the region checks).
* ``unlabelled``: lesions in the heart region that neither the model nor the detector
  took, worth more than a few Agatston points (medium; more than 100: low).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

LEVELS = ("high", "medium", "low")
#: The root lies this far above the heart's centre in real hearts (mm); outside: suspicious.
ROOT_ABOVE_MM = (5.0, 110.0)
ROOT_BESIDE_MM = 95.0
LUNG_LEVEL_MIN = 0.35
REGION_CM3 = (200.0, 2000.0)
FIELD_EDGE_SHARE = 0.5
NOISY_HU = (40.0, 80.0)
THICK_MM = (4.0, 7.0)
UNLABELLED_AGATSTON = (10.0, 100.0)
#: Guard exclusions that may hide coronary calcium (bone and outside-body ones never do).
DOUBTFUL_EXCLUSIONS = ("aortic_valve", "intracardiac")


@dataclass(frozen=True)
class Finding:
    code: str
    """At most 16 characters: it is a code value in the SR."""
    level: str
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "level": self.level, "text": self.text}


def assess(heart: Mapping[str, Any] | None, *, increment_mm: float, slice_thickness_mm: float | None = None,
           noise_hu: float | None = None, kept_agatston: float = 0.0,
           doubtful_agatston: float = 0.0, unlabelled_agatston: float = 0.0) -> dict[str, Any]:
    """The verdict and its reasons. ``heart`` is the HeartLocator's summary (``Anatomy.summary()``);
    None when no heart was located (re-scoring a given segmentation): the region is not judged.
    ``doubtful_agatston``: what the guard left out that could still be coronary
    (:data:`DOUBTFUL_EXCLUSIONS`)."""
    findings = [*(_region(heart) if heart else []), *_scan(increment_mm, slice_thickness_mm, noise_hu),
                *_score(kept_agatston, doubtful_agatston, unlabelled_agatston)]
    level = max((LEVELS.index(f.level) for f in findings), default=0)
    return {"verdict": LEVELS[level], "reasons": [f.as_dict() for f in findings]}


def summary_text(confidence: Mapping[str, Any]) -> str:
    """One line: the verdict and its reasons' codes, for tables."""
    codes = [r["code"] for r in confidence.get("reasons", [])]
    return confidence.get("verdict", "") + (f" ({', '.join(codes)})" if codes else "")


def _region(heart: Mapping[str, Any]) -> list[Finding]:
    out = []
    above, beside = heart.get("root_above_centre_mm"), heart.get("root_beside_centre_mm")
    if above is None:
        out.append(Finding("no_root", "medium",
                           "aortic root not found: the heart region's top and the aortic valve were not checked"))
    else:
        if not ROOT_ABOVE_MM[0] <= above <= ROOT_ABOVE_MM[1]:
            where = "below" if above > ROOT_ABOVE_MM[1] else "level with or above"
            out.append(Finding("root_position", "low",
                               f"the heart's centre lies {where} the aortic root ({above:.0f} mm): "
                               "the region may lie on the liver or another organ"))
        if beside is not None and beside > ROOT_BESIDE_MM:
            out.append(Finding("root_beside", "low",
                               f"the heart's centre lies {beside:.0f} mm beside the aortic root"))
    if heart.get("heart_weakly_wrapped"):
        out.append(Finding("weak_heart", "medium",
                           "no soft-tissue mass in view is wrapped in fat as a heart is: the thickest that passed "
                           "every other test was taken as the heart"))
    level = heart.get("lung_level")
    if level is not None and not heart.get("heart_centred_field_of_view") and level < LUNG_LEVEL_MIN:
        out.append(Finding("under_diaphragm", "low",
                           f"the lungs at the heart's centre are only {level:.0%} of their widest: "
                           "the region may lie under the diaphragm"))
    size = heart.get("heart_region_cm3")
    if size is not None and not heart.get("heart_centred_field_of_view") and not REGION_CM3[0] <= size <= REGION_CM3[1]:
        out.append(Finding("region_size", "medium", f"heart region of {size:.0f} cm3 is not heart-sized"))
    edge = heart.get("region_on_field_edge")
    if edge is not None and edge >= FIELD_EDGE_SHARE:
        out.append(Finding("field_cuts_heart", "medium",
                           f"the field of view's edge cuts the heart region in {edge:.0%} of its slices"))
    return out


def _scan(increment: float, thickness: float | None, noise: float | None) -> list[Finding]:
    out = []
    if noise is not None and noise >= NOISY_HU[0]:
        level = "low" if noise >= NOISY_HU[1] else "medium"
        out.append(Finding("noisy", level, f"noisy scan (blood-pool noise {noise:.0f} HU: low dose or a sharp kernel): "
                                           "small lesions may be missed or noise counted"))
    thick = max(increment, thickness or 0.0)
    if thick >= THICK_MM[0]:
        level = "low" if thick >= THICK_MM[1] else "medium"
        out.append(Finding("thick_slices", level, f"{thick:g} mm slices: lesions smaller than the slice are "
                                                  "blurred below 130 HU (Agatston is defined at 3 mm)"))
    return out


def _score(kept: float, excluded: float, unlabelled: float) -> list[Finding]:
    out = []
    if excluded > max(kept, 10.0):
        out.append(Finding("excluded_large", "medium",
                           f"calcium left out as not coronary (Agatston {excluded:.0f}) outweighs the score kept "
                           f"({kept:.0f}): check qc.png"))
    if unlabelled > UNLABELLED_AGATSTON[0]:
        level = "low" if unlabelled > UNLABELLED_AGATSTON[1] else "medium"
        out.append(Finding("unlabelled", level,
                           f"lesions in the heart region not counted (Agatston {unlabelled:.0f} if they were): "
                           "check qc.png"))
    return out
