"""nnU-Net v2 reads its folders from environment variables at import time; set them for it.

Why: users must never have to export nnUNet_raw/_preprocessed/_results, and nnU-Net prints
warnings (or fails) without them. Call :func:`prepare_nnunet_env` before importing nnunetv2.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def prepare_nnunet_env(work_dir: Path | None = None, data_workers: int = 1) -> Path:
    """Point nnU-Net's folders at ``work_dir`` (default: a folder in the system temp dir).

    Only variables that are not already set are filled, so a user's own nnU-Net setup wins.
    ``data_workers`` caps nnU-Net's augmentation / preprocessing worker processes.
    """
    base = Path(work_dir) if work_dir else Path(tempfile.gettempdir()) / "cac_mhub_nnunet"
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        if not os.environ.get(var):
            (base / sub).mkdir(parents=True, exist_ok=True)
            os.environ[var] = str(base / sub)
    os.environ.setdefault("nnUNet_n_proc_DA", str(data_workers))
    # nnU-Net caps torch threads at inference to this number: use every core we have.
    os.environ.setdefault("nnUNet_def_n_proc", str(os.cpu_count() or 1))
    return base
