"""Model cards (``models/<name>/model.yml``): what a model folder is, means and may be used for.

Why: an nnU-Net results folder says nothing about what its labels mean, where its training
data came from or whether the weights are the ones that were validated. The card adds the
label -> artery mapping, provenance and intended use, and a sha256 for every file that is
loaded, checked before anything is unpickled.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..paths import models_dir
from typing import Any

import yaml

from ..types import ARTERIES, UNASSIGNED

CARD_FILE = "model.yml"
REQUIRED = ("name", "version", "labels", "files", "nnunet", "intended_use", "training_data", "license")


class ModelError(Exception):
    """A model folder or card that cannot be used; the message says what to fix."""


@dataclass
class ModelCard:
    """A validated model card, with the folder it describes."""

    folder: Path
    name: str
    version: str
    labels: dict[int, str]
    files: dict[str, str]
    """Relative path -> sha256 of every file the runner loads."""
    configuration: str
    folds: list[str]
    checkpoint: str
    intended_use: str
    training_data: str
    license: str
    localisation: dict[str, Any] = field(default_factory=dict)
    """Empty: run on the whole scan; ``{method: lungs, box_mm: [z, y, x]}``: crop the heart first."""
    min_hu: float | None = 130.0
    lesion_vote: bool = False
    """Give each calcium lesion the network's majority label (see ``runner.vote_lesions``)."""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"

    def summary(self) -> str:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return (f"{self.ident}  ({self.configuration}, folds {','.join(self.folds)}; labels {labels})\n"
                f"  folder: {self.folder}\n  training data: {self.training_data}\n"
                f"  intended use: {self.intended_use}\n  licence: {self.license}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def load_card(folder: Path) -> ModelCard:
    """Read and validate ``folder/model.yml``; raises :class:`ModelError` with the reason."""
    folder = Path(folder)
    path = folder / CARD_FILE
    if not path.is_file():
        raise ModelError(f"model folder {folder} has no {CARD_FILE} model card")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ModelError(f"{path}: not valid YAML: {error}") from None
    missing = [key for key in REQUIRED if key not in raw]
    if missing:
        raise ModelError(f"{path}: missing required field(s): {', '.join(missing)}")
    labels = {}
    for key, value in dict(raw["labels"]).items():
        if str(value) not in (*ARTERIES, UNASSIGNED):
            raise ModelError(f"{path}: label {key} maps to {value!r}; use one of {', '.join((*ARTERIES, UNASSIGNED))}")
        labels[int(key)] = str(value)
    if not labels or 0 in labels:
        raise ModelError(f"{path}: labels must map positive label values to arteries")
    files = {str(k): str(v).lower() for k, v in dict(raw["files"]).items()}
    nn = dict(raw["nnunet"])
    folds = [str(f) for f in nn.get("folds", ["all"])]
    checkpoint = str(nn.get("checkpoint", "checkpoint_final.pth"))
    needed = ["dataset.json", "plans.json"] + [f"fold_{f}/{checkpoint}" for f in folds]
    unlisted = [n for n in needed if n not in files]
    if unlisted:
        raise ModelError(f"{path}: files must list a sha256 for {', '.join(unlisted)}")
    post = dict(raw.get("postprocess") or {})
    return ModelCard(
        folder=folder, name=str(raw["name"]), version=str(raw["version"]), labels=labels, files=files,
        configuration=str(nn.get("configuration", "3d_fullres")), folds=folds, checkpoint=checkpoint,
        intended_use=str(raw["intended_use"]).strip(), training_data=str(raw["training_data"]).strip(),
        license=str(raw["license"]), localisation=dict(raw.get("localisation") or {}),
        min_hu=post.get("min_hu", 130.0), lesion_vote=bool(post.get("lesion_vote", False)), raw=raw)


def verify_files(card: ModelCard, only: list[str] | None = None) -> dict[str, str]:
    """Check the sha256 of the card's files (or of ``only``); returns path -> sha256.

    Raises :class:`ModelError` naming the file for a missing file or a checksum mismatch, so
    that tampered or truncated weights are never loaded.
    """
    checked = {}
    for rel in only or list(card.files):
        expected = card.files.get(rel)
        if expected is None:
            raise ModelError(f"{card.ident}: {rel} has no sha256 in {card.folder / CARD_FILE}")
        path = card.folder / rel
        if not path.is_file():
            raise ModelError(f"{card.ident}: model file missing: {path}")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelError(f"{card.ident}: sha256 mismatch for {path}: expected {expected}, got {actual}; "
                             "the file is corrupt or not the one the card describes")
        checked[rel] = actual
    return checked


def models_root() -> Path:
    """Where installed models live (see :mod:`cac_mhub.paths`: $CAC_MHUB_MODELS_DIR,
    $CAC_MHUB_HOME/models, else the repository's models/ folder)."""
    return models_dir()


def resolve_model(model: str, root: Path | None = None) -> Path:
    """A model name under the models root, or a path to a model folder."""
    candidate = Path(model).expanduser()
    if candidate.is_dir() and (candidate / CARD_FILE).is_file():
        return candidate
    folder = (root or models_root()) / model
    if folder.is_dir():
        return folder
    known = ", ".join(sorted(c.name for c in list_models(root))) or "none"
    raise ModelError(f"model {model!r} not found (looked for a folder with {CARD_FILE} and under "
                     f"{root or models_root()}); installed: {known}")


def list_models(root: Path | None = None) -> list[ModelCard]:
    """Every valid model card under the models root (invalid ones are skipped)."""
    root = root or models_root()
    cards = []
    if root.is_dir():
        for sub in sorted(p for p in root.iterdir() if (p / CARD_FILE).is_file()):
            try:
                cards.append(load_card(sub))
            except ModelError:
                continue
    return cards


def write_card(folder: Path, card: dict[str, Any]) -> Path:
    """Write ``card`` as model.yml, filling ``files`` with the sha256 of the listed files."""
    folder = Path(folder)
    card = dict(card)
    card["files"] = {rel: sha256_file(folder / rel) for rel in card["files"]}
    path = folder / CARD_FILE
    path.write_text(yaml.safe_dump(card, sort_keys=False, width=100), encoding="utf-8")
    return path
