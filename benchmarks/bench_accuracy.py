"""Accuracy and speed of a CAC model on synthetic thorax phantoms it has never seen, with and without the guard.

    .venv/bin/python benchmarks/bench_accuracy.py                      # 16 phantoms, style alt
    .venv/bin/python benchmarks/bench_accuracy.py --style default --count 12 --seed 900000
    .venv/bin/python benchmarks/bench_accuracy.py --model /path/to/older/model   # before / after
    .venv/bin/python benchmarks/bench_accuracy.py --e2e        # + one 512x512x300 scan through `cac-mhub run`

By default the phantoms come from the generator's ``alt`` configuration, which training never
uses (other heart shapes, cylindrical plaques, coarser noise, other pixel sizes and bodies, 0.75-5
mm slices), and 30 % are heart-only (cardiac) fields of view. Seeds start at 900000 (training uses
1000-1999, tests below 1000 or 777001), so every scan is unseen. The scan goes through what the
default workflow does: HeartLocator's heart region, the model on the crop around it, then the
scoring guard. Prints, unguarded and guarded: lesion sensitivity / PPV (3D connected lesions),
voxel Dice, per-artery labelling accuracy, Agatston ICC(2,1) and Spearman against the phantom's
reference score, linearly weighted kappa of the project's (DeepCAC2) risk groups (0, 1-100, 101-300,
>300), and the score the model produced on bone, on aortic wall/valve and mitral-annulus calcium
and on ECG electrodes (should be 0); plus seconds per scan.
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


def evaluate(model: CacModel, seeds: list[int], lesion_vote: bool | None = None, style: str = "alt",
             fov_share: float = 0.3) -> dict[str, object]:
    from cac_mhub.anatomy import analyse
    from cac_mhub.anatomy.guard import guard

    rows = []
    totals = {kind: {"hit": 0, "n_true": 0, "true_found": 0, "n_found": 0, "inter": 0, "sum": 0,
                     "artery_ok": 0, "artery_n": 0} for kind in ("unguarded", "guarded")}
    for seed in seeds:
        rng = np.random.default_rng(seed + 11)
        fov = float(rng.uniform(190.0, 240.0)) if rng.random() < fov_share else None
        phantom = generate_thorax(seed, style=style, fov_mm=fov)
        start = time.perf_counter()
        anatomy = analyse(phantom.hu, phantom.spacing_zyx)
        centre = anatomy.region_centre() if anatomy.found else None
        result = model.segment(phantom.hu, phantom.spacing_zyx, lesion_vote=lesion_vote, heart_centre=centre)
        guarded = guard(result.array, phantom.hu, anatomy).kept if anatomy.found else np.zeros_like(result.array)
        seconds = time.perf_counter() - start
        truth = phantom.labels > 0
        reference = score(phantom.hu, phantom.spacing_zyx, phantom.labels, ARTERY_NAMES).agatston
        row = {"seed": seed, "shape": list(phantom.hu.shape), "increment": phantom.spacing_zyx[0],
               "fov_mm": fov, "burden": phantom.params["burden"], "heart_found": anatomy.found,
               "reference": round(reference, 1), "seconds": round(seconds, 2)}
        for kind, labels in (("unguarded", result.array), ("guarded", guarded)):
            found = labels > 0
            hit, n_t, tf, n_f = lesion_counts(truth, found)
            both = truth & found
            t = totals[kind]
            t["hit"] += hit
            t["n_true"] += n_t
            t["true_found"] += tf
            t["n_found"] += n_f
            t["inter"] += int(both.sum())
            t["sum"] += int(truth.sum() + found.sum())
            t["artery_ok"] += int(np.sum(phantom.labels[both] == labels[both]))
            t["artery_n"] += int(both.sum())
            row[kind] = round(score(phantom.hu, phantom.spacing_zyx, labels, ARTERY_NAMES).agatston, 1)
            for name, codes in (("bone", (1,)), ("aorta_valves", (2, 3, 4)), ("ecg", (5,))):
                on = np.where(np.isin(phantom.distractors, codes), labels, 0)
                row[f"{kind}_on_{name}"] = round(score(phantom.hu, phantom.spacing_zyx, on, ARTERY_NAMES).agatston, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    ref = np.array([r["reference"] for r in rows])
    summary: dict[str, object] = {"scans": len(rows), "style": style, "cardiac_fov_scans": sum(r["fov_mm"] is not None for r in rows),
                                  "heart_found": sum(r["heart_found"] for r in rows)}
    for kind in ("unguarded", "guarded"):
        t = totals[kind]
        pred = np.array([r[kind] for r in rows])
        groups_ref, groups_pred = [risk_group(v) for v in ref], [risk_group(v) for v in pred]
        summary[kind] = {
            "lesion_sensitivity": round(t["hit"] / max(1, t["n_true"]), 3),
            "lesion_ppv": round(t["true_found"] / max(1, t["n_found"]), 3),
            "true_lesions": t["n_true"], "found_lesions": t["n_found"],
            "dice": round(2 * t["inter"] / max(1, t["sum"]), 3),
            "artery_label_accuracy": round(t["artery_ok"] / max(1, t["artery_n"]), 3),
            "agatston_icc_2_1": round(icc_2_1(ref, pred), 3),
            "agatston_spearman": round(float(stats.spearmanr(ref, pred).statistic), 3),
            "risk_group_weighted_kappa": round(weighted_kappa(groups_ref, groups_pred), 3),
            "risk_group_agreement": round(float(np.mean(np.equal(groups_ref, groups_pred))), 3),
            "score_on_bone_total": round(sum(r[f"{kind}_on_bone"] for r in rows), 1),
            "score_on_aorta_and_valves_total": round(sum(r[f"{kind}_on_aorta_valves"] for r in rows), 1),
            "score_on_ecg_leads_total": round(sum(r[f"{kind}_on_ecg"] for r in rows), 1),
        }
    summary.update({
        "seconds_per_scan_mean": round(float(np.mean([r["seconds"] for r in rows])), 2),
        "seconds_per_scan_max": round(float(np.max([r["seconds"] for r in rows])), 2),
        "device": str(model.device), "torch_threads": _threads(),
    })
    return summary


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
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--style", default="alt", choices=["alt", "default"],
                        help="phantom configuration: alt (never used in training) or default (training's)")
    parser.add_argument("--fov-share", type=float, default=0.3, help="share of heart-only fields of view")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--e2e", action="store_true", help="also time the whole chain on a 512x512x300 scan")
    parser.add_argument("--lesion-vote", choices=["card", "on", "off"], default="card",
                        help="whole-lesion majority labels (default: as the model card says)")
    args = parser.parse_args()
    model = CacModel(args.model, device=args.device)
    vote = {"card": None, "on": True, "off": False}[args.lesion_vote]
    summary = evaluate(model, list(range(args.seed, args.seed + args.count)), vote, args.style, args.fov_share)
    summary["lesion_vote"] = model.card.lesion_vote if vote is None else vote
    summary["model"] = model.card.ident
    if args.e2e:
        summary["end_to_end"] = end_to_end(args.model)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
