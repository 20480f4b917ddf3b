"""One call from a HU volume to the masks that decide where coronary calcium may count.

Everything is computed on a coarse (about 2 mm) copy of the scan and brought back to the CT
grid; see :mod:`.heart` for the method and its limits. The result says plainly when there is
no heart in the field of view, so that no series is given a silent zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage

from . import aorta, fov, heart, landmarks, masks
from .grid import CoarseGrid

#: Coronary calcium lies below this height above the aortic root's last clear disc ...
ROOT_TOP_MM = 25.0
#: ... or this height above the heart's centre, whichever is higher (the root's last clear
#: disc can be low when the aorta runs along the heart, as in simple phantoms).
CENTRE_TOP_MM = 45.0
#: ... and above this depth below the heart's centre.
BELOW_CENTRE_MM = 50.0
#: The fat round the aortic root where the coronary arteries leave it (see :func:`root_zone`).
ROOT_REACH_MM = 15.0
ROOT_BELOW_MM = 20.0
ROOT_ABOVE_MM = 10.0
#: Fallback top when the ascending aorta is not found.
ABOVE_CENTRE_MM = 60.0
#: Epicardial fat around the cardiac mass.
FAT_MARGIN_MM = 10.0
#: No coronary artery lies this close to an airway's lumen: its wall (calcified cartilage) and the
#: nodes on it are left out. 9 mm, not less: the coarse grid's lumen misses the partial-volume rim
#: (a bronchial-wall calcification of ricord_chest_ge at the carina measures 8.4 mm from it).
AIRWAY_MARGIN_MM = 9.0
#: Skeleton and aorta grown by these margins before they are cut out of the region.
BONE_MARGIN_MM = 2.0
AORTA_MARGIN_MM = 3.0
#: The ascending aorta's root carries the coronary ostia on its wall: a tighter margin there.
ASCENDING_MARGIN_MM = 1.5
#: Where the spine is out of view: its front edge and mid-line relative to the heart's centre
#: (the ventricles' centre lies about 6-9 cm in front of the vertebral bodies, left of them).
SPINE_BEHIND_CENTRE_MM = 75.0
SPINE_RIGHT_OF_CENTRE_MM = 25.0
#: Points further behind the vertebral bodies' front edge than this are never heart.
SPINE_MARGIN_MM = 5.0


@dataclass
class Anatomy:
    """Masks on a coarse grid (upsample with :meth:`full`) and what was found."""

    grid: CoarseGrid
    coarse_hu: np.ndarray
    """The scan block-averaged onto the coarse grid (float32 HU)."""
    body: np.ndarray
    lungs: np.ndarray
    bone: np.ndarray
    aorta: np.ndarray
    heart_mass: np.ndarray
    region: np.ndarray
    """Where coronary calcium may be: the heart and its epicardial fat, minus everything else."""
    spine_front: np.ndarray
    """Per coarse slice, the y index of the vertebral bodies' front edge (NaN: not in view)."""
    found: bool
    reason: str = ""
    """Why no heart region could be given (empty when found)."""
    info: dict[str, Any] = field(default_factory=dict)
    airways: np.ndarray | None = None
    """Wide pure-air lumens near the heart (trachea, bronchi, oesophagus), coarse grid; None: not looked for."""

    def full(self, name: str) -> np.ndarray:
        """A mask on the CT grid."""
        return self.grid.upsample(getattr(self, name))

    def region_centre(self) -> tuple[float, float, float]:
        """Centre of the heart region's bounding box, as a CT-grid index (z, y, x)."""
        box = ndimage.find_objects(self.region.astype(np.uint8))[0]
        return self.grid.to_full_index(tuple((b.start + b.stop - 1) / 2.0 for b in box))  # type: ignore[arg-type]

    def summary(self) -> dict[str, Any]:
        voxel_cm3 = float(np.prod(self.grid.spacing)) / 1000.0
        out = {"heart_found": self.found, "reason": self.reason,
               "heart_region_cm3": round(float(self.region.sum()) * voxel_cm3, 1),
               "lungs_cm3": round(float(self.lungs.sum()) * voxel_cm3, 1)}
        out.update({k: v for k, v in self.info.items() if not k.startswith("_")})
        return out


def analyse(hu: np.ndarray, spacing_zyx: tuple[float, float, float]) -> Anatomy:
    """Body, lungs, skeleton, aorta and heart region of an axial CT volume (HU, ``[z, y, x]``)."""
    start = time.perf_counter()
    grid = CoarseGrid.for_volume(hu.shape, spacing_zyx)
    coarse = grid.downsample(hu)
    spacing = grid.spacing
    view = fov.field_of_view(fov.scanned_area(hu), grid.factors, grid.shape, spacing)
    body = masks.body_mask(coarse, spacing) & view.scanned[None]
    cut_lungs = masks.lungs_cut_by_field(body, coarse, view.rim)
    view = replace(view, cut_lung_share=float((cut_lungs.sum(axis=(1, 2)) >= 5).mean()),
                   body_on_edge_share=float(body[:, view.rim].mean()) if view.rim.any() else 0.0)
    outline = masks.body_outline(body, cut_lungs, view.scanned)
    lungs = masks.lung_mask(coarse, body, spacing, outline, view)
    bone = masks.bone_mask(coarse, spacing)
    noise = masks.noise_hu(coarse)
    soft = masks.soft_tissue(coarse, body, lungs, noise) & ~bone
    empty = np.zeros(grid.shape, bool)
    front, spine_x = landmarks.spine_front(bone, body, spacing)
    centre, reason = heart.find_centre(soft, lungs, body, spacing, front, spine_x, view, outline)
    if centre is None:
        return Anatomy(grid, coarse, body, lungs, bone, empty, empty, empty, front, False, reason,
                       {**view.summary(), "seconds": round(time.perf_counter() - start, 2)})
    desc, asc = _track_aorta(soft, lungs, bone, spacing, centre, front, spine_x, view.truncated)
    aorta_mask = desc.mask(grid.shape, spacing, AORTA_MARGIN_MM) | asc.mask(grid.shape, spacing, ASCENDING_MARGIN_MM)
    # everything below happens in a box of +-13 cm around the centre: the heart fits in it
    box = tuple(slice(max(0, c - int(130.0 / s)), min(n, c + int(130.0 / s) + 1))
                for c, s, n in zip(centre.zyx, spacing, grid.shape))
    local = heart.HeartCentre(tuple(c - b.start for c, b in zip(centre.zyx, box)), centre.radius_mm,
                              centre.lateral, [tuple(o - b.start for o, b in zip(p, box)) for p in centre.others
                                               if all(b.start <= o < b.stop for o, b in zip(p, box))])
    mass = empty.copy()
    mass[box] = heart.heart_mass(soft[box] & ~aorta_mask[box], local, spacing, lungs[box])
    root = asc.z_range[0] if asc.discs else None
    lowest = asc.discs[0] if asc.discs else None
    root_disc = (lowest.z, lowest.y, lowest.x, lowest.radius_mm) if lowest else None
    # airways are looked for wherever the region may reach: round the mass and the aortic root
    # (whose zone can reach the carina, with the bronchial walls' and the nodes' calcium)
    reach = mass | root_zone(grid.shape, spacing, root_disc) if root_disc else mass
    near = _grown_box(reach, spacing, FAT_MARGIN_MM + AIRWAY_MARGIN_MM + 4.0)
    lung_hu = float(np.median(coarse[lungs])) if lungs.any() else -800.0
    airways = masks.air_lumens(hu, grid.factors, tuple(float(s) for s in spacing_zyx), near, grid.shape, outline,
                               lung_hu) if near is not None else empty
    region = region_from_mass(mass, bone, body, lungs | _grown(airways, spacing, AIRWAY_MARGIN_MM), aorta_mask,
                              spacing, centre.zyx[0], root, front, box, coarse > masks.BONE_HU, root_disc)
    info = {
        "_aortic_root": root_disc,
        "_root_z": root,
        "centre_zyx_mm": [round(c * s, 1) for c, s in zip(centre.zyx, spacing)],
        "centre_radius_mm": round(centre.radius_mm, 1),
        **({"heart_weakly_wrapped": True} if centre.weak_shell else {}),
        "aortic_root_z_mm": round(root * spacing[0], 1) if root is not None else None,
        "descending_aorta_slices": len(desc.discs),
        "ascending_aorta_slices": len(asc.discs),
        **view.summary(),
        **placement(region, lungs, view, centre.zyx, lowest, spacing),
        "seconds": round(time.perf_counter() - start, 2),
    }
    if not region.any():
        return Anatomy(grid, coarse, body, lungs, bone, aorta_mask, mass, region, front, False,
                       "heart region empty after anatomical limits", info, airways)
    return Anatomy(grid, coarse, body, lungs, bone, aorta_mask, mass, region, front, True, "", info, airways)


def placement(region: np.ndarray, lungs: np.ndarray, view: fov.FieldOfView, centre: tuple[int, int, int],
              root: aorta.Disc | None, spacing: tuple[float, float, float]) -> dict[str, Any]:
    """Where the heart region sits against the anatomy around it, for the confidence verdict.

    ``root_above_centre_mm`` / ``root_beside_centre_mm``: the aortic root against the heart's
    centre (a heart hangs from its root: 1-10 cm above, within a few cm beside); ``lung_level``:
    the lungs' cross-section at the centre's height as a share of their largest (the ventricles
    sit between wide lungs; the liver under the domes does not); ``region_on_field_edge``: share
    of the region's slices in which it reaches the field of view's edge (a field cutting the heart).
    """
    out: dict[str, Any] = {}
    if root is not None:
        out["root_above_centre_mm"] = round((root.z - centre[0]) * spacing[0], 1)
        out["root_beside_centre_mm"] = round(float(np.hypot((root.y - centre[1]) * spacing[1],
                                                            (root.x - centre[2]) * spacing[2])), 1)
    area = lungs.sum(axis=(1, 2))
    out["lung_level"] = round(float(area[centre[0]] / area.max()), 2) if area.max() > 0 else None
    rim = ndimage.binary_dilation(view.rim, iterations=1)
    slices = region.any(axis=(1, 2))
    on_edge = (region & rim[None]).any(axis=(1, 2))
    out["region_on_field_edge"] = round(float(on_edge[slices].mean()), 2) if slices.any() else 0.0
    return out


def region_from_mass(mass: np.ndarray, bone: np.ndarray, body: np.ndarray, lungs: np.ndarray, aorta_mask: np.ndarray,
                     spacing: tuple[float, float, float], z_centre: int, root: int | None, front: np.ndarray,
                     box: tuple[slice, ...] | None = None, dense: np.ndarray | None = None,
                     root_disc: tuple[int, float, float, float] | None = None) -> np.ndarray:
    """Where coronary calcium may be, from the cardiac mass: the mass grown by the epicardial fat,
    minus lungs, bone, aorta, what lies behind the spine or in front of the chest wall, and cut
    below / above the heart's centre and aortic root. ``box`` limits the distance maps (speed only);
    ``dense`` (bone-bright tissue of any size) helps find the chest wall (:func:`.landmarks.anterior_wall`);
    ``root_disc`` (slice, row, column, radius mm of the ascending aorta's lowest clear disc) adds the
    fat round the aortic root where the coronary arteries leave it (:func:`root_zone`)."""
    box = box or tuple(slice(0, n) for n in mass.shape)
    region = np.zeros(mass.shape, bool)
    region[box] = ndimage.distance_transform_edt(~mass[box], sampling=spacing) <= FAT_MARGIN_MM
    if root_disc is not None:
        region |= root_zone(mass.shape, spacing, root_disc)
    region[box] &= ~(ndimage.distance_transform_edt(~bone[box], sampling=spacing) <= BONE_MARGIN_MM)
    region &= body & ~lungs & ~aorta_mask
    z_low = int(np.floor(z_centre - BELOW_CENTRE_MM / spacing[0]))
    z_high = int(np.ceil(max(root + ROOT_TOP_MM / spacing[0], z_centre + CENTRE_TOP_MM / spacing[0]))) \
        if root is not None else int(np.ceil(z_centre + ABOVE_CENTRE_MM / spacing[0]))
    region[: max(0, z_low)] = False
    region[max(0, z_high + 1):] = False
    _behind_spine(region, front, spacing)
    wall = landmarks.anterior_wall(bone, body, mass, spacing, dense)
    _in_front_of_wall(region, wall)
    return region


def root_zone(shape: tuple[int, ...], spacing: tuple[float, float, float],
              root_disc: tuple[int, float, float, float]) -> np.ndarray:
    """The fat round the aortic root where the left main and the right coronary artery leave it and
    the proximal LAD, LCX and RCA run: within :data:`ROOT_REACH_MM` of the root's wall, from
    :data:`ROOT_BELOW_MM` under its lowest clear disc to :data:`ROOT_ABOVE_MM` over it.

    Why: the cardiac mass is found by an opening that drops the thin atrial appendages and the
    root itself, so the mass grown by the epicardial fat misses the atrioventricular grooves'
    upper ends, where plaques of the proximal arteries sit.
    """
    z0, y0, x0, radius = root_disc
    out = np.zeros(shape, bool)
    lo = max(0, int(np.floor(z0 - ROOT_BELOW_MM / spacing[0])))
    hi = min(shape[0], int(np.ceil(z0 + ROOT_ABOVE_MM / spacing[0])) + 1)
    yy, xx = np.ogrid[: shape[1], : shape[2]]
    disc = ((yy - y0) * spacing[1]) ** 2 + ((xx - x0) * spacing[2]) ** 2 <= (radius + ROOT_REACH_MM) ** 2
    out[lo:hi] = disc
    return out


def with_heart_mask(anatomy: Anatomy, mask: np.ndarray, method: str) -> Anatomy:
    """The same anatomy with the cardiac mass taken from a heart segmentation (on the CT grid).

    Why: a heart model (an nnU-Net v2 heart model, TotalSegmentator) sees the heart where the
    image rules may not (a cut field of view, an unusual shape); body, lungs, bone, aorta and
    spine stay as the image found them, and the region is rebuilt from the new mass by the same
    rules (:func:`region_from_mass`). The centre is the point deepest inside the mask (the image
    rules' centre is the largest ball in soft tissue).
    """
    grid, spacing = anatomy.grid, anatomy.grid.spacing
    mass = grid.downsample(mask) >= 0.5
    info = {**anatomy.info, "heart_source": method}
    empty = np.zeros(grid.shape, bool)
    if not mass.any():
        return replace(anatomy, heart_mass=empty, region=empty, found=False,
                       reason=f"the {method} heart model found no heart in the field of view", info=info)
    depth = ndimage.distance_transform_edt(mass, sampling=spacing)
    centre = np.unravel_index(int(np.argmax(depth)), mass.shape)
    airways = anatomy.airways if anatomy.airways is not None else np.zeros(grid.shape, bool)
    region = region_from_mass(mass, anatomy.bone, anatomy.body, anatomy.lungs | _grown(airways, spacing, AIRWAY_MARGIN_MM),
                              anatomy.aorta, spacing, int(centre[0]), anatomy.info.get("_root_z"), anatomy.spine_front,
                              dense=anatomy.coarse_hu > masks.BONE_HU, root_disc=anatomy.info.get("_aortic_root"))
    info.update({"centre_zyx_mm": [round(float(c) * s, 1) for c, s in zip(centre, spacing)],
                 "centre_radius_mm": round(float(depth.max()), 1)})
    if not region.any():
        return replace(anatomy, heart_mass=mass, region=region, found=False,
                       reason="heart region empty after anatomical limits", info=info)
    return replace(anatomy, heart_mass=mass, region=region, found=True, reason="", info=info)


def _track_aorta(soft: np.ndarray, lungs: np.ndarray, bone: np.ndarray, spacing: tuple[float, float, float],
                 centre: heart.HeartCentre, front: np.ndarray, spine_x: np.ndarray, cut: bool = False
                 ) -> tuple[aorta.AortaTrack, aorta.AortaTrack]:
    """Descending aorta beside the spine, then the ascending aorta in front of it above the heart.

    Where the spine is out of view (a heart-centred field of view cut just in front of it) the
    heart's centre stands in: the vertebral front lies about :data:`SPINE_BEHIND_CENTRE_MM`
    behind it and the spine's mid-line :data:`SPINE_RIGHT_OF_CENTRE_MM` to its right. In such a
    view the lungs may be absent from many slices; the tube is sought in all of them.
    """
    nz, ny, nx = soft.shape
    yy, xx = np.mgrid[:ny, :nx]
    z_centre, y_centre, x_centre = centre.zyx
    front = np.where(np.isnan(front), y_centre + SPINE_BEHIND_CENTRE_MM / spacing[1], front)
    spine_x = np.where(np.isnan(spine_x), x_centre - SPINE_RIGHT_OF_CENTRE_MM / spacing[2], spine_x)
    windows = {}
    for z in range(nz):
        if not (cut or lungs[z].any()):
            continue
        dx = (xx - spine_x[z]) * spacing[2]
        dy = (yy - front[z]) * spacing[1]
        windows[z] = (dx > 8.0) & (dx < 80.0) & (dy > -40.0) & (dy < 35.0)
    desc = aorta.track(soft, spacing, windows, "descending",
                       seed_range=(z_centre, z_centre + int(60.0 / spacing[0])), min_score=0.4,
                       max_gap_mm=25.0)
    if desc.discs:
        top = desc.z_range[1]
        zs, ys = [d.z for d in desc.discs], [d.y for d in desc.discs]
    elif cut:  # the descending aorta is out of view: it runs about 25 mm in front of the vertebrae
        top = nz - 1
        zs, ys = [0], [float(front[z_centre] - 25.0 / spacing[1])]
    else:
        return desc, aorta.AortaTrack("ascending", [])
    windows = {}
    for z in range(z_centre, top + 1):
        y_desc = float(np.interp(z, zs, ys))
        dx = (xx - spine_x[z]) * spacing[2]
        dy = (yy - y_desc) * spacing[1]
        # in front of the descending aorta, but not right behind the sternum
        windows[z] = (dy < -20.0) & (dy > -105.0) & (dx > -60.0) & (dx < 40.0)
    lo, hi = min(windows, default=0), max(windows, default=0) + 1
    clearance = np.full(soft.shape, np.inf, np.float32)
    if hi > lo:
        clearance[lo:hi] = ndimage.distance_transform_edt(~bone[lo:hi], sampling=spacing)
    asc = aorta.track(soft, spacing, windows, "ascending", seed_range=(z_centre + int(15.0 / spacing[0]), top),
                      min_score=0.4, min_seed_radius_mm=11.0, clearance=clearance)
    return desc, asc


def _grown(mask: np.ndarray, spacing: tuple[float, float, float], mm: float) -> np.ndarray:
    if not mask.any():
        return mask
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= mm


def _grown_box(mask: np.ndarray, spacing: tuple[float, float, float], mm: float) -> tuple[slice, ...] | None:
    """The bounding box of ``mask`` grown by ``mm`` (None for an empty mask)."""
    if not mask.any():
        return None
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    return tuple(slice(max(0, b.start - int(np.ceil(mm / s))), min(n, b.stop + int(np.ceil(mm / s))))
                 for b, s, n in zip(box, spacing, mask.shape))


def _behind_spine(region: np.ndarray, front: np.ndarray, spacing: tuple[float, float, float]) -> None:
    margin = SPINE_MARGIN_MM / spacing[1]
    for z in range(region.shape[0]):
        if not np.isnan(front[z]):
            region[z, int(np.ceil(front[z] + margin)):, :] = False


def _in_front_of_wall(region: np.ndarray, wall: np.ndarray) -> None:
    ny = region.shape[1]
    rows = np.arange(ny)[:, None]
    for z in range(region.shape[0]):
        limit = np.where(np.isnan(wall[z]), -1, wall[z])
        region[z] &= rows > limit[None, :]
