"""QC picture: the scored calcium is drawn, in its artery's colour, on the slices that carry score."""

from __future__ import annotations

import io

import matplotlib.image
import numpy as np

from cac_mhub.plots import ARTERY_COLOURS, lesion_overview
from cac_mhub.scoring.agatston import score


def colour_pixels(png: bytes, hex_colour: str) -> int:
    image = matplotlib.image.imread(io.BytesIO(png))[..., :3]
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(image - rgb).max(axis=-1) < 0.08).sum())


def test_overview_outlines_lesions_in_their_artery_colour():
    hu = np.zeros((10, 64, 64), dtype=np.int16)
    labels = np.zeros_like(hu, dtype=np.uint8)
    hu[4, 20:26, 20:26] = 500
    labels[4, 18:28, 18:28] = 2  # LAD
    result = score(hu, (3.0, 0.5, 0.5), labels, {2: "LAD", 4: "RCA"}).to_dict()
    assert result["agatston"] > 0
    png = lesion_overview(hu, labels, {2: "LAD", 4: "RCA"}, result, (3.0, 0.5, 0.5))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert colour_pixels(png, ARTERY_COLOURS["LAD"]) > 50  # outline + legend
    without_calcium = lesion_overview(hu * 0, labels * 0, {2: "LAD"}, score(hu * 0, (3.0, .5, .5), labels * 0, {2: "LAD"}).to_dict(),
                                      (3.0, 0.5, 0.5))
    assert colour_pixels(without_calcium, ARTERY_COLOURS["LAD"]) < colour_pixels(png, ARTERY_COLOURS["LAD"])
