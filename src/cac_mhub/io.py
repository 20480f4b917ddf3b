"""Safe output writing: sanitised names and atomic files (temp path in the same folder, then rename)."""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(value: str, fallback: str = "unnamed", max_len: int = 128) -> str:
    """A file-system-safe single path component made from a DICOM value.

    Anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``; leading dots are
    removed so that ``..`` or ``../../x`` can never escape the folder it is joined to.
    """
    name = _UNSAFE.sub("_", str(value)).lstrip(".")[:max_len]
    return name if name.strip("_") else fallback


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it to ``target`` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # hidden temp name that keeps the target's suffixes (writers such as SimpleITK pick the
    # format from them): ".tmp-<random>-ct.nii.gz"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{target.name}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes owner-only files; outputs get the usual mode (0666 minus the umask)
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
