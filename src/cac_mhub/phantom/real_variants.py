"""Real-derived reconstructions: a real chest CT remade the way other scans come (pure numpy/scipy).

Why: the anatomy rules and the detector must hold on scans this project does not have. The real
chests in ``../shared/data/ct`` are routine whole-chest reconstructions; hospitals also send
ECG-gated calcium-scoring scans (a heart-centred field of view of 160-250 mm on 512 x 512, so
0.32-0.48 mm pixels, 3 mm slices from the carina to below the apex, the body cut by the
reconstruction circle), thick 5 mm chests that reach the liver dome, and low-dose screening scans.
Each function takes a HU volume ``[z, y, x]`` with its spacing and origin (LPS, mm) and returns
the new volume with its own exact geometry, so a known point (a hand-clicked plaque, a heart
centre) can be followed into the variant with :func:`map_point`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: HU written outside the reconstruction circle; the importer maps padding to air (-1024).
OUTSIDE_CIRCLE_HU = -1024


@dataclass(frozen=True)
class Reconstruction:
    """A volume with its geometry (axial, LPS; origin is the centre of voxel [0, 0, 0])."""

    hu: np.ndarray
    spacing: tuple[float, float, float]
    """(z, y, x) in mm."""
    origin: tuple[float, float, float]
    """(x, y, z) LPS in mm of voxel [0, 0, 0], as DICOM writes ImagePositionPatient."""

    def index_of(self, point_lps: tuple[float, float, float]) -> tuple[float, float, float]:
        """Continuous (z, y, x) index of an LPS point."""
        x, y, z = point_lps
        return ((z - self.origin[2]) / self.spacing[0], (y - self.origin[1]) / self.spacing[1],
                (x - self.origin[0]) / self.spacing[2])

    def point_of(self, index_zyx: tuple[float, float, float]) -> tuple[float, float, float]:
        """LPS point of a (z, y, x) index."""
        z, y, x = index_zyx
        return (self.origin[0] + x * self.spacing[2], self.origin[1] + y * self.spacing[1],
                self.origin[2] + z * self.spacing[0])


def map_point(source: Reconstruction, target: Reconstruction, index_zyx: tuple[float, float, float]
              ) -> tuple[float, float, float]:
    """Where a voxel of ``source`` lies in ``target`` (continuous index; may be outside it)."""
    return target.index_of(source.point_of(index_zyx))


def region_share_held(reference: Reconstruction, reference_region: np.ndarray, variant: Reconstruction,
                      variant_region: np.ndarray) -> float:
    """Share of ``reference_region`` (inside the variant's field and height) that ``variant_region`` holds.

    Why: a variant's heart region is judged against the whole chest's, checked by eye; every 2nd
    slice and 4th row and column of the reference is followed into the variant (NaN if none lands
    inside its reconstruction circle).
    """
    points = np.argwhere(reference_region[::2, ::4, ::4]) * [2, 4, 4]
    index = np.round([variant.index_of(reference.point_of(tuple(p))) for p in points]).astype(int).reshape(-1, 3)
    shape = np.array(variant.hu.shape)
    inside = np.all((index >= 0) & (index < shape), axis=1)
    radius = (shape[1] - 1) / 2.0
    inside &= (index[:, 1] - radius) ** 2 + (index[:, 2] - radius) ** 2 <= radius ** 2
    return float(variant_region[tuple(index[inside].T)].mean()) if inside.any() else float("nan")


def resample_z(volume: Reconstruction, increment_mm: float, thickness_mm: float | None = None
               ) -> Reconstruction:
    """Thicker slices: each new slice averages the source over ``thickness_mm`` (default the increment).

    A slab is a weighted mean of the source slices it overlaps (fractional overlap at its ends),
    as a scanner's thick reconstruction integrates the thin one; no slice is interpolated from
    outside the source.
    """
    thickness = float(thickness_mm or increment_mm)
    dz = volume.spacing[0]
    n_src = volume.hu.shape[0]
    top = (n_src - 1) * dz  # centre of the last source slice, relative to slice 0
    first = 0.5 * thickness - 0.5 * dz
    centres = np.arange(first, top - 0.5 * thickness + 0.5 * dz + 1e-6, increment_mm)
    src = volume.hu.astype(np.float32)
    out = np.empty((len(centres), *src.shape[1:]), np.float32)
    edges_lo = np.arange(n_src) * dz - 0.5 * dz
    for k, c in enumerate(centres):
        lo, hi = c - 0.5 * thickness, c + 0.5 * thickness
        weights = np.clip(np.minimum(hi, edges_lo + dz) - np.maximum(lo, edges_lo), 0.0, None)
        use = np.nonzero(weights > 0)[0]
        w = weights[use] / weights[use].sum()
        out[k] = np.tensordot(w, src[use], axes=1)
    origin = (volume.origin[0], volume.origin[1], volume.origin[2] + float(centres[0]) if len(centres) else 0.0)
    return Reconstruction(_as_hu(out), (float(increment_mm), volume.spacing[1], volume.spacing[2]), origin)


def cardiac_field_of_view(volume: Reconstruction, centre_lps: tuple[float, float, float], fov_mm: float,
                          z_range_lps: tuple[float, float], matrix: int = 512, increment_mm: float = 3.0,
                          outside_hu: int = OUTSIDE_CIRCLE_HU) -> Reconstruction:
    """An ECG-gated-like heart-centred reconstruction of a whole chest.

    ``fov_mm`` across ``matrix`` pixels centred on ``centre_lps`` (x, y used), between the patient
    heights ``z_range_lps`` (low, high), at ``increment_mm`` slices; pixels outside the
    reconstruction circle (diameter ``fov_mm``) get ``outside_hu``, as scanners pad them. In-plane
    resampling is linear from the source pixels (finer pixels show no new detail, as with a real
    reconstruction of the same raw data at a smaller field of view it would only partly).
    """
    z_lo, z_hi = sorted(z_range_lps)
    slab = resample_z(volume, increment_mm) if increment_mm > volume.spacing[0] * 1.01 else volume
    keep = [k for k in range(slab.hu.shape[0]) if z_lo <= slab.origin[2] + k * slab.spacing[0] <= z_hi]
    if not keep:
        raise ValueError("the z range misses the volume")
    pixel = fov_mm / matrix
    half = 0.5 * fov_mm - 0.5 * pixel
    xs = centre_lps[0] + np.linspace(-half, half, matrix)
    ys = centre_lps[1] + np.linspace(-half, half, matrix)
    col = (xs - slab.origin[0]) / slab.spacing[2]
    row = (ys - slab.origin[1]) / slab.spacing[1]
    rr, cc = np.meshgrid(row, col, indexing="ij")
    out = np.empty((len(keep), matrix, matrix), np.float32)
    for i, k in enumerate(keep):
        out[i] = ndimage.map_coordinates(slab.hu[k].astype(np.float32), [rr, cc], order=1, mode="constant",
                                         cval=-1024.0)
    yy, xx = np.mgrid[:matrix, :matrix]
    radius = 0.5 * (matrix - 1)
    outside = (yy - radius) ** 2 + (xx - radius) ** 2 > (0.5 * matrix) ** 2
    out[:, outside] = outside_hu
    origin = (float(xs[0]), float(ys[0]), slab.origin[2] + keep[0] * slab.spacing[0])
    return Reconstruction(_as_hu(out), (slab.spacing[0], pixel, pixel), origin)


def low_dose(volume: Reconstruction, sigma_hu: float, seed: int, grain_mm: float = 0.7) -> Reconstruction:
    """Added quantum-like noise: white noise blurred over ``grain_mm`` in-plane, scaled to ``sigma_hu``.

    Only inside the scanned body's air-free part would be truer; air gains noise too, as in
    low-dose scans, where it never reaches tissue HU.
    """
    rng = np.random.default_rng(seed)
    grain = rng.standard_normal(volume.hu.shape).astype(np.float32)
    sigma_px = (0.0, grain_mm / volume.spacing[1], grain_mm / volume.spacing[2])
    grain = ndimage.gaussian_filter(grain, sigma_px)
    grain *= sigma_hu / max(float(grain.std()), 1e-6)
    return Reconstruction(_as_hu(volume.hu.astype(np.float32) + grain), volume.spacing, volume.origin)


def _as_hu(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(values), -1024, 3071).astype(np.int16)
