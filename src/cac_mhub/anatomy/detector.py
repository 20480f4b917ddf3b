"""The candidate detector: is a calcium lesion no model labelled coronary calcium? (pure numpy)

A logistic regression over a lesion's measurements (:data:`.lesions.FEATURES`): how big and how
bright it is, how much fat surrounds it, how far it lies from the heart's surface, bone, the
aorta, the lungs and the aortic root. It was fitted on real calcium transplanted onto real hearts
against every other candidate of real chests (``python -m cac_mhub.training.detector``; the model
card says on which scans). A linear model on named, standardised measurements keeps every
decision explainable: the report can say which measurements pushed a lesion in or out.

The model is a JSON file (no pickle): feature names, how each is transformed, the training
mean and scale, the coefficients, the intercept and the decision threshold.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

#: A lesion no model labelled this close to bone (mm) is the bone's (an osteophyte, a rib's or the
#: sternum's rim): coronary arteries run on the heart, a centimetre or more from any bone.
NEAR_BONE_MM = 5.0
#: A calcification with this much volume over 130 HU (mm3) has a core far brighter than the
#: threshold: every transplanted real calcification of 50-200 mm3 peaked at 242 HU or more (5 %
#: under 368). A broad lesion that stays faint is partial volume of myocardium or blood in a
#: thick slice (lungdx_a0001's 5 mm inferior wall: 150-195 mm3 peaking at 213-239 HU).
LARGE_MM3 = 50.0
LARGE_MIN_PEAK_HU = 250.0
#: The peak must clear the threshold by this many noise SDs: below that, noise makes lesions
#: (lidc_0306, low dose and sharp kernel, 87 HU of noise: a 78 mm3 lesion peaking at 349 HU at the
#: apex). On the detector's feature tables 4 SDs left out every such lesion of the held-out scans
#: and kept 96.5 % of the transplanted Agatston (3 SDs: 97 %, with 45 Agatston of noise lesions).
NOISE_SDS = 4.0
#: Closer than this in front of the vertebral bodies lies the posterior mediastinum (descending
#: aorta, oesophagus, azygos vein, nodes); the coronary arteries run in front of the left atrium
#: and on the inferior wall, further forward (lidc_0306 cropped to 165 mm, descending aorta lost:
#: a 29-Agatston lesion 9 mm in front of the spine).
POSTERIOR_MEDIASTINUM_MM = 15.0
#: The detector was fitted on 0.32-0.98 mm pixels; on far coarser pixels (a 4 mm-pixel chest)
#: every measurement it relies on is out of its range.
MAX_PIXEL_MM = 1.5


def veto(features: Mapping[str, float], pixel_mm: float, threshold_hu: float = 130.0) -> str | None:
    """Why a lesion no model labelled may not be scored whatever the detector says, or None.

    Checked before the detector, in this order: pixels too coarse, next to bone, in the posterior
    mediastinum, lost in the noise, large but faint. Each is a physical limit the transplanted
    training calcium never crossed, so a linear model's extrapolation is not trusted beyond it.
    """
    if pixel_mm > MAX_PIXEL_MM:
        return f"pixels of {pixel_mm:.1f} mm: coarser than the detector knows ({MAX_PIXEL_MM:g} mm at most)"
    if features.get("dist_bone_mm", math.inf) < NEAR_BONE_MM:
        return f"within {NEAR_BONE_MM:g} mm of bone"
    front = features.get("front_of_spine_mm", math.nan)
    if front < POSTERIOR_MEDIASTINUM_MM:  # False for NaN: spine not seen
        return (f"{front:.0f} mm in front of the spine: the posterior mediastinum (descending aorta, "
                "oesophagus), not a coronary artery")
    peak, noise = features.get("peak_hu", math.inf), features.get("noise_hu", 0.0)
    if peak < threshold_hu + NOISE_SDS * noise:
        return f"peak {peak:.0f} HU is within {NOISE_SDS:g} noise SDs ({noise:.0f} HU) of the threshold"
    if features.get("volume_mm3", 0.0) >= LARGE_MM3 and peak < LARGE_MIN_PEAK_HU:
        return (f"{features['volume_mm3']:.0f} mm3 peaking at {peak:.0f} HU: too faint for its size "
                f"(a calcification of {LARGE_MM3:g} mm3 or more peaks at {LARGE_MIN_PEAK_HU:g} HU or more)")
    return None


@dataclass(frozen=True)
class Detector:
    name: str
    version: str
    features: tuple[str, ...]
    log_features: frozenset[str]
    """Features entering as log(1 + value): sizes, whose effect grows slowly."""
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float
    sha256: str = ""

    def vector(self, measured: Mapping[str, float]) -> np.ndarray:
        """Standardised feature vector; a missing or undefined value (no aortic root) enters as the mean."""
        values = []
        for name, mean in zip(self.features, self.mean):
            value = float(measured.get(name, float("nan")))
            if name in self.log_features and math.isfinite(value):
                value = math.log1p(max(value, 0.0))
            values.append(value if math.isfinite(value) else float(mean))
        return (np.asarray(values) - self.mean) / self.scale

    def probability(self, measured: Mapping[str, float]) -> float:
        z = float(self.vector(measured) @ self.coef + self.intercept)
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def reasons(self, measured: Mapping[str, float], count: int = 3) -> list[str]:
        """The measurements that pushed this lesion most, as ``name +1.2`` (positive: towards coronary)."""
        parts = self.vector(measured) * self.coef
        order = np.argsort(-np.abs(parts))[:count]
        return [f"{self.features[i]} {parts[i]:+.1f}" for i in order]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "threshold": self.threshold, "sha256": self.sha256}

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "features": list(self.features),
                "log_features": sorted(self.log_features), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept, "threshold": self.threshold}


def load_detector(path: str | Path) -> Detector:
    """Read a detector JSON file; its sha256 is kept for the report."""
    raw = Path(path).read_bytes()
    data = json.loads(raw)
    n = len(data["features"])
    arrays = [np.asarray(data[k], float) for k in ("mean", "scale", "coef")]
    if any(a.shape != (n,) for a in arrays) or np.any(arrays[1] <= 0):
        raise ValueError(f"{path}: mean, scale and coef must hold one positive-scale value per feature")
    return Detector(str(data["name"]), str(data["version"]), tuple(data["features"]),
                    frozenset(data.get("log_features", ())), *arrays, float(data["intercept"]),
                    float(data["threshold"]), hashlib.sha256(raw).hexdigest())
