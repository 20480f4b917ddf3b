"""Landmarks that bound the heart: the spine's front edge and the inner anterior chest wall.

Both are per-slice curves on the coarse grid, found from the skeleton mask. They are used as
hard limits: coronary arteries lie in front of the vertebral bodies and behind the sternum,
costal cartilage and ribs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def spine_front(bone: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per slice: the y index of the vertebral body's front edge and the spine's x centre.

    The vertebral body is the largest bone blob in the posterior half of the body near its
    mid-line. NaN where no spine is in view (small cardiac fields of view may cut it off).
    """
    nz, ny, nx = bone.shape
    front = np.full(nz, np.nan)
    centre = np.full(nz, np.nan)
    half_width = int(40.0 / spacing[2])
    for z in range(nz):
        ys, xs = np.nonzero(body[z])
        if ys.size == 0:
            continue
        x_mid = 0.5 * (xs.min() + xs.max())
        y_mid = 0.5 * (ys.min() + ys.max())
        window = np.zeros((ny, nx), bool)
        x0, x1 = max(0, int(x_mid) - half_width), min(nx, int(x_mid) + half_width + 1)
        window[int(y_mid):, x0:x1] = True
        blobs, count = ndimage.label(bone[z] & window)
        if count == 0:
            continue
        sizes = np.bincount(blobs.ravel())
        sizes[0] = 0
        biggest = blobs == int(sizes.argmax())
        if sizes.max() * spacing[1] * spacing[2] < 300.0:  # less than 3 cm2: no vertebral body
            continue
        by, bx = np.nonzero(biggest)
        cx = float(np.median(bx))
        near = np.abs(bx - cx) <= 12.0 / spacing[2]
        front[z] = float(by[near].min())
        centre[z] = cx
    return _fill_gaps(_smooth_nan(front, 5)), _fill_gaps(_smooth_nan(centre, 5))


#: Dense tissue this far in front of the cardiac mass is chest wall (costal cartilage, calcified
#: or cut into pieces by a narrow field of view), never a coronary artery on the heart's surface.
WALL_GAP_MM = 12.0


def anterior_wall(bone: np.ndarray, body: np.ndarray, mass: np.ndarray,
                  spacing: tuple[float, float, float], dense: np.ndarray | None = None) -> np.ndarray:
    """Per slice and column, the y index of the inner (posterior) surface of the anterior chest wall.

    Bone in front of the heart's soft-tissue mass (sternum, costal cartilage, rib ends) marks
    the wall, and so does any ``dense`` tissue at least :data:`WALL_GAP_MM` in front of the mass
    (pieces of calcified cartilage too small for the skeleton, ribs cut short by a narrow field
    of view); between them the surface is interpolated along x, and where none is in view the
    body surface is used. The wall never passes through the mass itself. Returns an array
    ``[z, x]`` (NaN outside the body).
    """
    nz, ny, nx = bone.shape
    wall = np.full((nz, nx), np.nan)
    rows = np.arange(ny)[:, None]
    mass_any = mass.any(axis=(0, 2))
    y_default = int(np.nonzero(mass_any)[0].mean()) if mass_any.any() else ny // 2
    for z in range(nz):
        has_mass = mass[z].any(axis=0)
        mass_front = np.where(has_mass, np.argmax(mass[z], axis=0), y_default)
        front_bone = bone[z] & (rows < mass_front[None, :])
        if dense is not None:
            front_bone |= dense[z] & (rows < (mass_front - WALL_GAP_MM / spacing[1])[None, :]) & has_mass[None, :]
        cols = np.nonzero(front_bone.any(axis=0))[0]
        inner = np.full(nx, np.nan)
        if cols.size:
            # most posterior bone voxel of each column in front of the heart
            last = ny - 1 - np.argmax(front_bone[::-1], axis=0)
            inner[cols] = last[cols]
        body_cols = np.nonzero(body[z].any(axis=0))[0]
        if body_cols.size == 0:
            continue
        skin = np.argmax(body[z], axis=0).astype(float)
        if cols.size >= 2:
            inner = np.interp(np.arange(nx), cols, inner[cols], left=np.nan, right=np.nan)
        inner = np.where(np.isnan(inner), skin, inner)
        inner = np.minimum(inner, np.where(has_mass, mass_front - 1, np.inf))
        inner[~body[z].any(axis=0)] = np.nan
        wall[z] = inner
    return wall


def _fill_gaps(values: np.ndarray) -> np.ndarray:
    """Slices where the spine was not seen take the value interpolated from their neighbours
    (the spine is continuous); all NaN stays all NaN."""
    known = np.nonzero(~np.isnan(values))[0]
    if known.size == 0:
        return values
    return np.interp(np.arange(len(values)), known, values[known])


def _smooth_nan(values: np.ndarray, size: int) -> np.ndarray:
    """Running median that ignores NaN; slices without a value stay NaN."""
    out = values.copy()
    half = size // 2
    for i in range(len(values)):
        if np.isnan(values[i]):
            continue
        window = values[max(0, i - half): i + half + 1]
        out[i] = float(np.nanmedian(window))
    return out
