"""Table cells, written and read back: one rule for the cohort CSV's text and numbers.

Below every part that writes or reads our tables (the report exporter writes ``cohort.csv``; the
dashboard, ``compare`` and ``outcomes`` read it), so none of them imports another for it.
:func:`csv_cell` puts an apostrophe before text a spreadsheet would run as a formula;
:func:`number` reads a number back, apostrophe or not.
"""

from __future__ import annotations

import math
import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value: Any) -> Any:
    """A spreadsheet-safe cell: one line, no control characters, never read as a formula.

    Text starting with ``= + - @`` gets a leading apostrophe (spreadsheets show it as text)
    unless it is a plain number such as ``-1.5``; non-text values pass unchanged.
    """
    if not isinstance(value, str):
        return value
    text = _CONTROL.sub(lambda m: " " if m.group() in "\t\r\n" else "", value)
    if text.lstrip()[:1] in ("=", "+", "-", "@") and not _NUMBER.fullmatch(text):
        text = "'" + text
    return text


def number(value: Any) -> float | None:
    """A finite float from a cell, or None (empty, text, NaN, infinity)."""
    try:
        result = float(str(value).strip().lstrip("'"))
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None
