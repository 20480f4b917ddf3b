"""``cac-mhub phantom``: write synthetic chest CT series (DICOM) with their ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..io import atomic_write_text


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "phantom", help="write synthetic thorax CT series (DICOM) with ground-truth calcium labels and scores")
    parser.add_argument("--output", type=Path, required=True, help="folder to write into (one sub-folder a case)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first case")
    parser.add_argument("--count", type=int, default=1, help="number of cases (seeds seed, seed+1, ...)")
    parser.add_argument("--size", type=int, default=512, help="in-plane matrix size")
    parser.add_argument("--increment", type=float, default=None, help="slice increment in mm (default: random 1-3)")
    parser.add_argument("--z-extent", type=float, default=None, help="scan length in mm (default: random 200-290)")
    parser.add_argument("--burden", choices=["zero", "mild", "moderate", "severe"], default=None)
    parser.set_defaults(func=cmd_phantom)


def write_case(out_dir: Path, seed: int, size: int = 512, increment: float | None = None,
               burden: str | None = None, z_extent_mm: float | None = None) -> dict[str, Any]:
    """Write one phantom: dicom/ series, labels.nii.gz, distractors.nii.gz and truth.json."""
    import SimpleITK as sitk

    from ..dicom.synth import CtSeriesSpec, write_ct_series
    from .thorax import DISTRACTOR_CODES, generate_thorax

    phantom = generate_thorax(seed, size=size, increment=increment, burden=burden, z_extent_mm=z_extent_mm)
    spec = CtSeriesSpec(patient_id=f"PHANTOM-{seed:06d}", series_description=f"Synthetic thorax seed {seed}",
                        slice_thickness=phantom.slice_thickness)
    write_ct_series(phantom.hu, out_dir / "dicom", phantom.spacing_zyx, phantom.origin_lps, spec)
    for name, array in (("labels", phantom.labels), ("distractors", phantom.distractors)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(tuple(float(s) for s in phantom.spacing_zyx[::-1]))
        image.SetOrigin(phantom.origin_lps)
        partial = out_dir / f".{name}.partial.nii.gz"  # SimpleITK picks the format from the suffix
        sitk.WriteImage(image, str(partial), useCompression=True)
        partial.replace(out_dir / f"{name}.nii.gz")
    truth = {
        "seed": seed, "params": phantom.params, "labels": phantom.names, "distractor_codes": DISTRACTOR_CODES,
        "heart_center_lps": phantom.heart_center_lps, "series_uid": spec.series_uid,
        "plaques": [vars(p) for p in phantom.plaques],
        "reference": _reference(phantom),
    }
    atomic_write_text(out_dir / "truth.json", json.dumps(truth, indent=2, default=float))
    return truth


def _reference(phantom: Any) -> dict[str, Any] | str:
    try:
        return phantom.reference_scores().to_dict()
    except ImportError:
        return "scoring module not available"


def cmd_phantom(args: argparse.Namespace) -> int:
    for seed in range(args.seed, args.seed + args.count):
        case = args.output / f"phantom_{seed:06d}"
        truth = write_case(case, seed, args.size, args.increment, args.burden, args.z_extent)
        ref = truth["reference"]
        total = ref.get("agatston") if isinstance(ref, dict) else ref
        print(f"{case}: {truth['params']['burden']}, increment {truth['params']['increment']} mm, "
              f"reference Agatston {total}")
    return 0
