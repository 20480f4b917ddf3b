"""``cac-mhub models``: list the installed models and their cards, and whether DeepCAC2's weights are in place."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import deepcac2_weights as deepcac2
from .card import CARD_FILE, ModelError, load_card, models_root, verify_files


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("models", help="list installed segmentation models and their cards")
    parser.add_argument("--root", type=Path, default=None, help="models folder (default: $CAC_MHUB_MODELS_DIR, $CAC_MHUB_HOME/models or the repository's models/)")
    parser.add_argument("--verify", action="store_true", help="also check the sha256 of every model file")
    parser.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    root = args.root or models_root()
    folders = sorted(p for p in root.iterdir() if (p / CARD_FILE).is_file()) if root.is_dir() else []
    deepcac2_installed, deepcac2_line = deepcac2.status(root)
    if not folders:
        print(f"no models under {root}")
        print(deepcac2_line)
        return 0 if deepcac2_installed else 1
    status = 0
    for folder in folders:
        try:
            card = load_card(folder)
            print(card.summary())
            if args.verify:
                verify_files(card)
                print("  checksums: ok")
        except ModelError as error:
            print(f"{folder.name}: INVALID: {error}")
            status = 1
        print()
    print(deepcac2_line)
    return status
