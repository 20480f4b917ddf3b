"""Fit the candidate detector on real chests: their own candidates as negatives, transplanted real
calcium as positives; measure it on scans it never saw.

    .venv/bin/python -m cac_mhub.training.detector --shared ../shared/data/ct --out models/cac-candidates

Each real chest is used as it is and remade the way other scans come (:mod:`..phantom.real_variants`:
heart-centred 165/200/245 mm fields of view at 3 mm with the reconstruction circle, 5 mm, low
dose). Every calcium lesion of the heart region found there (:func:`..anatomy.lesions.find_lesions`)
is a negative: none of the training scans has coronary calcium (itkelastix_thorax_00's tiny focus
near the AV groove is left out of both classes). Real calcifications of the same scans (aortic
wall, cartilage, nodes: :func:`.transplant.calcified_patches`) are laid into the epicardial fat of
the hearts (:func:`.transplant.coronary_sites`) and the lesions found on them are positives.
The held-out scans (``--test``) get the same treatment with their own calcifications; their real
coronary plaques (lidc_0295, lidc_0028) are counted apart, by hand-clicked position.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..anatomy import analyse
from ..anatomy.detector import Detector
from ..anatomy.lesions import find_lesions

log = logging.getLogger("cac_mhub.training")

TRAIN = ("ricord_chest_ge", "itkelastix_thorax_00", "lidc_0306", "lungdx_a0002")
TEST = ("lungdx_a0001", "lidc_0295", "lidc_0028")
#: Lesions that may be real coronary calcium in a training scan: neither class (CT index z, y, x).
EXCLUDED = {"itkelastix_thorax_00": [(66, 191, 288)]}
FEATURES = ("volume_mm3", "area_max_mm2", "slices", "peak_hu", "mean_hu", "contrast_sd", "fat_share", "soft_share",
            "air_share", "dist_mass_mm", "dist_bone_mm", "dist_aorta_mm", "dist_lung_mm", "z_from_root_mm",
            "dist_root_mm", "z_from_centre_mm", "elongation", "peak_for_size")
LOG_FEATURES = ("volume_mm3", "area_max_mm2")
THRESHOLD = 0.5
NAME, VERSION = "cac-candidates", "1.0.0"


def load_real(folder: Path) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float]]:
    from ..dicom.scan import SelectionRules, scan, select
    from ..dicom.volume import assemble

    series = select(scan(folder).series, SelectionRules(max_increment_mm=10.0))
    volume, _ = assemble(series[0])
    return volume.hu, tuple(float(s) for s in volume.spacing_zyx), tuple(float(o) for o in volume.origin_lps)


def variants(name: str, hu: np.ndarray, spacing: tuple[float, float, float], origin: tuple[float, float, float],
             rng: np.random.Generator) -> Iterator[tuple[str, np.ndarray, tuple[float, float, float]]]:
    """The scan itself, three heart-centred gated-like crops, a 5 mm version and a low-dose one."""
    from scipy import ndimage

    from ..phantom.real_variants import Reconstruction, cardiac_field_of_view, low_dose, resample_z

    yield name, hu, spacing
    volume = Reconstruction(hu, spacing, origin)
    anatomy = analyse(hu, spacing)
    if anatomy.found:
        mass = anatomy.full("heart_mass")
        box = ndimage.find_objects(mass.astype(np.uint8))[0]
        centre = volume.point_of(ndimage.center_of_mass(mass))
        bottom = volume.point_of((box[0].start, 0, 0))[2]
        for fov in (165.0, 200.0, 245.0):
            low = bottom - rng.uniform(5.0, 20.0)
            shifted = (centre[0] + rng.uniform(-10, 10), centre[1] + rng.uniform(-10, 10), centre[2])
            crop = cardiac_field_of_view(volume, shifted, fov, (low, low + rng.uniform(138.0, 171.0)),
                                         increment_mm=max(3.0, spacing[0]))
            yield f"{name} gated {fov:.0f}", crop.hu, crop.spacing
    if spacing[0] < 4.0:
        thick = resample_z(volume, 5.0)
        yield f"{name} 5 mm", thick.hu, thick.spacing
    noisy = low_dose(volume, 45.0, seed=int(rng.integers(1 << 30)))
    yield f"{name} low dose", noisy.hu, noisy.spacing


def rows_for(case: str, hu: np.ndarray, spacing: tuple[float, float, float], patches: list[Any],
             rng: np.random.Generator, excluded: list[tuple[int, int, int]], transplants: int = 6,
             repeats: int = 2) -> list[dict[str, Any]]:
    """Negatives (the case's own candidates) and positives (candidates on transplanted calcium)."""
    from .transplant import coronary_sites, paste

    anatomy = analyse(hu, spacing)
    if not anatomy.found:
        log.warning("%s: no heart region (%s)", case, anatomy.reason)
        return []
    rows = []
    for lesion in find_lesions(np.zeros(hu.shape, np.uint8), hu, anatomy, spacing).candidates():
        if any(np.linalg.norm((np.asarray(lesion.centroid_zyx) - e) * spacing) < 8.0 for e in excluded):
            continue
        rows.append({"case": case, "y": 0, **lesion.features})
    for _ in range(repeats if patches else 0):
        moved = hu.copy()
        masks = [paste(moved, spacing, patches[int(rng.integers(len(patches)))], site, rng)
                 for site in coronary_sites(moved, anatomy, spacing, transplants, rng)]
        grafted = analyse(moved, spacing)
        for lesion in find_lesions(np.zeros(hu.shape, np.uint8), moved, grafted, spacing).candidates():
            where = tuple(lesion.voxels.T)
            if any(m[where].any() for m in masks):
                rows.append({"case": case, "y": 1, **lesion.features})
    return rows


def dataset(shared: Path, names: tuple[str, ...], seed: int) -> list[dict[str, Any]]:
    from .transplant import calcified_patches

    rng = np.random.default_rng(seed)
    scans = {}
    patches: list[Any] = []
    for name in names:
        if not (shared / name).is_dir():
            log.warning("%s not in %s: left out", name, shared)
            continue
        hu, spacing, origin = load_real(shared / name)
        scans[name] = (hu, spacing, origin)
        found = calcified_patches(hu, spacing, analyse(hu, spacing), source=name)
        log.info("%s: %d calcifications to transplant", name, len(found))
        patches += found
    rows: list[dict[str, Any]] = []
    for name, (hu, spacing, origin) in scans.items():
        for case, v_hu, v_spacing in variants(name, hu, spacing, origin, rng):
            start = time.perf_counter()
            new = rows_for(case, v_hu, v_spacing, patches, rng, EXCLUDED.get(name, []) if case == name else [])
            log.info("%-36s negatives %3d positives %3d (%.0f s)", case, sum(r["y"] == 0 for r in new),
                     sum(r["y"] == 1 for r in new), time.perf_counter() - start)
            rows += new
    return rows


def fit(rows: list[dict[str, Any]], c: float = 0.5) -> Detector:
    """Standardised logistic regression with balanced classes (scikit-learn), exported as numbers."""
    from sklearn.linear_model import LogisticRegression

    x = _matrix(rows)
    y = np.array([r["y"] for r in rows])
    mean = np.nanmean(x, axis=0)
    x = np.where(np.isnan(x), mean, x)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    model = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit((x - mean) / scale, y)
    return Detector(NAME, VERSION, FEATURES, frozenset(LOG_FEATURES), mean, scale, model.coef_[0],
                    float(model.intercept_[0]), THRESHOLD)


def _matrix(rows: list[dict[str, Any]]) -> np.ndarray:
    x = np.array([[float(r[f]) for f in FEATURES] for r in rows], float)
    for i, f in enumerate(FEATURES):
        if f in LOG_FEATURES:
            x[:, i] = np.log1p(np.clip(x[:, i], 0.0, None))
    return x


def evaluate(detector: Detector, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case: transplanted lesions found and their Agatston, other candidates accepted and theirs."""
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == case]
        accepted = [detector.probability(r) >= detector.threshold for r in mine]
        pos = [(r, a) for r, a in zip(mine, accepted) if r["y"] == 1]
        neg = [(r, a) for r, a in zip(mine, accepted) if r["y"] == 0]
        out.append({"case": case,
                    "transplanted_found": sum(a for _, a in pos), "transplanted": len(pos),
                    "transplanted_agatston": round(sum(r["agatston"] for r, _ in pos), 1),
                    "found_agatston": round(sum(r["agatston"] for r, a in pos if a), 1),
                    "other_accepted": sum(a for _, a in neg), "other": len(neg),
                    "other_accepted_agatston": round(sum(r["agatston"] for r, a in neg if a), 1)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[4] / "shared" / "data" / "ct")
    parser.add_argument("--out", type=Path, default=Path("models") / NAME)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rows", type=Path, default=None, help="write the feature tables (JSON) here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    train = dataset(args.shared, TRAIN, args.seed)
    test = dataset(args.shared, TEST, args.seed + 1)
    if not any(r["y"] for r in train):
        print("no training positives: are the real scans there?", file=sys.stderr)
        return 1
    detector = fit(train)
    args.out.mkdir(parents=True, exist_ok=True)
    model_file = args.out / "detector.json"
    model_file.write_text(json.dumps(detector.to_json(), indent=1) + "\n")
    report = {"train": evaluate(detector, train), "test": evaluate(detector, test),
              "train_scans": list(TRAIN), "test_scans": list(TEST), "rows": {"train": len(train), "test": len(test)}}
    (args.out / "evaluation.json").write_text(json.dumps(report, indent=1) + "\n")
    if args.rows:
        args.rows.write_text(json.dumps({"train": train, "test": test}))
    print(f"wrote {model_file} (sha256 {hashlib.sha256(model_file.read_bytes()).hexdigest()[:12]})")
    for part in ("train", "test"):
        for row in report[part]:
            print(f"{part:5s} {row['case']:36s} transplanted {row['transplanted_found']}/{row['transplanted']} "
                  f"({row['found_agatston']}/{row['transplanted_agatston']} Agatston); other candidates accepted "
                  f"{row['other_accepted']}/{row['other']} ({row['other_accepted_agatston']} Agatston)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
