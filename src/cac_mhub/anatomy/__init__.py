"""Anatomy from HU arrays: body, lungs, skeleton, aorta and the heart region (pure functions).

:func:`analyse` is the entry point used by the chain; the parts live in their own modules.
"""

from .analysis import Anatomy, analyse

__all__ = ["Anatomy", "analyse"]
