"""The heart region: where coronary calcium can be, found from the image on the coarse grid.

How (no network, about 2-5 s a scan on two CPU cores):

1. **Centre.** The heart is the thickest soft-tissue mass of the chest. The centre of the
   largest ball that fits in soft tissue (a distance-transform maximum) is accepted as the
   heart's centre only if there is lung to its left and to its right in its own slice (or the
   field of view ends there) and no lung right above it (that would be the liver under the
   right lung). No such centre means no heart in the field of view: upper thorax only,
   abdomen, head, a phantom without lungs.
2. **Extent.** From the centre, rays in every direction run until they meet lung (the
   pericardium lies against the lungs) or the edge of the image; where they meet nothing the
   heart's typical size is used. The radii are smoothed over neighbouring directions into a
   star-shaped envelope, widened by a margin for the epicardial fat where the arteries run.
3. **Limits.** The envelope is cut to: inside the body, not lung, not bone (skeleton grown by
   a few mm), in front of the vertebral bodies, behind the inner surface of the anterior chest
   wall (sternum, costal cartilage), not the aorta (see :mod:`.aorta`), not above the aortic
   root's top.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import logging

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from .fov import FieldOfView

log = logging.getLogger("cac_mhub.anatomy")

#: A heart's largest inscribed ball in soft tissue is 25-50 mm in radius (ventricles, blood pool).
MIN_HEART_RADIUS_MM = 20.0
#: Fraction of the shell around the heart's inscribed ball that is fat or lung (real hearts
#: 0.27-0.55; liver, muscle or a phantom's solid body 0.08-0.16).
MIN_SHELL_CONTRAST = 0.2
#: In a heart-centred view a noisy, sharp-kernel scan can blur the thin fat round the heart's
#: largest ball (lidc_0306 cropped to 245 mm: 0.14); where no mass reaches MIN_SHELL_CONTRAST,
#: masses down to this share are examined by every other test rather than the scan skipped.
CUT_VIEW_SHELL_CONTRAST = 0.1
#: Thick masses closer than this are one organ (the ventricles and the atria of one heart).
ORGAN_MM = 70.0
#: The heart's centre lies where the lungs' cross-section is at least this share of its largest.
LUNG_LEVEL_SHARE = 0.35
#: In a heart-centred view, a thick mass whose ball reaches this close to the last slice is the
#: liver cut by the scan range; the next mass at least this share as thick is the heart.
BOTTOM_MM = 5.0
NEARLY_AS_THICK = 0.75
#: In a heart-centred view, a mass whose centre lies this far right of the spine is the liver's
#: dome or the right atrium and the vena cava, not the ventricles (left of the spine, 20-60 mm).
RIGHT_OF_SPINE_MM = 10.0
#: ... and one this far left of it is the stomach or the spleen.
LEFT_OF_SPINE_MM = 80.0
#: Where the spine is not seen, the field's centre stands in for it: a heart-centred field is
#: planned on the heart, so the ventricles lie near it and the liver and the venae cavae right of it.
RIGHT_OF_FIELD_CENTRE_MM = 20.0
#: Rays that meet no lung stop at this distance from the centre (typical heart half-size + fat).
DEFAULT_REACH_MM = 62.0
MAX_REACH_MM = 95.0
#: Epicardial fat beyond the heart's soft-tissue surface, where the coronaries run.
MARGIN_MM = 8.0


@dataclass
class HeartCentre:
    zyx: tuple[int, int, int]
    """Coarse-grid index of the centre."""
    radius_mm: float
    """Radius of the largest soft-tissue ball there."""
    lateral: tuple[str, str]
    """What the rays to the patient's left and right met: lung or edge."""
    others: list[tuple[int, int, int]] = field(default_factory=list)
    """Centres of other thick soft-tissue masses (liver, abdomen): the heart is grown apart from them."""
    weak_shell: bool = False
    """Chosen in a heart-centred view among masses with less fat round them than a heart shows
    (:data:`CUT_VIEW_SHELL_CONTRAST`): none had more. The confidence verdict says so."""


def _walk(mask_lung: np.ndarray, body: np.ndarray, start: tuple[int, int, int], direction: np.ndarray,
          spacing: tuple[float, float, float], limit_mm: float, scanned: np.ndarray | None = None
          ) -> tuple[str, float]:
    """Walk from ``start`` along ``direction`` (z, y, x unit vector, mm); what is met first, and where.

    ``edge`` is where the picture stops: the volume's bounds or the reconstruction circle.
    """
    step = 0.5 * min(spacing)
    shape = mask_lung.shape
    for distance in np.arange(step, limit_mm, step):
        p = [int(round(s + d * distance / sp)) for s, d, sp in zip(start, direction, spacing)]
        if not all(0 <= v < n for v, n in zip(p, shape)):
            return "edge", float(distance)
        if scanned is not None and not scanned[p[1], p[2]]:
            return "edge", float(distance)
        if mask_lung[p[0], p[1], p[2]]:
            return "lung", float(distance)
        if not body[p[0], p[1], p[2]]:
            return "outside", float(distance)
    return "none", float(limit_mm)


def find_centre(soft: np.ndarray, lungs: np.ndarray, body: np.ndarray,
                spacing: tuple[float, float, float], spine_front: np.ndarray | None = None,
                spine_x: np.ndarray | None = None, view: "FieldOfView | None" = None,
                outline: np.ndarray | None = None) -> tuple[HeartCentre | None, str]:
    """The heart's centre on the coarse grid, or None and the reason why there is no heart.

    The heart's centre (its largest inscribed ball, in the ventricles) has lung to its left and
    right (or the edge of a field of view that cuts the body), fat and lung on much of a shell
    around it, lies in front of the vertebral bodies (neck and back muscles are behind them),
    and is not the liver's dome: right of the spine with the right lung's base right above it.
    A heart-centred reconstruction may show no lung at all: there the edge of the picture
    stands in for it.
    """
    voxel_cm3 = float(np.prod(spacing)) / 1000.0
    cut = view is not None and view.truncated
    # rays end outside the patient's outline: air inside it (a lung the mask missed) is passed
    inside = outline if outline is not None else body
    scanned = view.scanned if view is not None else None
    if lungs.sum() * voxel_cm3 < 50.0 and not cut:
        return None, "no lungs in the field of view: not a chest CT (or a phantom without lungs)"
    distance = _distance_near_lungs(soft, lungs, spacing, whole=cut, scanned=scanned)
    window = [max(1, int(round(20.0 / s))) | 1 for s in spacing]
    peaks = np.argwhere((distance == ndimage.maximum_filter(distance, size=window))
                        & (distance >= MIN_HEART_RADIUS_MM))
    if peaks.size == 0:
        return None, ("no heart-sized soft-tissue mass in the field of view "
                      "(upper thorax, neck or a scan without the heart?)")
    order = np.argsort(distance[tuple(peaks.T)])[::-1]
    above_mm = (20.0, 60.0)
    examined: list[np.ndarray] = []
    accepted: list[tuple[int, int, int]] = []
    weakly: list[tuple[int, int, int]] = []  # heart-centred views: passed all but a full fat shell
    sides: dict[tuple[int, int, int], tuple[str, str]] = {}
    for index in order:
        if len(examined) >= 40:
            break
        point = peaks[index]
        # a plateau of the distance map gives many equal peaks side by side: examine one of them
        if any(np.linalg.norm((point - e) * np.asarray(spacing)) < 15.0 for e in examined):
            continue
        examined.append(point)
        z, y, x = (int(v) for v in point)
        shell = shell_contrast(soft, (z, y, x), float(distance[z, y, x]), spacing, scanned)
        log.debug("heart candidate %s r=%.1f shell %.2f", (z, y, x), distance[z, y, x], shell)
        weak = shell < MIN_SHELL_CONTRAST
        if weak and not (cut and shell >= CUT_VIEW_SHELL_CONTRAST):
            log.debug("  rejected: soft tissue all round (not wrapped in fat and lung)")
            continue
        if spine_front is not None and not np.isnan(spine_front[z]) and y >= spine_front[z]:
            log.debug("  rejected: behind the spine front")
            continue
        tilts = (0.0, 30.0) if cut else (0.0,)
        left = _lateral(lungs, inside, (z, y, x), spacing, side=1.0, scanned=scanned, tilts=tilts)
        right = _lateral(lungs, inside, (z, y, x), spacing, side=-1.0, scanned=scanned, tilts=tilts)
        if not {left, right} <= {"lung", "edge"} or ("lung" not in (left, right) and not cut):
            log.debug("  rejected: lateral %s %s", left, right)
            continue
        z0 = min(lungs.shape[0], z + int(above_mm[0] / spacing[0]))
        z1 = min(lungs.shape[0], z + int(above_mm[1] / spacing[0]) + 1)
        column = lungs[z0:z1, max(0, y - 2):y + 3, max(0, x - 2):x + 3]
        right_side = spine_x is not None and not np.isnan(spine_x[z]) and (x - spine_x[z]) * spacing[2] < -10.0
        if right_side and column.size and column.mean() > 0.3:
            log.debug("  rejected: right of the spine under a lung (the liver's dome)")
            continue
        (weakly if weak else accepted).append((z, y, x))
        sides[(z, y, x)] = (left, right)
    relaxed = not accepted and bool(weakly)
    if relaxed:
        log.debug("heart: no mass well wrapped in fat; taking the masses a heart-centred view leaves")
        accepted = weakly
    if not accepted:
        return None, "no soft-tissue mass between the lungs: no heart in the field of view"
    chosen = _heart_of(accepted, distance, lungs, spacing, cut, spine_x)
    z, y, x = chosen
    others = [tuple(int(v) for v in p) for p in peaks
              if np.linalg.norm((p - chosen) * np.asarray(spacing)) >= 50.0
              and (p[0] < z or lungs[min(lungs.shape[0] - 1, p[0] + int(20.0 / spacing[0])), p[1], p[2]])]
    return HeartCentre(chosen, float(distance[chosen]), sides[chosen], others, relaxed), ""


def _heart_of(accepted: list[tuple[int, int, int]], distance: np.ndarray, lungs: np.ndarray,
              spacing: tuple[float, float, float], cut: bool, spine_x: np.ndarray | None = None
              ) -> tuple[int, int, int]:
    """Of the thick masses that pass every test, the heart.

    Why: below the heart lie the liver, spleen and stomach, larger and thicker than the heart,
    and a noisy, thick or cut scan can let one of them pass the tests meant for the heart (fat
    and lung around it, lung or the field's edge beside it). In a whole chest the heart's centre
    lies where the lungs are wide (the ventricles sit between the lower lobes), while under the
    domes of the diaphragm only the lungs' posterior recesses remain: the thickest mass at the
    lungs' level wins. In a heart-centred field of view the lungs are slivers and tell nothing,
    but the ventricles lie left of the spine, the liver's dome (and the right atrium with the
    venae cavae, thick in a coarse 8 mm scan) right of it, the stomach and the
    spleen far left: where the spine is seen, masses outside :data:`RIGHT_OF_SPINE_MM` right to
    :data:`LEFT_OF_SPINE_MM` left of it are set aside (unless none remains). Where it is not seen,
    the field's centre stands in for it (the field is planned on the heart), and a mass right of
    it whose ball rests on the last slice is the liver. Of the masses left, the thickest wins, or
    the first nearly as thick that is not the liver.
    Candidates within :data:`ORGAN_MM` of each
    other are one organ, represented by its thickest point.
    """
    groups: list[list[tuple[int, int, int]]] = []
    for point in accepted:  # in order of thickness: the first of a group is its thickest
        for group in groups:
            if np.linalg.norm((np.subtract(point, group[0])) * np.asarray(spacing)) < ORGAN_MM:
                group.append(point)
                break
        else:
            groups.append([point])
    if len(groups) == 1:
        return groups[0][0]
    thickest = float(distance[groups[0][0]])
    if cut:
        centre_x = (distance.shape[2] - 1) / 2.0

        def side_mm(g: list[tuple[int, int, int]]) -> tuple[float, bool]:
            """Millimetres left of the spine (True) or, where it is not seen, of the field's centre."""
            z, _, x = g[0]
            if spine_x is not None and not np.isnan(spine_x[z]):
                return float((x - spine_x[z]) * spacing[2]), True
            return float((x - centre_x) * spacing[2]), False

        def plausible(g: list[tuple[int, int, int]]) -> bool:
            side, of_spine = side_mm(g)
            return -RIGHT_OF_SPINE_MM <= side <= LEFT_OF_SPINE_MM if of_spine \
                else -RIGHT_OF_FIELD_CENTRE_MM <= side <= LEFT_OF_SPINE_MM

        # the liver's dome, the venae cavae (right) and the stomach, the spleen (far left) go first
        kept = [g for g in groups if plausible(g)] or groups
        thickest = float(distance[kept[0][0]])

        # where the spine does not tell, the liver is a mass right of the field's centre whose
        # ball rests on the last slice
        def liver(g: list[tuple[int, int, int]]) -> bool:
            side, of_spine = side_mm(g)
            return not of_spine and side < 0 and g[0][0] * spacing[0] - float(distance[g[0]]) <= BOTTOM_MM

        log.debug("heart (cut view): organs %s", [(g[0], round(float(distance[g[0]]), 1), side_mm(g)) for g in groups])
        above = [g for g in kept if not liver(g) and distance[g[0]] >= NEARLY_AS_THICK * thickest]
        return (above or kept)[0][0]
    area = lungs.sum(axis=(1, 2)).astype(float)
    level = {tuple(g[0]): area[g[0][0]] / max(area.max(), 1.0) for g in groups}
    at_lungs = [g for g in groups if level[tuple(g[0])] >= LUNG_LEVEL_SHARE] or groups
    log.debug("heart: organs %s", [(g[0], round(float(distance[g[0]]), 1), round(level[tuple(g[0])], 2)) for g in groups])
    return at_lungs[0][0]


def fibonacci_directions(count: int = 200) -> np.ndarray:
    """Nearly uniform unit vectors (z, y, x) on the sphere."""
    i = np.arange(count) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / count)
    azimuth = np.pi * (1.0 + 5.0 ** 0.5) * i
    return np.stack([np.cos(polar), np.sin(polar) * np.sin(azimuth), np.sin(polar) * np.cos(azimuth)], axis=1)


def shell_contrast(soft: np.ndarray, centre: tuple[int, int, int], radius_mm: float,
                   spacing: tuple[float, float, float], scanned: np.ndarray | None = None) -> float:
    """Fraction of a shell 3-12 mm outside the inscribed ball that is not soft tissue.

    The heart is wrapped in epicardial fat and lungs; the liver, muscle or a phantom's solid
    body around a thick spot are soft tissue all round.
    """
    directions = fibonacci_directions(120)
    hits = total = 0
    for direction in directions:
        for extra in (3.0, 7.0, 12.0):
            p = [int(round(c + d * (radius_mm + extra) / s)) for c, d, s in zip(centre, direction, spacing)]
            if all(0 <= v < n for v, n in zip(p, soft.shape)) and (scanned is None or scanned[p[1], p[2]]):
                total += 1
                hits += not soft[p[0], p[1], p[2]]
    return hits / total if total else 0.0


def _distance_near_lungs(soft: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float],
                         whole: bool = False, scanned: np.ndarray | None = None) -> np.ndarray:
    """Distance transform (mm) of soft tissue, computed only in the box of the lungs (+3 cm): fast.

    ``whole``: everywhere (a heart-centred field of view may show no lung to box around).
    """
    if whole or not lungs.any():
        box = tuple(slice(0, n) for n in soft.shape)
    else:
        box = ndimage.find_objects(lungs.astype(np.uint8))[0]
        pad = [int(30.0 / s) for s in spacing]
        box = tuple(slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(box, pad, soft.shape))
    distance = np.zeros(soft.shape, np.float32)
    # padded with background: a ball may not reach beyond the scanned volume (a liver cut by
    # the last slice or a small field of view would otherwise look thicker than the heart)
    tissue = soft[box] if scanned is None else soft[box] & scanned[box[1], box[2]][None]
    padded = np.pad(tissue, 1, constant_values=False)
    distance[box] = ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]
    return distance


def _lateral(lungs: np.ndarray, body: np.ndarray, start: tuple[int, int, int], spacing: tuple[float, float, float],
             side: float, scanned: np.ndarray | None = None, tilts: tuple[float, ...] = (0.0,)) -> str:
    """What rays towards the patient's left (side=+1) or right (-1) meet, in a +-60 degree fan.

    Wide, because the lungs wrap around the heart from behind: where the heart touches the
    chest wall in front (the cardiac notch), the lung is found further back. ``tilts`` (degrees
    towards the head) repeat the fan upwards: near the apex of a heart-centred scan the lungs
    are thin crescents that a thick slice can blur away, and the lung is met higher up.
    """
    met = []
    for tilt in tilts:
        t = np.radians(tilt)
        for angle in (-60.0, -30.0, 0.0, 30.0, 60.0):
            a = np.radians(angle)
            direction = np.array([np.sin(t), np.cos(t) * np.sin(a), side * np.cos(t) * np.cos(a)])
            met.append(_walk(lungs, body, start, direction, spacing, 160.0, scanned)[0])
    for what in ("lung", "edge"):
        if what in met:
            return what
    return met[2]


def heart_mass(soft: np.ndarray, centre: HeartCentre, spacing: tuple[float, float, float],
               lungs: np.ndarray) -> np.ndarray:
    """The cardiac soft tissue (chambers and myocardium) connected to the centre by thick paths.

    An opening by reconstruction: soft tissue eroded by about half the heart's inscribed radius
    keeps only thick parts; the part holding the centre is grown back within soft tissue. Thin
    bridges (pericardium against the chest wall, vessels, diaphragm contact points) are cut.
    """
    from skimage.segmentation import watershed

    radius = float(np.clip(0.45 * centre.radius_mm, 8.0, 15.0))
    distance = ndimage.distance_transform_edt(soft, sampling=spacing)
    labels, _ = ndimage.label(distance > radius)
    core = labels == labels[centre.zyx]
    if not core.any():
        return core
    grown = ndimage.distance_transform_edt(~core, sampling=spacing) <= radius + 0.5 * min(spacing)
    mass = taper_below(grown & soft, centre.zyx[0], spacing)
    others = [p for p in centre.others if mass[p]]
    if not others:
        return mass
    # The heart sits on the liver: where they touch broadly, split the mass at the waist of the
    # distance map between the heart's centre and the centres of the masses below or under lung.
    # The right atrium drains the liver's veins and may fall on the liver's side of the waist,
    # so only what is clearly liver leaves: low down, or right under the lung (the dome).
    markers = np.zeros(mass.shape, np.int32)
    for p in others:
        markers[p] = 2
    markers[centre.zyx] = 1
    other_side = watershed(-distance, markers, mask=mass) == 2
    low = np.zeros(mass.shape, bool)
    low[: max(0, centre.zyx[0] - int(round(15.0 / spacing[0])))] = True
    reach = max(1, int(round(40.0 / spacing[0])))
    lung_above = np.zeros(mass.shape, bool)
    for dz in range(1, reach + 1):
        lung_above[:-dz] |= lungs[dz:]
    return mass & ~(other_side & (low | lung_above))


#: Below the heart's centre the heart narrows towards its apex; a slice of the mass this much
#: larger than the one above, this far below the centre, is the liver or the stomach joining it.
TAPER_GROWTH = 1.08
TAPER_FROM_MM = 15.0
#: How far (mm) the heart's outline may step out from one slice to the next below its centre.
TAPER_STEP_MM = 4.0


def taper_below(mass: np.ndarray, z_centre: int, spacing: tuple[float, float, float]) -> np.ndarray:
    """The mass below the heart's centre, followed slice by slice down to the apex and no further.

    Why: the heart rests on the liver's dome (and the stomach) with no fat between them on many
    scans, so soft tissue joins them broadly and the opening that finds the heart cannot cut
    them apart. Below its centre the heart narrows towards the apex; the liver widens. Each
    slice keeps only the mass within :data:`TAPER_STEP_MM` of the slice above; from the first
    slice (at least :data:`TAPER_FROM_MM` below the centre) that is larger than the one above by
    :data:`TAPER_GROWTH`, the rest below is left out.
    """
    out = mass.copy()
    step = max(1, int(round(TAPER_STEP_MM / min(spacing[1:]))))
    structure = ndimage.generate_binary_structure(2, 1)
    previous = out[z_centre] if 0 <= z_centre < out.shape[0] else None
    if previous is None or not previous.any():
        return out
    start = z_centre - int(round(TAPER_FROM_MM / spacing[0]))
    for z in range(z_centre - 1, -1, -1):
        here = out[z] & ndimage.binary_dilation(previous, structure=structure, iterations=step)
        if z <= start and here.sum() > TAPER_GROWTH * previous.sum():
            out[: z + 1] = False
            break
        out[z] = here
        if not here.any():
            out[:z] = False
            break
        previous = here
    return out
