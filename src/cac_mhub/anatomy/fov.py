"""The scanned field of view: the reconstruction circle, and whether it cuts the body.

Why: a heart-centred reconstruction (ECG-gated calcium scans: 160-250 mm on 512 x 512) shows
only the heart and what surrounds it, and the scanner pads everything outside its
reconstruction circle (the importer turns padding into -1024 HU, the same value as the air
around a patient). Without knowing where the circle runs, lungs cut by it look like air outside
the patient, and the body seems to end there. Every later step asks this module where the
image stops being a picture of the patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Padding (outside the reconstruction circle) after the importer's HU mapping.
PADDING_HU = -1024
#: A field of view this narrow shows the heart only (cardiac reconstructions are 160-250 mm).
CARDIAC_FOV_MM = 260.0
#: Share of slices with a lung cut by the field's edge that marks a heart-centred reconstruction.
CUT_LUNG_SLICES = 0.25
#: ... or a narrow field whose edge the body covers this much (a body wholly inside covers none).
BODY_ON_EDGE = 0.25


@dataclass(frozen=True)
class FieldOfView:
    """Where the coarse grid holds a picture of the patient (2D, the same in every slice)."""

    scanned: np.ndarray
    """2D coarse mask: inside the reconstruction circle (the whole image when there is none)."""
    rim: np.ndarray
    """2D coarse mask: the scanned area's outermost ring (about 4 mm): where the picture stops."""
    diameter_mm: float
    """Width of the scanned area across x."""
    circle: bool
    """A reconstruction circle pads the image's corners."""
    cut_lung_share: float = 0.0
    """Share of slices in which a lung reaches the field's edge (set once the body is known)."""
    body_on_edge_share: float = 0.0
    """Share of the field's edge the body covers, over all slices (set once the body is known)."""

    @property
    def truncated(self) -> bool:
        """The body is cut around the heart (a heart-centred reconstruction): the lungs are slivers."""
        narrow = self.diameter_mm <= CARDIAC_FOV_MM and self.body_on_edge_share >= BODY_ON_EDGE
        return narrow or self.cut_lung_share >= CUT_LUNG_SLICES

    def summary(self) -> dict[str, object]:
        return {"field_of_view_mm": round(self.diameter_mm, 1), "reconstruction_circle": self.circle,
                "heart_centred_field_of_view": self.truncated}


def scanned_area(hu: np.ndarray) -> np.ndarray:
    """2D mask (full grid) of pixels that hold data in some slice: padding is -1024 in every slice.

    Air around a patient is noisy (about -1000, seldom exactly -1024 in every slice); the padding
    outside a reconstruction circle is constant. The area is made convex, as a circle is. A
    volume padded almost nowhere is scanned everywhere.
    """
    data = np.zeros(hu.shape[1:], bool)
    for start in range(0, hu.shape[0], 16):  # chunked: no full-size boolean copy
        data |= (hu[start:start + 16] > PADDING_HU).any(axis=0)
    if data.mean() > 0.98:
        return np.ones_like(data)
    from skimage.morphology import convex_hull_image

    filled = ndimage.binary_fill_holes(ndimage.binary_opening(data, iterations=2))
    if not filled.any():
        return np.ones_like(data)
    return convex_hull_image(filled)


def field_of_view(scanned_full: np.ndarray, factors: tuple[int, int, int], coarse_shape: tuple[int, int, int],
                  spacing: tuple[float, float, float]) -> FieldOfView:
    """The field of view on the coarse grid (a coarse voxel is scanned when all its pixels are)."""
    _, fy, fx = factors
    ny, nx = coarse_shape[1:]
    scanned = scanned_full[: ny * fy, : nx * fx].reshape(ny, fy, nx, fx).all(axis=(1, 3))
    ring = max(1, int(round(4.0 / spacing[1])))
    rim = scanned & ~ndimage.binary_erosion(scanned, iterations=ring, border_value=0)
    columns = np.nonzero(scanned.any(axis=0))[0]
    diameter = float((columns.max() - columns.min() + 1) * spacing[2]) if columns.size else 0.0
    return FieldOfView(scanned, rim, diameter, not scanned.all())
