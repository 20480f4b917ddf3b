"""Where non-coronary calcium lies: aortic valve, mitral annulus, thoracic aorta (ascending, arch, descending).

Pure: HU volume + :class:`~.analysis.Anatomy` in, a map of sites out. Measured from the anatomy
itself, not from what a coronary model happened to label: every calcium voxel (HU at or above the
threshold) near the heart and aorta is a candidate, the guard's own rules (:func:`.guard.guard`)
give each 3D candidate its verdict, and the verdicts name the sites:

* ``aortic_valve`` -- the guard's ``aortic_valve`` (centre in the aortic root's lumen);
* ``mitral_annulus`` -- the guard's ``intracardiac`` (6 mm or more inside the cardiac mass, away
  from the aortic root): the mitral annulus, and papillary muscles, which no rule here tells apart;
* ``aorta_ascending`` / ``aorta_descending`` -- the guard's ``aorta`` (a third or more on the aorta
  mask), split by which part of the mask holds most of it: per slice, a part of the mask whose centre
  lies within :data:`DESCENDING_FRONT_MM` of the vertebral bodies' front edge is descending, one
  further forward is ascending. Where the tracker lost the descending aorta above the lung bases,
  its lowest disc is continued straight down to them (below them is the abdominal aorta, not
  measured). Calcium of the root's lumen that the guard calls ``aorta`` (its aorta rule comes
  first) passes its valve rule here and counts as aortic valve;
* ``aorta_arch`` -- the disc tracker stops where the arch runs across the slice, so the arch is
  drawn from the highest slice where the ascending and descending aorta are both seen: in plane,
  everything within their radius of the line from one's centre to the other's; in height, from
  :data:`ARCH_BELOW_MM` under that slice to :data:`ARCH_RISE_MM` plus the radius above it. A guard
  ``aorta`` candidate mostly on it, or an ``outside_heart`` candidate a third or more on it, is
  arch calcium.

Calcium already counted as coronary (``coronary``: the scored label map) is never a candidate, so
no voxel is counted twice, and nothing here touches the coronary labels or score.

Noise: a sharp kernel or a low dose puts blood-pool noise over 130 HU by the thousand (a BONE-kernel
chest here: SD 62 HU, 6000 "lesions" in the heart). A candidate therefore counts only when its peak
reaches :data:`NOISE_SD` robust SDs above the blood pool's median (or the threshold, if higher);
all its voxels at or above the threshold then count, as Agatston's method has it. On a quiet scan
(blood pool SD up to about 18 HU) the floor is the threshold itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .analysis import Anatomy
from .guard import _valve_test, guard

#: Site names, in report order; the code of a site in :attr:`NonCoronarySites.codes` is its index + 1.
SITES = ("aortic_valve", "mitral_annulus", "aorta_ascending", "aorta_arch", "aorta_descending")
AORTA_SITES = ("aorta_ascending", "aorta_arch", "aorta_descending")
#: What each site means, for reports.
SITE_TEXT = {
    "aortic_valve": "aortic valve: calcium in the aortic root's lumen (guard rule)",
    "mitral_annulus": "mitral annulus: calcium deep inside the cardiac mass, away from the aortic root "
                      "(includes papillary muscle calcium)",
    "aorta_ascending": "ascending aorta wall",
    "aorta_arch": "aortic arch wall",
    "aorta_descending": "descending thoracic aorta wall",
}
#: Part of the aorta mask whose centre is this close in front of the vertebral bodies: descending.
DESCENDING_FRONT_MM = 45.0
#: The arch: from this far under the highest slice with both ascending and descending aorta ...
ARCH_BELOW_MM = 10.0
#: ... to this far (plus the aorta's radius) above it.
ARCH_RISE_MM = 15.0
#: A candidate with this share on a part of the aorta belongs to it (as the guard's aorta rule).
AORTA_SHARE = 1.0 / 3.0
#: Margin (mm) around the heart, aorta and arch inside which candidates are looked for.
BOX_MARGIN_MM = 10.0
#: A candidate counts only when its peak is this many noise SDs above the blood pool (or the threshold,
#: if higher): pure noise exceeds 5 SD in about one voxel of the whole heart and aorta.
NOISE_SD = 5.0
#: The report warns when that lifts the floor this far above the threshold.
NOISY_MARGIN_HU = 50.0


@dataclass
class NonCoronarySites:
    """Site of every non-coronary calcium voxel, in a box of the CT grid."""

    box: tuple[slice, slice, slice]
    """The part of the CT grid :attr:`codes` covers."""
    codes: np.ndarray
    """uint8 on ``box``: 0 nothing, else 1 + index in :data:`SITES`."""
    candidates: dict[str, int] = field(default_factory=dict)
    """3D candidates per site."""
    notes: list[str] = field(default_factory=list)
    """What could not be delineated (no aortic root, no arch) and so cannot be reported."""
    delineated: dict[str, bool] = field(default_factory=dict)
    """Per site, whether the anatomy needed to find it was found (False: its score is not a zero)."""
    noise: dict[str, Any] = field(default_factory=dict)
    """Blood pool HU and noise SD, the peak a candidate needs, and how many fainter ones were left out."""

    def mask(self, site: str) -> np.ndarray:
        """Boolean map of one site on :attr:`box`."""
        return self.codes == SITES.index(site) + 1

    def site_maps(self, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Site -> boolean map on the whole CT grid, for the sites holding calcium (pictures)."""
        out = {}
        for index, name in enumerate(SITES, start=1):
            inside = self.codes == index
            if inside.any():
                full = np.zeros(shape, bool)
                full[self.box] = inside
                out[name] = full
        return out

    def summary(self) -> dict[str, Any]:
        return {"candidates": dict(self.candidates), "delineated": dict(self.delineated), "notes": list(self.notes),
                "noise": dict(self.noise)}


def find_sites(hu: np.ndarray, anatomy: Anatomy, threshold_hu: float = 130.0,
               coronary: np.ndarray | None = None) -> NonCoronarySites:
    """Sort every calcium voxel near the heart and aorta into a non-coronary site (or none).

    ``coronary``: the scored coronary label map (CT grid); its voxels are left out.
    """
    grid = anatomy.grid
    parts = aorta_parts(anatomy)
    reach = anatomy.aorta | anatomy.heart_mass | anatomy.region | parts["aorta_arch"]
    box = _full_box(reach, anatomy)
    labels = np.zeros(hu.shape, np.uint8)
    calcium = hu[box] >= threshold_hu
    if coronary is not None:
        calcium &= coronary[box] == 0
    labels[box] = calcium
    result = guard(labels, hu, anatomy, threshold_hu=threshold_hu)
    codes = np.zeros(calcium.shape, np.uint8)
    simple = {"aortic_valve": "aortic_valve", "intracardiac": "mitral_annulus"}
    for reason, site in simple.items():
        found = result.excluded_maps.get(reason)
        if found is not None:
            codes[found[box] > 0] = SITES.index(site) + 1
    iz, iy, ix = (m[s] for m, s in zip(grid.index_maps(), box))
    with_lung = np.nonzero(anatomy.lungs.any(axis=(1, 2)))[0]
    lung_base = float(with_lung[0]) if len(with_lung) else 0.0
    for reason in ("aorta", "outside_heart", "bone"):
        found = result.excluded_maps.get(reason)
        if found is None:
            continue
        components, count = ndimage.label(found[box] > 0, structure=np.ones((3, 3, 3), bool))
        if count == 0:
            continue
        zz, yy, xx = np.nonzero(components)
        comp = components[zz, yy, xx]
        size = np.maximum(np.bincount(comp, minlength=count + 1), 1).astype(np.float64)

        def share(mask: np.ndarray) -> np.ndarray:
            return np.bincount(comp, weights=mask[iz[zz], iy[yy], ix[xx]], minlength=count + 1) / size

        on_part = np.stack([share(parts[name]) for name in AORTA_SITES], axis=1)
        on_aorta = on_part.sum(axis=1)  # the parts are disjoint
        site_of = np.argmax(on_part, axis=1)  # the part that holds most of it (ascending when none does)
        if reason == "aorta":
            keep = np.ones(count + 1, bool)
            valve = _in_root_lumen(comp, count, iz[zz], iy[yy], ix[xx], anatomy)
            keep &= ~valve  # the guard calls root-lumen calcium aorta before it tests for the valve
            on_valve = valve[comp]
            codes[zz[on_valve], yy[on_valve], xx[on_valve]] = SITES.index("aortic_valve") + 1
        else:
            # outside_heart: on the arch or the lowest descending aorta, which the guard's mask lacks;
            # bone: the aortic wall against the spine touches the grown skeleton. A candidate joined
            # to the skeleton is the skeleton itself, of which the aorta holds a tiny share.
            keep = on_aorta >= AORTA_SHARE
        # below the lung bases the aorta is abdominal, whatever mask it touches: not thoracic calcium
        keep &= np.bincount(comp, weights=iz[zz], minlength=count + 1) / size >= lung_base
        keep[0] = False
        code_of = np.array([SITES.index(AORTA_SITES[s]) + 1 for s in site_of], np.uint8)
        hit = keep[comp]
        codes[zz[hit], yy[hit], xx[hit]] = code_of[comp[hit]]
    noise = blood_noise(hu, anatomy, box)
    floor = max(threshold_hu, noise["blood_hu"] + NOISE_SD * noise["noise_sd_hu"]) if noise else threshold_hu
    counts, faint = _drop_faint(codes, hu[box], floor)
    delineated = {"aortic_valve": bool(anatomy.info.get("_aortic_root")), "mitral_annulus": bool(anatomy.heart_mass.any()),
                  "aorta_ascending": bool(parts["aorta_ascending"].any()), "aorta_arch": bool(parts["aorta_arch"].any()),
                  "aorta_descending": bool(parts["aorta_descending"].any())}
    notes = []
    if not delineated["aortic_valve"]:
        notes.append("aortic root not found: aortic valve calcium not measured")
    if not delineated["aorta_ascending"] and not delineated["aorta_descending"]:
        notes.append("thoracic aorta not found: aortic calcium not measured")
    elif not delineated["aorta_arch"]:
        notes.append("aortic arch not delineated (ascending and descending aorta not both seen): arch calcium not measured")
    if floor > threshold_hu + NOISY_MARGIN_HU:
        notes.append(f"noisy image (blood pool SD {noise['noise_sd_hu']:.0f} HU): only calcium peaking at "
                     f"{floor:.0f} HU or more is counted, fainter calcium is missed")
    summary = {**noise, "candidate_peak_min_hu": round(floor, 1), "faint_candidates_left_out": faint} if noise else \
        {"candidate_peak_min_hu": threshold_hu, "faint_candidates_left_out": faint}
    return NonCoronarySites(box, codes, counts, notes, delineated, summary)


def blood_noise(hu: np.ndarray, anatomy: Anatomy, box: tuple[slice, slice, slice]) -> dict[str, float]:
    """Median and robust SD (1.4826 x MAD) of the HU inside the cardiac mass (one coarse voxel in from its
    edge, -100..200 HU: blood and myocardium, no fat, no calcium); empty when too few voxels."""
    inner = ndimage.binary_erosion(anatomy.heart_mass)
    iz, iy, ix = (m[s] for m, s in zip(anatomy.grid.index_maps(), box))
    crop = hu[box]
    values = crop[inner[np.ix_(iz, iy, ix)]]
    values = values[(values > -100) & (values < 200)].astype(np.float64)
    if values.size < 1000:
        return {}
    median = float(np.median(values))
    return {"blood_hu": round(median, 1), "noise_sd_hu": round(1.4826 * float(np.median(np.abs(values - median))), 1)}


def _drop_faint(codes: np.ndarray, hu: np.ndarray, floor: float) -> tuple[dict[str, int], int]:
    """Clear the 3D candidates whose peak HU is below ``floor``; return the candidates left per site and
    how many were cleared."""
    components, count = ndimage.label(codes > 0, structure=np.ones((3, 3, 3), bool))
    counts = dict.fromkeys(SITES, 0)
    if count == 0:
        return counts, 0
    peaks = np.asarray(ndimage.maximum(hu, components, np.arange(1, count + 1)))
    site = np.asarray(ndimage.maximum(codes, components, np.arange(1, count + 1))).astype(int)
    faint = np.concatenate([[False], peaks < floor])
    codes[faint[components]] = 0
    for code in site[peaks >= floor]:
        counts[SITES[code - 1]] += 1
    return counts, int(faint.sum())


def _in_root_lumen(comp: np.ndarray, count: int, cz: np.ndarray, cy: np.ndarray, cx: np.ndarray,
                   anatomy: Anatomy) -> np.ndarray:
    """Per component, whether its coarse centre passes the guard's aortic valve test (index 0 False)."""
    size = np.maximum(np.bincount(comp, minlength=count + 1), 1).astype(np.float64)
    centre = [np.minimum((np.bincount(comp, weights=c, minlength=count + 1) / size).astype(int), m - 1)
              for c, m in zip((cz, cy, cx), anatomy.grid.shape)]
    valve = _valve_test(anatomy)
    out = np.array([bool(valve((int(centre[0][i]), int(centre[1][i]), int(centre[2][i])))) for i in range(count + 1)])
    out[0] = False
    return out


def aorta_parts(anatomy: Anatomy) -> dict[str, np.ndarray]:
    """Coarse masks of the ascending aorta, the descending aorta and the arch between them."""
    aorta, spacing, front = anatomy.aorta, anatomy.grid.spacing, anatomy.spine_front
    ascending = np.zeros(aorta.shape, bool)
    descending = np.zeros(aorta.shape, bool)
    for z in np.nonzero(aorta.any(axis=(1, 2)))[0]:
        parts, count = ndimage.label(aorta[z])
        centres = ndimage.center_of_mass(aorta[z], parts, range(1, count + 1))
        for index, (y, _) in enumerate(centres, start=1):
            if np.isfinite(front[z]):
                is_descending = (y - front[z]) * spacing[1] > -DESCENDING_FRONT_MM
            else:  # no spine in this slice: the hindmost part is descending
                is_descending = y >= max(c[0] for c in centres)
            (descending if is_descending else ascending)[z][parts == index] = True
    _down_to_lung_bases(descending, anatomy.lungs)
    arch = np.zeros(aorta.shape, bool)
    both = np.nonzero(ascending.any(axis=(1, 2)) & descending.any(axis=(1, 2)))[0]
    if len(both):
        top = int(both[-1])
        ends = [_disc(mask[top], spacing) for mask in (ascending, descending)]
        arch = _arch(aorta.shape, spacing, top, ends) & ~ascending & ~descending
    return {"aorta_ascending": ascending, "aorta_arch": arch, "aorta_descending": descending}


def _down_to_lung_bases(descending: np.ndarray, lungs: np.ndarray) -> None:
    """Continue the descending aorta's lowest disc straight down to the lowest slice with lung.

    The tracker can lose the disc above the diaphragm, where the aorta meets the crura and liver;
    the thoracic aorta goes on down to the lung bases. Below them is the abdominal aorta: not here.
    """
    seen = np.nonzero(descending.any(axis=(1, 2)))[0]
    with_lung = np.nonzero(lungs.any(axis=(1, 2)))[0]
    if len(seen) and len(with_lung) and with_lung[0] < seen[0]:
        descending[with_lung[0]:seen[0]] = descending[seen[0]]


def _disc(mask2d: np.ndarray, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    """Centre (y, x) and radius (mm) of the largest part of a slice's mask."""
    parts, count = ndimage.label(mask2d)
    sizes = np.bincount(parts.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    y, x = ndimage.center_of_mass(mask2d, parts, largest)
    radius = float(np.sqrt(sizes[largest - 1] * spacing[1] * spacing[2] / np.pi))
    return float(y), float(x), radius


def _arch(shape: tuple[int, ...], spacing: tuple[float, float, float], top: int,
          ends: list[tuple[float, float, float]]) -> np.ndarray:
    """Coarse voxels within the aorta's radius of the straight line from one top disc to the other (in
    plane), from ARCH_BELOW_MM under the top slice to ARCH_RISE_MM plus that radius above it."""
    (ya, xa, ra), (yd, xd, rd) = ends
    radius = max(ra, rd)
    z0 = max(0, int(np.floor(top - ARCH_BELOW_MM / spacing[0])))
    z1 = min(shape[0], int(np.ceil(top + (ARCH_RISE_MM + radius) / spacing[0])) + 1)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    a = np.array([ya * spacing[1], xa * spacing[2]])
    d = np.array([yd * spacing[1], xd * spacing[2]])
    points = np.stack([yy * spacing[1], xx * spacing[2]], axis=-1)
    ad = d - a
    t = np.clip(((points - a) @ ad) / max(float(ad @ ad), 1e-9), 0.0, 1.0)
    near = np.linalg.norm(points - (a + t[..., None] * ad), axis=-1) <= radius
    arch = np.zeros(shape, bool)
    arch[z0:z1] = near
    return arch


def _full_box(coarse: np.ndarray, anatomy: Anatomy) -> tuple[slice, slice, slice]:
    """CT-grid box around a coarse mask, grown by BOX_MARGIN_MM (the whole grid when it is empty)."""
    grid = anatomy.grid
    if not coarse.any():
        return tuple(slice(0, n) for n in grid.full_shape)  # type: ignore[return-value]
    box = ndimage.find_objects(coarse.astype(np.uint8))[0]
    out = []
    for b, f, s, n in zip(box, grid.factors, grid.spacing, grid.full_shape):
        grow = int(np.ceil(BOX_MARGIN_MM / s))
        out.append(slice(max(0, (b.start - grow) * f), min(n, (b.stop + grow) * f)))
    return tuple(out)  # type: ignore[return-value]
