"""Safe output writing: sanitised names and atomic files (hidden temporary folder, then rename)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

TMP_PREFIX = ".tmp-"
"""Prefix of every temporary entry (hidden); a run removes those it finds when it starts."""


def safe_name(value: str, fallback: str = "unnamed", max_len: int = 128) -> str:
    """A file-system-safe single path component made from a DICOM value.

    Anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``; leading dots are
    removed so that ``..`` or ``../../x`` can never escape the folder it is joined to.
    """
    name = _UNSAFE.sub("_", str(value)).lstrip(".")[:max_len]
    return name if name.strip("_") else fallback


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path for ``target``; move it onto ``target`` only on success.

    The temporary file keeps ``target``'s name (writers such as SimpleITK pick the format from
    the suffix) inside a hidden folder beside it, ``.tmp-<random>/ct.nii.gz``: a glob such as
    ``*/*.nii.gz`` never finds a half-written file, and a killed write leaves only that folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=target.parent))
    try:
        yield folder / target.name
        os.replace(folder / target.name, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def atomic_write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def json_default(value: Any) -> Any:
    """``json.dumps`` default for reports: numpy values as numbers, score objects as dicts."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)
