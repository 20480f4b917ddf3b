"""Where DeepCAC2's weights file is expected, and what to say when it is not there (no torch here).

The file is the user's: DeepCAC2's published ``vivid-haze-6_model.pt``, put at
``<models folder>/deepcac2/vivid-haze-6_model.pt`` ($CAC_MHUB_MODELS_DIR, $CAC_MHUB_HOME/models or
the repository's models/) or named with ``DeepCac2Runner.weights``. Nothing downloads it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..paths import models_dir

#: File name of the published weights (the "alpha" release MHub's deepcac2 model runs).
WEIGHTS_FILE = "vivid-haze-6_model.pt"
#: Folder under the models folder where the weights are looked for by default.
WEIGHTS_FOLDER = "deepcac2"


def default_weights_path(root: Path | None = None) -> Path:
    """``<models folder>/deepcac2/vivid-haze-6_model.pt``."""
    return (root or models_dir()) / WEIGHTS_FOLDER / WEIGHTS_FILE


def resolve_weights(option: str = "") -> Path:
    """The file named by the option (a file, or a folder holding ``vivid-haze-6_model.pt``), else the default."""
    if not option:
        return default_weights_path()
    path = Path(os.path.expandvars(option)).expanduser()
    return path / WEIGHTS_FILE if path.is_dir() else path


def missing_message(path: Path) -> str:
    """What to do when the weights are not there: the file, where it goes, that nothing is fetched."""
    return (f"DeepCAC2 weights not found: put {WEIGHTS_FILE} (DeepCAC2's published 3D U-Net state dict) "
            f"at {path}, or name the file with DeepCac2Runner.weights; nothing is downloaded (docs/deepcac2.md)")


def status(root: Path | None = None) -> tuple[bool, str]:
    """(installed, one line for ``cac-mhub models``) of the DeepCAC2 backend under ``root``."""
    path = default_weights_path(root)
    if path.is_file():
        return True, f"deepcac2  (DeepCAC2 3D U-Net, DeepCac2Runner; workflow deepcac2): installed: {path}"
    return False, f"deepcac2  (DeepCAC2 3D U-Net, DeepCac2Runner): weights not found: put {WEIGHTS_FILE} in {path.parent}"
