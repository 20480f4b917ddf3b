"""Accuracy and speed of a CAC model on synthetic thorax phantoms it has never seen, with and without the guard.

    .venv/bin/python benchmarks/bench_accuracy.py                      # 16 phantoms, style alt
    .venv/bin/python benchmarks/bench_accuracy.py --style default --count 12 --seed 900000
    .venv/bin/python benchmarks/bench_accuracy.py --model /path/to/older/model   # before / after
    .venv/bin/python benchmarks/bench_accuracy.py --e2e        # + one 512x512x300 scan through `cac-mhub run`
    .venv/bin/python benchmarks/bench_accuracy.py --transplant # real calcium on held-out real hearts (below)

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

``--transplant``: real calcium on real hearts the detector never saw. The held-out chests of
:mod:`cac_mhub.training.detector` (lungdx_a0001, lidc_0295, lidc_0028) and their gated-like and
5 mm reconstructions each get 0-6 real calcifications of the held-out scans laid into their
epicardial fat (:mod:`cac_mhub.training.transplant`); the reference is the Agatston of the
transplanted voxels plus, on lidc_0295 and lidc_0028, their hand-clicked real plaques. Scored two
ways: the model alone (guarded, as before this work) and the model with CalciumDetector
(completion, the candidate detector, arteries by position; guarded). Prints Agatston ICC(2,1),
Spearman, risk-group weighted kappa, lesion sensitivity, the score on the calcium-free hearts;
and per-artery agreement on phantoms whose own plaques were replaced by real calcifications
(the phantom's artery is known there; real hearts carry no artery truth).
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


def transplanted(model: CacModel, repeats: int = 2, seed: int = 5) -> dict[str, object]:
    """The model alone and the model with CalciumDetector on real calcium transplanted onto held-out real hearts."""
    from cac_mhub.anatomy import analyse
    from cac_mhub.anatomy.guard import guard
    from cac_mhub.training.detector import TEST, load_real, variants
    from cac_mhub.training.transplant import calcified_patches, coronary_sites, paste

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"
    reference_clicks = json.loads((Path(__file__).resolve().parents[1] / "tests" / "data" /
                                   "real_calcium_reference.json").read_text())["scans"]
    rng = np.random.default_rng(seed)
    scans, patches = {}, []
    for name in TEST:
        if (shared / name).is_dir():
            scans[name] = load_real(shared / name)
            patches += calcified_patches(scans[name][0], scans[name][1], analyse(scans[name][0], scans[name][1]), name)
    rows = []
    for name, (hu, spacing, origin) in scans.items():
        for case, v_hu, v_spacing in variants(name, hu, spacing, origin, rng):
            if "low dose" in case:
                continue
            for _ in range(repeats):
                moved = v_hu.copy()
                anatomy = analyse(moved, v_spacing)
                truth = np.zeros(moved.shape, bool)
                if case == name and name in reference_clicks:
                    from cac_mhub.scoring.reader import reader_mask

                    for lesion in reference_clicks[name]["lesions"]:
                        truth |= reader_mask(moved, v_spacing, lesion["clicks"])
                real_plaque = bool(truth.any()) or name in reference_clicks
                for site in coronary_sites(moved, anatomy, v_spacing, int(rng.integers(0, 7)), rng):
                    truth |= paste(moved, v_spacing, patches[int(rng.integers(len(patches)))], site, rng)
                row = {"case": case, "real_plaque": real_plaque,
                       "reference": score(moved, v_spacing, truth.astype(np.uint8), {1: "CAC"}).agatston}
                anatomy = analyse(moved, v_spacing)
                for kind in ("model", "model+detector"):
                    row[kind] = _score_case(model, moved, v_spacing, anatomy, kind == "model+detector", truth)
                rows.append(row)
                print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    # real plaques exist only where they were clicked: rows of those scans' variants have an unknown truth
    usable = [r for r in rows if not r["real_plaque"] or r["case"] in reference_clicks]
    ref = np.array([r["reference"] for r in usable])
    out: dict[str, object] = {"cases": len(usable), "left_out_unknown_truth": len(rows) - len(usable)}
    for kind in ("model", "model+detector"):
        pred = np.array([r[kind]["agatston"] for r in usable])
        g_ref, g_pred = [risk_group(v) for v in ref], [risk_group(v) for v in pred]
        free = [r[kind]["agatston"] for r in usable if r["reference"] == 0]
        out[kind] = {"agatston_icc_2_1": round(icc_2_1(ref, pred), 3),
                     "agatston_spearman": round(float(stats.spearmanr(ref, pred).statistic), 3),
                     "risk_group_weighted_kappa": round(weighted_kappa(g_ref, g_pred), 3),
                     "risk_group_agreement": round(float(np.mean(np.equal(g_ref, g_pred))), 3),
                     "lesion_sensitivity": round(sum(r[kind]["hit"] for r in usable) / max(1, sum(r[kind]["lesions"] for r in usable)), 3),
                     "calcium_free_cases": len(free), "calcium_free_max_agatston": round(max(free, default=0.0), 1)}
    out["per_artery_on_phantoms"] = phantom_arteries(model, patches, rng)
    return out


def _score_case(model: CacModel, hu: np.ndarray, spacing: tuple[float, float, float], anatomy, detector: bool,
                truth: np.ndarray) -> dict[str, float]:
    """Agatston of the guarded labels, and how many true lesions they touch."""
    from cac_mhub.anatomy.guard import guard

    if not anatomy.found:
        return {"agatston": 0.0, "hit": 0, "lesions": int(ndimage.label(truth, np.ones((3, 3, 3)))[1])}
    labels = model.segment(hu, spacing, heart_centre=anatomy.region_centre()).array
    if detector:
        labels = _detect(labels, hu, spacing, anatomy)
    kept = guard(labels, hu, anatomy).kept
    hit, n_true, _, _ = lesion_counts(truth, kept > 0)
    return {"agatston": float(score(hu, spacing, kept, ARTERY_NAMES).agatston), "hit": hit, "lesions": n_true}


def _detect(labels: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float], anatomy) -> np.ndarray:
    """What CalciumDetector does, on arrays (the module's run without an Instance)."""
    from cac_mhub.chain import Context, Instance
    from cac_mhub.modules.calcium_detector import CalciumDetector
    from cac_mhub.types import Labels, Volume

    module = CalciumDetector()
    module.setup(None)  # type: ignore[arg-type]
    instance = Instance("bench", volume=Volume(hu, spacing, (0.0, 0.0, 0.0)),
                        labels=Labels(labels.copy(), dict(ARTERY_NAMES)), anatomy=anatomy)
    module.run(instance, None)  # type: ignore[arg-type]
    return instance.labels.array


def phantom_arteries(model: CacModel, patches: list, rng: np.random.Generator, count: int = 8,
                     seed: int = 900_200) -> dict[str, object]:
    """Phantoms (configuration alt) whose plaques are replaced by real calcifications: artery agreement."""
    from cac_mhub.anatomy import analyse
    from cac_mhub.anatomy.guard import guard
    from cac_mhub.training.transplant import paste

    agree = {"model": [0, 0], "model+detector": [0, 0]}
    for s in range(seed, seed + count):
        phantom = generate_thorax(s, style="alt", burden="moderate")
        hu = phantom.hu.copy()
        spacing = phantom.spacing_zyx
        calcium = ndimage.binary_dilation(phantom.labels > 0, iterations=2)
        shell = ndimage.binary_dilation(calcium, iterations=2) & ~calcium
        hu[calcium] = int(np.median(hu[shell])) if shell.any() else -100
        truth = np.zeros(hu.shape, np.uint8)
        origin = np.asarray(phantom.origin_lps)
        for plaque in phantom.plaques:
            centre = np.asarray(plaque.center_lps)
            index = tuple(int(round(v)) for v in ((centre[2] - origin[2]) / spacing[0], (centre[1] - origin[1]) / spacing[1],
                                                  (centre[0] - origin[0]) / spacing[2]))
            if not all(0 <= i < n for i, n in zip(index, hu.shape)):
                continue
            mask = paste(hu, spacing, patches[int(rng.integers(len(patches)))], index, rng)
            truth[mask] = {n: v for v, n in ARTERY_NAMES.items()}[plaque.artery]
        anatomy = analyse(hu, spacing)
        if not anatomy.found:
            continue
        for kind in agree:
            labels = model.segment(hu, spacing, heart_centre=anatomy.region_centre()).array
            if kind == "model+detector":
                labels = _detect(labels, hu, spacing, anatomy)
            kept = guard(labels, hu, anatomy).kept
            both = (truth > 0) & (kept > 0)
            agree[kind][0] += int(np.sum(truth[both] == kept[both]))
            agree[kind][1] += int(both.sum())
    return {k: {"voxels_compared": n, "artery_agreement": round(ok / max(1, n), 3)} for k, (ok, n) in agree.items()}


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
    parser.add_argument("--transplant", action="store_true",
                        help="real calcium on held-out real hearts and phantoms: model alone vs with CalciumDetector")
    parser.add_argument("--lesion-vote", choices=["card", "on", "off"], default="card",
                        help="whole-lesion majority labels (default: as the model card says)")
    args = parser.parse_args()
    model = CacModel(args.model, device=args.device)
    if args.transplant:
        print(json.dumps(transplanted(model), indent=2))
        return 0
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
