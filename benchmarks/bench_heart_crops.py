"""The heart region on random heart-centred crops of every real chest, as gated calcium scans come.

    .venv/bin/python benchmarks/bench_heart_crops.py                 # 6 crops per chest, seed 11
    .venv/bin/python benchmarks/bench_heart_crops.py --per 10 --seed 3 --only lungdx_a0002

Each real chest of ../shared/data/ct is analysed whole; its cardiac mass and region are the
reference. Each crop is a heart-centred reconstruction (:func:`cac_mhub.phantom.real_variants.
cardiac_field_of_view`: 165, 200 or 245 mm on 512 x 512 with the reconstruction circle, 3 mm),
its centre shifted up to 20 mm from the mass's centroid, its range starting up to 25 mm under the
heart and 110-170 mm long. Printed per crop: whether a heart was found (or why not), the region's
volume, the share of the whole chest's region (inside the crop's field) that it holds, how far the
region's centre lies from the whole chest's cardiac mass, and the confidence reasons. A crop is
``wrong`` when no heart is found or the region's centre lies 40 mm or more from the heart.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
SHARED_CT = ROOT.parent / "shared" / "data" / "ct"
CHESTS = ("ricord_chest_ge", "lungdx_a0001", "lidc_0295", "lungdx_a0002", "itkelastix_thorax_00", "lidc_0028",
          "lidc_0306")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per", type=int, default=6, help="crops per chest")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--shared", type=Path, default=SHARED_CT)
    args = parser.parse_args(argv)

    from cac_mhub.anatomy import analyse
    from cac_mhub.anatomy.confidence import assess
    from cac_mhub.phantom.real_variants import Reconstruction, cardiac_field_of_view, region_share_held
    from cac_mhub.training.detector import load_real

    rng = np.random.default_rng(args.seed)
    shares, wrong, total = [], 0, 0
    for name in args.only or CHESTS:
        if not (args.shared / name).is_dir():
            print(f"{name}: not in {args.shared}, left out")
            continue
        whole = Reconstruction(*load_real(args.shared / name))
        anatomy = analyse(whole.hu, whole.spacing)
        if not anatomy.found:
            print(f"{name}: no heart in the whole chest ({anatomy.reason}), left out")
            continue
        reference = anatomy.full("region")
        mass = anatomy.full("heart_mass")
        bottom = whole.point_of((ndimage.find_objects(mass.astype(np.uint8))[0][0].start, 0, 0))[2]
        centre = np.array(whole.point_of(ndimage.center_of_mass(mass)))
        for i in range(args.per):
            fov = float(rng.choice([165.0, 200.0, 245.0]))
            shift = rng.uniform(-20.0, 20.0, 2)
            low = bottom - rng.uniform(0.0, 25.0)
            high = low + rng.uniform(110.0, 170.0)
            crop = cardiac_field_of_view(whole, (centre[0] + shift[0], centre[1] + shift[1], centre[2]), fov,
                                         (low, high))
            start = time.perf_counter()
            found = analyse(crop.hu, crop.spacing)
            seconds = time.perf_counter() - start
            total += 1
            where = (f"{name:22s} {i} fov {fov:.0f} shift ({shift[0]:+5.1f},{shift[1]:+5.1f}) "
                     f"range ({low - bottom:+4.0f},{high - bottom:+4.0f}) mm")
            if not found.found:
                wrong += 1
                print(f"{where}  NO HEART: {found.reason}", flush=True)
                continue
            region = found.full("region")
            share = region_share_held(whole, reference, crop, region)
            shares.append(share)
            region_mm = np.array(found.region_centre()) * np.array(crop.spacing)
            heart_mm = np.array(crop.index_of(tuple(centre))) * np.array(crop.spacing)
            off = float(np.linalg.norm(region_mm - heart_mm))
            verdict = assess(found.summary(), increment_mm=crop.spacing[0])
            codes = ",".join(r["code"] for r in verdict["reasons"]) or "-"
            bad = off >= 40.0
            wrong += bad
            print(f"{where}  region {region.sum() * np.prod(crop.spacing) / 1000:5.0f} cm3  holds {share:4.2f}  "
                  f"centre {off:4.0f} mm off  {verdict['verdict']:6s} {codes}  {seconds:.1f} s"
                  f"{'  WRONG' if bad else ''}", flush=True)
    if shares:
        print(f"\n{total} crops: heart wrong or missing on {wrong}; the region holds "
              f"{min(shares):.2f} / {float(np.median(shares)):.2f} / {max(shares):.2f} (min / median / max) "
              "of the whole chest's region")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
