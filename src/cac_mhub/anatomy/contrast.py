"""Was contrast given? Judged from the blood, where the blood is: in the heart and great vessels.

Non-contrast blood is 30-60 HU; iodine lifts it to 150-600 HU. Two measures, both on the
coarse grid of :mod:`.analysis`:

* the heart's blood pool: median HU of the cardiac soft-tissue mass away from its surface,
  when the heart was found (a non-contrast or calcium-scoring scan always has one);
* enhanced blood: the largest thick, connected region whose HU, smoothed over about 6 mm, lies
  in 180-600 HU, in front of the spine (vertebral marrow fooled a whole-image test on 5 mm
  scans): in the heart region and aorta when the heart was found, else between the lungs, else
  (no lungs in view: a cropped cardiac CTA, say) in the whole image. A contrast-filled heart and
  aorta are hundreds of cm3 and centimetres thick; sternum, ribs and cartilage are thin.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .analysis import Anatomy
from .masks import convex_hull_slices

#: Blood pool median at or above this is contrast-enhanced (non-contrast: 30-60 HU).
ENHANCED_BLOOD_HU = 150.0
#: Connected enhanced blood in the mediastinum at or above this volume is contrast.
ENHANCED_CM3 = 100.0
#: ... and anywhere in a scan without lungs (a cardiac crop holds heart and aorta only).
ENHANCED_CM3_NO_LUNGS = 350.0


def blood_pool_hu(anatomy: Anatomy) -> float | None:
    """Median HU of the heart's chambers (mass eroded by about 4 mm); None without a heart."""
    if not anatomy.found or not anatomy.heart_mass.any():
        return None
    core = ndimage.binary_erosion(anatomy.heart_mass, iterations=2)
    if not core.any():
        core = anatomy.heart_mass
    return float(np.median(anatomy.coarse_hu[core]))


def enhanced_volume_cm3(anatomy: Anatomy) -> tuple[float, bool]:
    """Largest thick, connected 180-600 HU (6 mm smoothed) region; and whether lungs were in view.

    Searched in front of the spine: in the heart region and the aorta when the heart was found
    (and well wrapped in fat: iodine makes the chambers bright, so a heart-centred view can take
    another mass for the heart), else between the lungs, else (no lungs in view) everywhere. Thick means a ball of 10 mm
    radius fits in it somewhere: a contrast-filled chamber or aorta does, the sternum, ribs and
    costal cartilage (which look like enhanced blood after smoothing) do not.
    """
    coarse, spacing = anatomy.coarse_hu, anatomy.grid.spacing
    size = [max(1, int(round(6.0 / s))) for s in spacing]
    smooth = ndimage.uniform_filter(coarse, size=size)
    blood_like = (smooth > 180.0) & (smooth < 600.0) & anatomy.body
    between_lungs = anatomy.lungs.sum() * float(np.prod(spacing)) / 1000.0 >= 50.0
    if anatomy.found and not anatomy.info.get("heart_weakly_wrapped"):
        blood_like &= ndimage.binary_dilation(anatomy.region | anatomy.aorta, iterations=2)
    elif between_lungs:
        blood_like &= convex_hull_slices(anatomy.lungs) & ~anatomy.lungs
    else:
        # away from dense cortical bone, whose marrow and partial volume look like blood
        blood_like &= ~ndimage.binary_dilation(coarse > 700.0, iterations=2)
    if between_lungs:
        rows = np.arange(coarse.shape[1])[None, :, None]
        front = np.where(np.isnan(anatomy.spine_front), coarse.shape[1], anatomy.spine_front)
        blood_like &= rows < front[:, None, None]
    labels, count = ndimage.label(blood_like)
    if count == 0:
        return 0.0, between_lungs
    thickness = ndimage.maximum(ndimage.distance_transform_edt(blood_like, sampling=spacing), labels,
                                index=np.arange(1, count + 1))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:] * float(np.prod(spacing)) / 1000.0
    thick = sizes[np.asarray(thickness) >= 10.0]
    return (float(thick.max()) if thick.size else 0.0), between_lungs


def contrast_evidence(anatomy: Anatomy) -> tuple[str, dict[str, float | None]]:
    """Non-empty evidence text when the image is contrast-enhanced, and the measures behind it."""
    blood = blood_pool_hu(anatomy)
    volume, between_lungs = enhanced_volume_cm3(anatomy)
    measures = {"blood_pool_hu": None if blood is None else round(blood, 1),
                "enhanced_blood_cm3": round(volume, 1)}
    if blood is not None and blood >= ENHANCED_BLOOD_HU:
        return f"image: heart blood pool {blood:.0f} HU (non-contrast blood is 30-60 HU)", measures
    limit = ENHANCED_CM3 if between_lungs else ENHANCED_CM3_NO_LUNGS
    if volume >= limit:
        where = "between the lungs" if between_lungs else "in the image (no lungs in view)"
        return f"image: {volume:.0f} cm3 of connected contrast-enhanced blood (180-600 HU) {where}", measures
    return "", measures
