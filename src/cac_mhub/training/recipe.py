"""One-command training of the default CAC model on synthetic thorax phantoms.

Steps: phantoms (seeds ``seed .. seed+cases-1``) -> heart crop by the same localiser the runner
uses -> nnU-Net v2 raw dataset -> fingerprint and plans, then the 2D configuration edited for
small calcium on CPU -> preprocessing -> :class:`CacTrainer` -> export of the network weights only
(no optimizer state) with its model card and checksums into ``models/<name>/``.

All nnU-Net folders live under ``--work`` (default /tmp/cac_train), never in the repository.
Run: ``python -m cac_mhub.training`` (or ``make train``); the defaults made the shipped model.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..segmentation.nnunet_env import prepare_nnunet_env

log = logging.getLogger("cac_mhub.training")

DATASET_ID = 501
DATASET_NAME = f"Dataset{DATASET_ID:03d}_CacPhantom"
CONFIGURATION = "2d"
#: In-plane spacing (mm) the network sees; fine enough for 1 mm plaques, coarse enough for CPU.
TARGET_SPACING_YX = (0.9, 0.9)
#: At inference one patch covers a whole heart crop (170 x 180 mm at 0.9 mm): one pass a slice.
PATCH_YX = (192, 208)
#: Training uses smaller random patches of the crop (the network is fully convolutional): about
#: 40 % less compute per step on CPU. The exported plans carry the inference patch.
TRAIN_PATCH_YX = (160, 160)
FEATURES = (16, 32, 64, 128, 128)
#: Fixed CT intensity statistics (HU): nnU-Net would otherwise derive them from calcium voxels
#: only and clip away the anatomy that tells arteries, aorta and bone apart.
CT_INTENSITY = {"max": 3071.0, "mean": 0.0, "median": 0.0, "min": -1024.0,
                "percentile_00_5": -1000.0, "percentile_99_5": 1500.0, "std": 400.0}
TRAIN_SEED = 1000


#: Share of training phantoms made as heart-only (cardiac, gated-like) reconstructions.
CARDIAC_FOV_SHARE = 0.3


def heart_crop(hu: np.ndarray, spacing: tuple[float, float, float]) -> tuple[slice, ...]:
    """The crop the runner segments: the card's box around the HeartLocator's heart region."""
    from ..anatomy import analyse
    from ..anatomy.crop import locate_heart

    anatomy = analyse(hu, spacing)
    centre = anatomy.region_centre() if anatomy.found else None
    return locate_heart(hu, spacing, centre_index=centre).slices


def make_case(seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A training case: the heart crop of one phantom and its artery labels."""
    from ..phantom.thorax import generate_thorax

    rng = np.random.default_rng(seed + 7)
    burden = str(rng.choice(["zero", "mild", "moderate", "severe"], p=[0.1, 0.3, 0.3, 0.3]))
    fov = float(rng.uniform(180.0, 250.0)) if rng.random() < CARDIAC_FOV_SHARE else None
    phantom = generate_thorax(seed, burden=burden, fov_mm=fov)
    box = heart_crop(phantom.hu, phantom.spacing_zyx)
    return phantom.hu[box].copy(), phantom.labels[box].copy(), phantom.spacing_zyx


#: Real chest CT used as negatives (no coronary calcium labelled): the scanner's anatomy, bone,
#: aorta and noise that phantoms only imitate. ricord_chest_ge is kept out to measure on.
REAL_NEGATIVES = ("itkelastix_thorax_00",)
#: Variants of each real negative: (noise HU added, slab thickness mm, cardiac field of view mm).
REAL_VARIANTS = ((0.0, None, None), (35.0, None, None), (0.0, 5.0, None), (20.0, 3.0, None),
                 (0.0, None, 220.0), (30.0, 3.0, 200.0))


def real_negative_cases(shared_ct: Path) -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """Heart crops of the real negatives and their variants, labels all zero; [] without the data."""
    from ..dicom.scan import SelectionRules, scan, select
    from ..dicom.volume import assemble

    cases = []
    for name in REAL_NEGATIVES:
        folder = shared_ct / name
        if not folder.is_dir():
            log.warning("real negative %s not found under %s: trained without it", name, shared_ct)
            continue
        found = select(scan(folder).series, SelectionRules())
        if not found:
            continue
        volume, _ = assemble(found[0])
        for index, (noise, slab, fov) in enumerate(REAL_VARIANTS):
            hu, spacing = _variant(volume.hu, volume.spacing_zyx, noise, slab, fov, seed=index)
            box = heart_crop(hu, spacing)
            cases.append((f"real_{name}_{index}", hu[box].copy(), np.zeros(hu[box].shape, np.uint8), spacing))
    return cases


def _variant(hu: np.ndarray, spacing: tuple[float, float, float], noise: float, slab: float | None,
             fov: float | None, seed: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Thicker slabs (mean of neighbouring slices), added low-dose noise, a heart-centred field of view."""
    from scipy import ndimage

    from ..anatomy import analyse

    out = hu.astype(np.float32)
    spacing = tuple(float(s) for s in spacing)
    if slab:
        k = max(1, int(round(slab / spacing[0])))
        n = out.shape[0] // k * k
        out = out[:n].reshape(n // k, k, *out.shape[1:]).mean(axis=1)
        spacing = (spacing[0] * k, spacing[1], spacing[2])
    if fov:
        anatomy = analyse(out, spacing)
        if anatomy.found:
            cz, cy, cx = anatomy.region_centre()
            half = [int(fov / 2.0 / s) for s in spacing[1:]]
            y0, x0 = max(0, int(cy) - half[0]), max(0, int(cx) - half[1])
            out = out[:, y0:y0 + 2 * half[0], x0:x0 + 2 * half[1]]
    if noise:
        rng = np.random.default_rng(seed)
        grain = ndimage.gaussian_filter(rng.standard_normal(out.shape).astype(np.float32), (0, 0.7, 0.7))
        out += grain * (noise / max(float(grain.std()), 1e-6))
    return np.clip(np.round(out), -1024, 3071).astype(np.int16), spacing


def _write_case(args: tuple[int, str]) -> str:
    seed, raw = args
    image, labels, spacing = make_case(seed)
    key = f"phantom_{seed:06d}"
    _write_image(image, spacing, Path(raw) / "imagesTr" / f"{key}_0000.nii.gz")
    _write_image(labels, spacing, Path(raw) / "labelsTr" / f"{key}.nii.gz")
    return key


def _write_image(array: np.ndarray, spacing: tuple[float, float, float], path: Path) -> None:
    import SimpleITK as sitk

    itk = sitk.GetImageFromArray(array)
    itk.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    sitk.WriteImage(itk, str(path), useCompression=True)


def write_dataset(raw_root: Path, cases: int, seed: int, processes: int, shared_ct: Path | None = None) -> Path:
    """Phantom crops (and real negatives from ``shared_ct``) as an nnU-Net v2 raw dataset; returns its folder."""
    raw = raw_root / DATASET_NAME
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    todo = [(s, str(raw)) for s in range(seed, seed + cases)
            if not (raw / "labelsTr" / f"phantom_{s:06d}.nii.gz").exists()]
    if todo:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            for i, key in enumerate(pool.imap_unordered(_write_case, todo)):
                log.info("case %d/%d %s", i + 1, len(todo), key)
    real = []
    if shared_ct is not None:
        for key, image, labels, spacing in real_negative_cases(shared_ct):
            _write_image(image, spacing, raw / "imagesTr" / f"{key}_0000.nii.gz")
            _write_image(labels, spacing, raw / "labelsTr" / f"{key}.nii.gz")
            real.append(key)
            log.info("real negative %s", key)
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "LM": 1, "LAD": 2, "LCX": 3, "RCA": 4},
        "numTraining": cases + len(real),
        "file_ending": ".nii.gz",
        "name": DATASET_NAME,
        "description": "Synthetic thorax phantoms (cac_mhub.phantom.thorax) and real chest CT as negatives, heart crops.",
        "phantom_seeds": [seed, seed + cases - 1],
        "real_negatives": real,
    }
    (raw / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return raw


def plan_and_preprocess(processes: int) -> dict[str, Any]:
    """Fingerprint and default plans, then the 2D configuration edited for calcium; preprocess it."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints, plan_experiments, preprocess_dataset)
    from nnunetv2.paths import nnUNet_preprocessed

    extract_fingerprints([DATASET_ID], num_processes=processes, show_progress_bar=False)
    plan_experiments([DATASET_ID])
    plans_path = Path(nnUNet_preprocessed) / DATASET_NAME / "nnUNetPlans.json"
    plans = json.loads(plans_path.read_text())
    plans = edit_plans(plans)
    plans_path.write_text(json.dumps(plans, indent=2))
    preprocess_dataset(DATASET_ID, configurations=(CONFIGURATION,), num_processes=(processes,),
                       show_progress_bar=False)
    return plans


def edit_plans(plans: dict[str, Any], features: tuple[int, ...] = FEATURES,
               patch_yx: tuple[int, int] = TRAIN_PATCH_YX, batch_size: int = 6) -> dict[str, Any]:
    """Keep only a small 2D configuration: fixed spacing, one-crop patch, few features."""
    config = plans["configurations"]["2d"]
    n = len(features)
    config["spacing"] = list(TARGET_SPACING_YX)
    config["patch_size"] = list(patch_yx)
    config["batch_size"] = batch_size
    config["median_image_size_in_voxels"] = list(patch_yx)
    config["normalization_schemes"] = ["CTNormalization"]
    config["use_mask_for_norm"] = [False]
    arch = config["architecture"]["arch_kwargs"]
    arch["n_stages"] = n
    arch["features_per_stage"] = list(features)
    arch["kernel_sizes"] = [[3, 3]] * n
    arch["strides"] = [[1, 1]] + [[2, 2]] * (n - 1)
    arch["n_conv_per_stage"] = [2] * n
    arch["n_conv_per_stage_decoder"] = [2] * (n - 1)
    plans["configurations"] = {"2d": config}
    plans["foreground_intensity_properties_per_channel"] = {"0": dict(CT_INTENSITY)}
    return plans


def train(epochs: int, iterations: int, device: str = "cpu",
          patch_yx: tuple[int, int] = TRAIN_PATCH_YX, init_weights: Path | None = None,
          initial_lr: float | None = None) -> Path:
    """Train fold 'all' with :class:`CacTrainer`; returns the output folder.

    ``init_weights`` (a checkpoint) starts from earlier weights, e.g. to fine-tune a model
    with a lower ``initial_lr`` when more CPU time is available.
    """
    import torch
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw

    from .trainer import CacTrainer

    plans_path = Path(nnUNet_preprocessed) / DATASET_NAME / "nnUNetPlans.json"
    plans = json.loads(plans_path.read_text())
    plans["configurations"][CONFIGURATION]["patch_size"] = list(patch_yx)
    plans_path.write_text(json.dumps(plans, indent=2))
    dataset_json = json.loads((Path(nnUNet_raw) / DATASET_NAME / "dataset.json").read_text())
    plans["continue_training"] = False  # nnU-Net 2.8 reads (and pops) this flag from the plans
    trainer = CacTrainer(plans, CONFIGURATION, "all", dataset_json, torch.device(device))
    trainer.num_epochs = epochs
    trainer.num_iterations_per_epoch = iterations
    if initial_lr:
        trainer.initial_lr = initial_lr
    if init_weights:
        trainer.initialize()
        state = torch.load(init_weights, map_location="cpu", weights_only=False)["network_weights"]
        trainer.network.load_state_dict(state)
    trainer.run_training()
    return Path(trainer.output_folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cac_mhub.training", description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/cac_train"), help="nnU-Net work folders")
    parser.add_argument("--cases", type=int, default=80)
    parser.add_argument("--seed", type=int, default=TRAIN_SEED, help="first phantom seed")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=40, help="training iterations per epoch")
    parser.add_argument("--processes", type=int, default=2, help="worker processes for data generation")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--name", default="cac-phantom-2d")
    parser.add_argument("--version", default="0.2.0")
    parser.add_argument("--models", type=Path, default=Path("models"), help="export target folder")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--skip-data", action="store_true", help="reuse the preprocessed dataset")
    parser.add_argument("--init-weights", type=Path, default=None, help="start from this checkpoint's weights")
    parser.add_argument("--lr", type=float, default=None, help="initial learning rate (nnU-Net default 0.01)")
    parser.add_argument("--shared-ct", type=Path, default=Path(__file__).resolve().parents[4] / "shared" / "data" / "ct",
                        help="folder with the real CT used as negatives (skipped when absent)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    prepare_nnunet_env(args.work, data_workers=1)
    import torch

    torch.set_num_threads(args.threads)
    start = time.time()
    if not args.skip_data:
        write_dataset(Path(os.environ["nnUNet_raw"]), args.cases, args.seed, args.processes, args.shared_ct)
        log.info("dataset written in %.0f s", time.time() - start)
        plan_and_preprocess(args.processes)
        log.info("preprocessed after %.0f s", time.time() - start)
    out = train(args.epochs, args.iterations, args.device, init_weights=args.init_weights, initial_lr=args.lr)
    log.info("trained after %.0f s", time.time() - start)
    from .export import export_model

    target = export_model(out, args.models / args.name, name=args.name, version=args.version,
                          inference_patch=PATCH_YX,
                          training={"cases": args.cases, "seeds": [args.seed, args.seed + args.cases - 1],
                                    "real_negatives": [f"{name} x {len(REAL_VARIANTS)} variants" for name in REAL_NEGATIVES
                                                       if (args.shared_ct / name).is_dir()],
                                    "cardiac_fov_share": CARDIAC_FOV_SHARE,
                                    "epochs": args.epochs, "iterations_per_epoch": args.iterations,
                                    "train_patch_yx": list(TRAIN_PATCH_YX),
                                    "target_spacing_yx": list(TARGET_SPACING_YX),
                                    "device": args.device, "wall_seconds": round(time.time() - start),
                                    "initial_lr": args.lr or 0.01,
                                    "fine_tuned_from": str(args.init_weights) if args.init_weights else None})
    log.info("exported to %s", target)
    return 0
