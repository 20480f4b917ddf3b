"""Edit headers of DICOM files written by the synthetic writers, the way real files go wrong."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag


def edit(path: Path, meta: dict[str, Any] | None = None, **changes: Any) -> None:
    """Rewrite one file: keyword=None deletes, bytes are stored raw (any text, even invalid for
    the VR, as a scanner or anonymiser may have written it), anything else is set normally."""
    ds = pydicom.dcmread(path, force=True)
    for keyword, value in changes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        elif isinstance(value, bytes):
            tag = Tag(keyword)
            raw = value + b" " if len(value) % 2 else value
            ds._dict[tag] = RawDataElement(tag, dictionary_VR(tag), len(raw), raw, 0, False, True)
        else:
            setattr(ds, keyword, value)
    for keyword, value in (meta or {}).items():
        setattr(ds.file_meta, keyword, value)
    ds.save_as(path)


def edit_all(paths: list[Path], meta: dict[str, Any] | None = None, **changes: Any) -> None:
    for path in paths:
        edit(path, meta, **changes)


def make_unreadable(path: Path, monkeypatch: Any) -> None:
    """chmod 000; as root (which reads anyway) the open/scandir calls on it fail instead."""
    os.chmod(path, 0)
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            path.open("rb").close()
    except PermissionError:
        return  # the file system refuses: the real thing
    os.chmod(path, 0o755 if path.is_dir() else 0o644)
    target = str(path)
    if path.is_dir():
        real_scandir = os.scandir

        def scandir(top: Any = ".") -> Any:
            if isinstance(top, (str, os.PathLike)) and os.fspath(top) == target:
                raise PermissionError(13, "Permission denied", target)
            return real_scandir(top)

        monkeypatch.setattr(os, "scandir", scandir)
    else:
        import builtins

        from cac_mhub.dicom import scan as scan_module

        real_open = builtins.open

        def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, (str, os.PathLike)) and os.fspath(file) == target:
                raise PermissionError(13, "Permission denied", target)
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(scan_module, "open", guarded_open, raising=False)
