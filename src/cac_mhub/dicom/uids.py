"""SOP class UIDs and the one way to read a file's SOP class, shared by scanning, stack
splitting and the writers' identity code (so that none of them imports another for it)."""

from __future__ import annotations

from typing import Any

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


def sop_class_of(ds: Any) -> str:
    """SOPClassUID, falling back to the file meta header (some anonymisers blank the former)."""
    value = str(ds.get("SOPClassUID", "") or "").strip()
    meta = getattr(ds, "file_meta", None)
    return value or str(getattr(meta, "MediaStorageSOPClassUID", "") or "").strip()
