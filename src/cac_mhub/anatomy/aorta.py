"""The thoracic aorta in non-contrast CT: a tube of 2-4 cm tracked slice by slice.

Why tracking rather than a threshold: without contrast the aorta has the HU of the heart and
every other vessel. What sets it apart is its shape: in each axial slice the descending aorta
is a round soft-tissue disc beside the spine, and the ascending aorta one in front of it above
the heart, each bordered by fat, lung or bone on most of its circumference. Candidate discs
are the maxima of the in-plane distance transform of soft tissue; a Viterbi pass picks the
smoothest chain of discs through the slices, allowing slices where the disc is not seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

RADIUS_MM = (8.0, 24.0)
_MAX_STEP_MM = 6.0


@dataclass
class Disc:
    z: int
    y: float
    x: float
    radius_mm: float
    score: float


@dataclass
class AortaTrack:
    """Discs of one part of the aorta, one per slice where it was seen (coarse grid)."""

    name: str
    discs: list[Disc]

    @property
    def z_range(self) -> tuple[int, int]:
        zs = [d.z for d in self.discs]
        return (min(zs), max(zs)) if zs else (-1, -1)

    def mask(self, shape: tuple[int, int, int], spacing: tuple[float, float, float], grow_mm: float) -> np.ndarray:
        """Union of the discs grown by ``grow_mm``, gaps between seen slices interpolated."""
        out = np.zeros(shape, bool)
        if not self.discs:
            return out
        zs = np.array([d.z for d in self.discs])
        ys = np.array([d.y for d in self.discs])
        xs = np.array([d.x for d in self.discs])
        rs = np.array([d.radius_mm for d in self.discs])
        yy, xx = np.ogrid[: shape[1], : shape[2]]
        for z in range(zs.min(), zs.max() + 1):
            y, x, r = (float(np.interp(z, zs, v)) for v in (ys, xs, rs))
            out[z] = ((yy - y) * spacing[1]) ** 2 + ((xx - x) * spacing[2]) ** 2 <= (r + grow_mm) ** 2
        return out


def disc_candidates(soft: np.ndarray, spacing: tuple[float, float, float], window: np.ndarray
                    ) -> list[Disc]:
    """Round soft-tissue discs in one slice (2D), scored by how much of their rim is not soft tissue."""
    if not window.any():
        return []
    pixel = spacing[1]
    distance = ndimage.distance_transform_edt(soft, sampling=spacing[1:])
    size = max(3, int(round(8.0 / pixel)) | 1)
    peaks = np.argwhere((distance == ndimage.maximum_filter(distance, size=size)) & window
                        & (distance >= RADIUS_MM[0]) & (distance <= RADIUS_MM[1]))
    found = []
    angles = np.linspace(0.0, 2 * np.pi, 32, endpoint=False)
    for y, x in peaks:
        r = float(distance[y, x])
        # rim: 1.5-4 mm outside the inscribed circle; boundary = not soft tissue there
        hits = 0
        for a in angles:
            for extra in (1.5, 3.0, 4.5):
                yy = int(round(y + (r + extra) * np.sin(a) / pixel))
                xx = int(round(x + (r + extra) * np.cos(a) / pixel))
                if not (0 <= yy < soft.shape[0] and 0 <= xx < soft.shape[1]) or not soft[yy, xx]:
                    hits += 1
                    break
        found.append(Disc(-1, float(y), float(x), r, hits / len(angles)))
    found.sort(key=lambda d: -d.score)
    return found[:12]


def track(soft: np.ndarray, spacing: tuple[float, float, float], windows: dict[int, np.ndarray],
          name: str, min_score: float = 0.5, seed_range: tuple[int, int] | None = None,
          max_gap_mm: float = 12.0, min_seed_radius_mm: float = 9.0,
          clearance: np.ndarray | None = None) -> AortaTrack:
    """Follow a tube up and down from its clearest disc, through the slices in ``windows``.

    Every disc in ``seed_range`` (rim mostly not soft tissue, radius at least
    ``min_seed_radius_mm``) may start a track; from there, each next slice takes the best disc
    within a few mm of the last one, across gaps of up to ``max_gap_mm`` where the tube touches
    neighbours and no disc is seen. The aorta is the longest, clearest and widest tube: the
    track with the largest sum of score x radius wins (the SVC or a short branch loses to it).
    ``clearance`` (mm to the nearest bone, per voxel) drops discs that touch bone: the soft
    tissue right behind the sternum is round too, but it is not the ascending aorta.
    """
    per_slice: dict[int, list[Disc]] = {}
    for z in sorted(windows):
        found = [d for d in disc_candidates(soft[z], spacing, windows[z]) if d.score >= min_score
                 and (clearance is None or clearance[z, int(d.y), int(d.x)] > d.radius_mm + 4.0)]
        for d in found:
            d.z = z
        per_slice[z] = found
    lo, hi = seed_range if seed_range else (min(per_slice, default=0), max(per_slice, default=-1))
    seeds = sorted((d for z, found in per_slice.items() if lo <= z <= hi for d in found
                    if d.radius_mm >= min_seed_radius_mm), key=lambda d: -d.score)
    best: list[Disc] = []
    tried: list[Disc] = []
    for seed in seeds:
        # a seed already on a tried track gives the same track
        if any(abs(seed.z - t.z) * spacing[0] < 10.0 and np.hypot(seed.y - t.y, seed.x - t.x) * spacing[1] < 10.0
               for t in tried):
            continue
        tried.append(seed)
        discs = _follow(seed, per_slice, spacing, max_gap_mm)
        tried.extend(discs)
        if _weight(discs) > _weight(best):
            best = discs
        if len(tried) > 400:
            break
    return AortaTrack(name, best)


def _weight(discs: list[Disc]) -> float:
    """Clear (rim score), long (many slices) and wide (radius): the aorta beats veins and branches."""
    return float(sum(d.score * d.radius_mm for d in discs))


def _follow(seed: Disc, per_slice: dict[int, list[Disc]], spacing: tuple[float, float, float],
            max_gap_mm: float) -> list[Disc]:
    """Discs of one tube: from the seed up and down, the best disc near the last one seen."""
    discs = [seed]
    for direction in (1, -1):
        recent = [seed]
        z = seed.z + direction
        while z in per_slice:
            last = recent[-1]
            gap = abs(z - last.z) * spacing[0]
            if gap > max_gap_mm:
                break
            limit = _MAX_STEP_MM + 0.8 * gap
            # the aorta keeps its calibre: a disc much thinner is a branch, much thicker the heart
            radius = float(np.median([d.radius_mm for d in recent[-5:]]))
            near = [d for d in per_slice[z]
                    if np.hypot((d.y - last.y) * spacing[1], (d.x - last.x) * spacing[2]) <= limit
                    and abs(d.radius_mm - radius) <= 0.25 * radius + 1.0]
            if near:
                recent.append(max(near, key=lambda d: d.score))
                discs.append(recent[-1])
            z += direction
    discs.sort(key=lambda d: d.z)
    return _trim(discs, spacing)


def _trim(discs: list[Disc], spacing: tuple[float, float, float], max_shift_mm: float = 8.0) -> list[Disc]:
    """Drop end discs that leave the line of their neighbours (a jump into the heart or a vein)."""
    def off(end: Disc, inner: list[Disc]) -> bool:
        y = float(np.median([d.y for d in inner]))
        x = float(np.median([d.x for d in inner]))
        r = float(np.median([d.radius_mm for d in inner]))
        shift = np.hypot((end.y - y) * spacing[1], (end.x - x) * spacing[2])
        return shift > max_shift_mm or not 0.75 <= end.radius_mm / r <= 1.33

    while len(discs) > 6 and off(discs[0], discs[1:6]):
        discs = discs[1:]
    while len(discs) > 6 and off(discs[-1], discs[-6:-1]):
        discs = discs[:-1]
    return discs
