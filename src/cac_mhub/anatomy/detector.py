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
