"""Accuracy and speed of a CAC model on synthetic thorax phantoms it has never seen.

    .venv/bin/python benchmarks/bench_accuracy.py --count 12 --seed 900000
    .venv/bin/python benchmarks/bench_accuracy.py --e2e        # + one 512x512x300 scan through `cac-mhub run`

Phantom seeds start at 900000 (training uses 1000-1999, tests below 1000 or 777001), so every
scan is unseen. Prints lesion sensitivity / PPV (3D connected lesions), voxel Dice and per-
artery labelling accuracy, Agatston ICC(2,1) and Spearman against the phantom's reference
score, linearly weighted kappa of the project's (DeepCAC2) risk groups (0, 1-100, 101-300, >300), the score the
model produced on bone and on aortic calcium (should be 0), and seconds per scan.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage, stats

from cac_mhub.phantom.thorax import generate_thorax
from cac_mhub.scoring.agatston import score
from cac_mhub.scoring.categories import risk_group
from cac_mhub.segmentation.runner import CacModel

ARTERY_NAMES = {1: "LM", 2: "LAD", 3: "LCX", 4: "RCA"}


def icc_2_1(a: np.ndarray, b: np.ndarray) -> float:
    """Two-way random effects, absolute agreement, single rater ICC (Shrout and Fleiss 2,1)."""
    data = np.stack([a, b], axis=1).astype(float)
    n, k = data.shape
    grand = data.mean()
    ms_rows = k * np.sum((data.mean(axis=1) - grand) ** 2) / (n - 1)
    ms_cols = n * np.sum((data.mean(axis=0) - grand) ** 2) / (k - 1)
    ss_err = np.sum((data - data.mean(axis=1, keepdims=True) - data.mean(axis=0, keepdims=True) + grand) ** 2)
    ms_err = ss_err / ((n - 1) * (k - 1))
    denom = ms_rows + (k - 1) * ms_err + k * (ms_cols - ms_err) / n
    return float((ms_rows - ms_err) / denom) if denom > 0 else float("nan")


def weighted_kappa(a: list[int], b: list[int], classes: int = 4) -> float:
    """Cohen's kappa with linear weights."""
    observed = np.zeros((classes, classes))
    for i, j in zip(a, b):
        observed[i, j] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    idx = np.arange(classes)
    weights = np.abs(idx[:, None] - idx[None, :]) / (classes - 1)
    denom = np.sum(weights * expected)
    return float(1.0 - np.sum(weights * observed) / denom) if denom > 0 else float("nan")


def lesion_counts(truth: np.ndarray, found: np.ndarray) -> tuple[int, int, int, int]:
    """(true lesions hit, true lesions, found lesions that are true, found lesions), 3D 26-connected."""
    structure = np.ones((3, 3, 3), bool)
    t_lab, n_t = ndimage.label(truth, structure)
    f_lab, n_f = ndimage.label(found, structure)
    hit = len(np.unique(t_lab[(t_lab > 0) & found]))
    true_found = len(np.unique(f_lab[(f_lab > 0) & truth]))
    return hit, n_t, true_found, n_f


def evaluate(model: CacModel, seeds: list[int], lesion_vote: bool | None = None) -> dict[str, object]:
    rows = []
    totals = {"hit": 0, "n_true": 0, "true_found": 0, "n_found": 0, "inter": 0, "sum": 0,
              "artery_ok": 0, "artery_n": 0}
    for seed in seeds:
        phantom = generate_thorax(seed)
        start = time.perf_counter()
        result = model.segment(phantom.hu, phantom.spacing_zyx, lesion_vote=lesion_vote)
        seconds = time.perf_counter() - start
        truth, found = phantom.labels > 0, result.array > 0
        hit, n_t, tf, n_f = lesion_counts(truth, found)
        both = truth & found
        totals["hit"] += hit
        totals["n_true"] += n_t
        totals["true_found"] += tf
        totals["n_found"] += n_f
        totals["inter"] += int(both.sum())
        totals["sum"] += int(truth.sum() + found.sum())
        totals["artery_ok"] += int(np.sum(phantom.labels[both] == result.array[both]))
        totals["artery_n"] += int(both.sum())
        reference = score(phantom.hu, phantom.spacing_zyx, phantom.labels, ARTERY_NAMES).agatston
        predicted = score(phantom.hu, phantom.spacing_zyx, result.array, ARTERY_NAMES).agatston
        on_bone = np.where(phantom.distractors == 1, result.array, 0)
        on_aorta = np.where(phantom.distractors >= 2, result.array, 0)
        rows.append({
            "seed": seed, "shape": list(phantom.hu.shape), "increment": phantom.spacing_zyx[0],
            "burden": phantom.params["burden"], "reference": round(reference, 1), "predicted": round(predicted, 1),
            "bone_score": round(score(phantom.hu, phantom.spacing_zyx, on_bone, ARTERY_NAMES).agatston, 1),
            "aortic_score": round(score(phantom.hu, phantom.spacing_zyx, on_aorta, ARTERY_NAMES).agatston, 1),
            "aortic_calcium_present": bool(np.any(phantom.distractors >= 2)),
            "seconds": round(seconds, 2),
        })
        print(json.dumps(rows[-1]), flush=True)
    ref = np.array([r["reference"] for r in rows])
    pred = np.array([r["predicted"] for r in rows])
    groups_ref, groups_pred = [risk_group(v) for v in ref], [risk_group(v) for v in pred]
    return {
        "scans": len(rows),
        "lesion_sensitivity": round(totals["hit"] / max(1, totals["n_true"]), 3),
        "lesion_ppv": round(totals["true_found"] / max(1, totals["n_found"]), 3),
        "true_lesions": totals["n_true"], "found_lesions": totals["n_found"],
        "dice": round(2 * totals["inter"] / max(1, totals["sum"]), 3),
        "artery_label_accuracy": round(totals["artery_ok"] / max(1, totals["artery_n"]), 3),
        "agatston_icc_2_1": round(icc_2_1(ref, pred), 3),
        "agatston_spearman": round(float(stats.spearmanr(ref, pred).statistic), 3),
        "risk_group_weighted_kappa": round(weighted_kappa(groups_ref, groups_pred), 3),
        "risk_group_agreement": round(float(np.mean(np.equal(groups_ref, groups_pred))), 3),
        "score_on_bone_total": round(sum(r["bone_score"] for r in rows), 1),
        "score_on_aortic_calcium_total": round(sum(r["aortic_score"] for r in rows), 1),
        "scans_with_aortic_calcium": sum(r["aortic_calcium_present"] for r in rows),
        "seconds_per_scan_mean": round(float(np.mean([r["seconds"] for r in rows])), 2),
        "seconds_per_scan_max": round(float(np.max([r["seconds"] for r in rows])), 2),
        "device": str(model.device), "torch_threads": _threads(),
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def end_to_end(model: str) -> dict[str, object]:
    """Time `cac-mhub run` (default workflow) on one 512x512x300 DICOM phantom series."""
    from cac_mhub.phantom.command import write_case

    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / "in"
        write_case(case, seed=900_999, size=512, increment=1.0, burden="moderate", z_extent_mm=299.0)
        n = len(list((case / "dicom").glob("*.dcm")))
        cli = [str(Path(sys.executable).parent / "cac-mhub")]
        cmd = [*cli, "run", "--input", str(case / "dicom"), "--output", str(Path(tmp) / "out"),
               "--set", f"modules.NnunetCacRunner.model={model}", "--quiet"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        seconds = time.perf_counter() - start
        reports = list((Path(tmp) / "out").rglob("report.json"))
        timings = json.loads(reports[0].read_text()).get("timings_s") if reports else None
        return {"slices": n, "matrix": "512x512", "returncode": proc.returncode, "seconds_total": round(seconds, 1),
                "module_timings": timings, "stderr_tail": proc.stderr[-400:] if proc.returncode else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cac-phantom-2d")
    parser.add_argument("--seed", type=int, default=900_000)
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--e2e", action="store_true", help="also time the whole chain on a 512x512x300 scan")
    parser.add_argument("--lesion-vote", choices=["card", "on", "off"], default="card",
                        help="whole-lesion majority labels (default: as the model card says)")
    args = parser.parse_args()
    model = CacModel(args.model, device=args.device)
    vote = {"card": None, "on": True, "off": False}[args.lesion_vote]
    summary = evaluate(model, list(range(args.seed, args.seed + args.count)), vote)
    summary["lesion_vote"] = model.card.lesion_vote if vote is None else vote
    summary["model"] = model.card.ident
    if args.e2e:
        summary["end_to_end"] = end_to_end(args.model)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
