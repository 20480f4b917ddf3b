"""Synthetic non-contrast chest CT with a coronary tree and calcified plaques of known extent.

Why: no labelled real calcium-scoring scans can be downloaded here, so the default model is
trained and checked on anatomy whose ground truth is exact. The phantom has what makes CAC
scoring hard on real chests: vertebrae with cortex and marrow, rib heads at the costovertebral
joints, ribs, sternum and (partly calcified) costal cartilage; an aortic root at the centre of
the heart's base with the coronary ostia on it, a calcified aortic wall along the ascending
aorta, arch and descending aorta, aortic-valve and mitral-annulus calcium; pericardial fat;
ECG electrodes on the skin; coronary plaques of every size and density (LM, LAD, LCX, RCA);
partial-volume blur, low-dose noise and streaks; slice increments of 0.6-5 mm; whole-chest or
heart-only (cardiac) fields of view with fine pixels; a varied body and heart position.

``style='alt'`` draws from a second configuration that training never sees (rounder or
longer hearts, cylindrical plaques, coarser noise, other pixel sizes and bodies), to measure
how much a model learnt the generator rather than calcium in a heart.

Coordinates are DICOM LPS millimetres: x to the patient's left, y posterior, z superior; the
body axis passes through x = y = 0 and the top of the liver dome is near z = 0. Arrays are
``[z, y, x]`` as everywhere in the project.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from ..types import ARTERIES

#: Calcium threshold (HU) used to turn plaque shapes into ground-truth calcium voxels.
CALCIUM_HU = 130.0
#: Codes of the ``distractors`` map: calcium-like voxels that must never be scored.
DISTRACTOR_CODES = {1: "bone", 2: "aortic_wall_calcium", 3: "aortic_valve_calcium",
                    4: "mitral_annulus_calcium", 5: "ecg_electrode"}

AIR, FAT, SOFT, BLOOD, MYOCARDIUM, LIVER, LUNG = -1000.0, -95.0, 40.0, 38.0, 48.0, 58.0, -860.0
CARTILAGE, MARROW, CORTEX = 110.0, 230.0, 650.0


@dataclass
class Plaque:
    """One calcified plaque as painted (before blur and noise)."""

    artery: str
    center_lps: tuple[float, float, float]
    half_axes_mm: tuple[float, float, float]
    peak_hu: float


@dataclass
class ThoraxPhantom:
    """A phantom scan and its exact ground truth, all on the same grid."""

    hu: np.ndarray
    """int16 HU ``[z, y, x]``."""
    labels: np.ndarray
    """uint8 coronary calcium voxels: 1=LM, 2=LAD, 3=LCX, 4=RCA (HU >= 130 inside a plaque)."""
    distractors: np.ndarray
    """uint8 calcium-like voxels that must not be scored, codes in :data:`DISTRACTOR_CODES`."""
    spacing_zyx: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    slice_thickness: float
    heart_center_lps: tuple[float, float, float]
    plaques: list[Plaque] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    names: ClassVar[dict[int, str]] = {i + 1: name for i, name in enumerate(ARTERIES)}

    def reference_scores(self) -> Any:
        """Exact reference score: the project's Agatston code applied to the true labels."""
        from ..scoring.agatston import score

        return score(self.hu, self.spacing_zyx, self.labels, self.names, slice_thickness=self.slice_thickness)


class _Canvas:
    """A HU volume with its mm axes and painting helpers that only touch a bounding box."""

    def __init__(self, zc: np.ndarray, yc: np.ndarray, xc: np.ndarray, fill: float) -> None:
        self.zc, self.yc, self.xc = zc, yc, xc
        self.hu = np.full((zc.size, yc.size, xc.size), fill, dtype=np.float32)

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels whose centres lie in the mm box [lo, hi] (x, y, z order)."""
        out = []
        for axis, (a, b) in zip((self.zc, self.yc, self.xc), ((lo[2], hi[2]), (lo[1], hi[1]), (lo[0], hi[0]))):
            i0 = int(np.searchsorted(axis, a, side="left"))
            i1 = int(np.searchsorted(axis, b, side="right"))
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)  # type: ignore[return-value]

    def grid(self, sl: tuple[slice, slice, slice]) -> np.ndarray:
        """Voxel centres of a box as an array [..., 3] in (x, y, z) mm."""
        z, y, x = np.meshgrid(self.zc[sl[0]], self.yc[sl[1]], self.xc[sl[2]], indexing="ij")
        return np.stack([x, y, z], axis=-1).astype(np.float32)

    def ellipsoid(self, center: np.ndarray, radii: np.ndarray, rotation: np.ndarray | None = None
                  ) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
        """Mask of an (optionally rotated) ellipsoid within its bounding box."""
        reach = float(np.max(radii))
        sl = self.box(center - reach, center + reach)
        if sl is None:
            return None
        if rotation is None:  # axis-aligned: separable, no 3D coordinate grid needed
            dz = ((self.zc[sl[0]] - center[2]) / radii[2]) ** 2
            dy = ((self.yc[sl[1]] - center[1]) / radii[1]) ** 2
            dx = ((self.xc[sl[2]] - center[0]) / radii[0]) ** 2
            return sl, (dz[:, None, None] + dy[None, :, None] + dx[None, None, :]) <= 1.0
        local = (self.grid(sl) - center.astype(np.float32)) @ rotation.astype(np.float32)
        inside = np.sum((local / radii.astype(np.float32)) ** 2, axis=-1) <= 1.0
        return sl, inside

    def paint_ellipsoid(self, center: Any, radii: Any, value: float, rotation: np.ndarray | None = None,
                        brighten: bool = False, tag: tuple[np.ndarray, int] | None = None) -> None:
        found = self.ellipsoid(np.asarray(center, float), np.asarray(radii, float), rotation)
        if found is not None:
            self._apply(found[0], found[1], value, brighten, tag)

    def paint_small_ellipsoid(self, center: Any, radii: Any, value: float, rotation: np.ndarray | None = None,
                              tag: tuple[np.ndarray, int] | None = None, step_mm: float = 0.3) -> None:
        """Paint a small object with partial volume: each voxel gets its covered fraction.

        Why: sampling only voxel centres misses a 2 mm plaque between two 3 mm slice centres
        entirely; a scanner integrates over the voxel. The fraction is found by supersampling
        the voxel on a grid of about ``step_mm``; the voxel becomes the covered mix of ``value``
        and what was there, and is tagged when any part of it is covered.
        """
        center, radii = np.asarray(center, float), np.asarray(radii, float)
        reach = float(np.max(radii))
        steps = [self.zc[1] - self.zc[0] if self.zc.size > 1 else 1.0, self.yc[1] - self.yc[0], self.xc[1] - self.xc[0]]
        sl = self.box(center - reach - max(steps), center + reach + max(steps))
        if sl is None:
            return
        rot = np.eye(3) if rotation is None else rotation
        n_sub = [max(1, int(np.ceil(abs(st) / step_mm))) for st in steps]
        offsets = [((np.arange(n) + 0.5) / n - 0.5) * st for n, st in zip(n_sub, steps)]
        base = self.grid(sl).astype(np.float64) - center
        covered = np.zeros(base.shape[:3], np.float32)
        for dz in offsets[0]:
            for dy in offsets[1]:
                for dx in offsets[2]:
                    local = (base + np.array([dx, dy, dz])) @ rot
                    covered += np.sum((local / radii) ** 2, axis=-1) <= 1.0
        covered /= float(np.prod(n_sub))
        view = self.hu[sl]
        hit = covered > 0
        view[hit] = view[hit] * (1.0 - covered[hit]) + value * covered[hit]
        if tag is not None:
            tag[0][sl][hit] = tag[1]

    def paint_tube(self, points: np.ndarray, radius: float | np.ndarray, value: float,
                   tag: tuple[np.ndarray, int] | None = None, tag_margin: float = 0.0) -> None:
        """Paint capsules along a polyline (points [n, 3] in x, y, z mm).

        ``tag_margin`` (mm) widens the tagged region beyond the painted one, to cover the blur halo.
        """
        radii = np.broadcast_to(np.asarray(radius, float), (len(points),))
        for a, b, ra, rb in zip(points[:-1], points[1:], radii[:-1], radii[1:]):
            r = max(ra, rb) + tag_margin
            sl = self.box(np.minimum(a, b) - r, np.maximum(a, b) + r)
            if sl is None:
                continue
            p = self.grid(sl)
            ab = (b - a).astype(np.float32)
            t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
            dist = np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)
            reach = ra + (rb - ra) * t
            self._apply(sl, dist <= reach, value, False, None)
            if tag is not None:
                tag[0][sl][dist <= reach + tag_margin] = tag[1]

    def _apply(self, sl: tuple[slice, slice, slice], mask: np.ndarray, value: float, brighten: bool,
               tag: tuple[np.ndarray, int] | None) -> None:
        view = self.hu[sl]
        if brighten:
            view[mask] = np.maximum(view[mask], value)
        else:
            view[mask] = value
        if tag is not None:
            tag[0][sl][mask] = tag[1]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _heart_frame(rng: np.random.Generator) -> np.ndarray:
    """Columns: long axis (base -> apex, left-anterior-inferior), anterior axis, left axis."""
    u = _unit(np.array([0.62 + rng.uniform(-0.1, 0.1), -0.45 + rng.uniform(-0.1, 0.1),
                        -0.55 + rng.uniform(-0.1, 0.1)]))
    v = _unit(np.array([0.0, -1.0, 0.0]) - u * (-u[1]))  # anterior, orthogonal to u
    w = np.cross(u, v)
    if w[0] < 0:  # make the third axis point to the patient's left side of the heart
        w = -w
    return np.stack([u, v, w], axis=1)


def _surface_point(center: np.ndarray, frame: np.ndarray, half_long: float, radius: float,
                   theta_deg: float, phi_deg: float, offset: float) -> np.ndarray:
    """Point ``offset`` mm outside a spheroidal heart; theta 0 = apex, 180 = base; phi 0 = anterior."""
    th, ph = np.radians(theta_deg), np.radians(phi_deg)
    d = frame @ np.array([np.cos(th), np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph)])
    s = 1.0 / np.sqrt((np.cos(th) / half_long) ** 2 + (np.sin(th) / radius) ** 2)
    return center + (s + offset) * d


def _resample_polyline(points: np.ndarray, step: float = 1.5) -> np.ndarray:
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(arc[-1] / step) + 1)
    at = np.linspace(0.0, arc[-1], n)
    return np.stack([np.interp(at, arc, points[:, k]) for k in range(3)], axis=1)


@dataclass
class _Heart:
    center: np.ndarray
    frame: np.ndarray
    half_long: float
    radius: float
    valve: np.ndarray
    """Aortic annulus centre (mm, x y z): at the heart's base, inside it."""
    root_axis: np.ndarray
    """Unit direction of the aortic root / ascending aorta leaving the valve."""
    aortic_radius: float

    def surface(self, theta: float, phi: float, offset: float) -> np.ndarray:
        return _surface_point(self.center, self.frame, self.half_long, self.radius, theta, phi, offset)

    def exit_height(self) -> float:
        """How far up the root axis the aorta leaves the myocardium (the spheroid's surface)."""
        local_start = self.frame.T @ (self.valve - self.center)
        local_dir = self.frame.T @ self.root_axis
        scale = np.array([self.half_long, self.radius, self.radius])
        a = float(np.sum((local_dir / scale) ** 2))
        b = float(2.0 * np.sum(local_start * local_dir / scale ** 2))
        c = float(np.sum((local_start / scale) ** 2) - 1.0)
        root = (-b + np.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)
        return max(0.0, float(root))

    def ostium(self, towards: np.ndarray, height: float | None = None) -> np.ndarray:
        """A point on the aortic root wall, facing ``towards``, where the root leaves the muscle.

        The ostia open into the epicardial fat, as they do between the atrial appendage and the
        right ventricular outflow: 10-20 mm above the valve, never inside the myocardium.
        """
        height = max(10.0, self.exit_height() + 2.0) if height is None else height
        centre = self.valve + self.root_axis * height
        side = towards - centre
        side -= self.root_axis * (side @ self.root_axis)
        return centre + _unit(side) * (self.aortic_radius + 2.5 + 0.5)


def _coronary_tree(heart: _Heart, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Centre lines of LM, LAD, LCX and RCA: from ostia on the aortic root, in the epicardial fat."""
    off = 3.5
    groove = 118.0 + rng.uniform(-6, 6)
    bif = heart.surface(groove + 8, 25.0, off)
    lm = np.stack([heart.ostium(bif), bif])
    lad = np.stack([heart.surface(t, 12.0 - 0.1 * (groove - t), off) for t in np.linspace(groove + 8, 20.0, 24)])
    lcx_end = 165.0 + rng.uniform(-15, 10)
    lcx = np.stack([heart.surface(groove, p, off) for p in np.linspace(25.0, lcx_end, 20)])
    rca_start = heart.surface(groove + 5, -25.0, off)
    rca_groove = np.stack([heart.surface(groove, p, off) for p in np.linspace(-25.0, -200.0, 26)])
    rca = np.concatenate([heart.ostium(rca_start)[None], rca_groove])
    return {"LM": _resample_polyline(np.concatenate([lm, lad[:1]])), "LAD": _resample_polyline(lad),
            "LCX": _resample_polyline(np.concatenate([bif[None], lcx])), "RCA": _resample_polyline(rca)}


def _draw_params(rng: np.random.Generator, style: str) -> dict[str, Any]:
    """Body, heart, scanner: the random choices of one phantom (two independent configurations)."""
    if style == "alt":
        return {
            "increments": [0.75, 1.0, 2.0, 3.0, 4.0, 5.0],
            "pixel_fov_mm": (260.0, 480.0),
            "body": ((150.0, 190.0), (115.0, 145.0)),
            "heart_long": (48.0, 70.0), "heart_radius": (42.0, 52.0),
            "noise": (15.0, 70.0), "noise_grain": (1.0, 1.6),
            "plaque_shape": "cylinder", "blur_mm": (0.55, 0.95),
        }
    return {
        "increments": [0.625, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.0, 5.0],
        "pixel_fov_mm": (300.0, 420.0),
        "body": ((135.0, 180.0), (110.0, 140.0)),
        "heart_long": (52.0, 66.0), "heart_radius": (40.0, 50.0),
        "noise": (8.0, 55.0), "noise_grain": (0.5, 0.8),
        "plaque_shape": "ellipsoid", "blur_mm": (0.45, 0.75),
    }


def generate_thorax(
    seed: int,
    size: int = 512,
    increment: float | None = None,
    z_extent_mm: float | None = None,
    burden: str | None = None,
    noise_hu: float | None = None,
    fov_mm: float | None = None,
    style: str = "default",
) -> ThoraxPhantom:
    """A random chest CT phantom; every choice is drawn from ``seed`` unless given.

    ``burden`` is one of zero, mild, moderate, severe (number and size of coronary plaques).
    ``size`` is the in-plane matrix (512 for a real-sized scan; smaller is faster, the field of
    view is then proportionally smaller and the pixels stay realistic). ``fov_mm`` makes a
    heart-centred (cardiac) reconstruction of that width instead: lungs cut at the edges, spine
    at the border, pixels of ``fov_mm / size``. ``style`` picks the configuration (default, alt).
    """
    if style not in ("default", "alt"):
        raise ValueError(f"style must be default or alt, got {style!r}")
    rng = np.random.default_rng(seed)
    cfg = _draw_params(rng, style)
    increment = float(increment or rng.choice(cfg["increments"]))
    thickness = float(increment * rng.choice([1.0, 1.0, 1.2]))
    burden = burden or str(rng.choice(["zero", "mild", "moderate", "severe"], p=[0.2, 0.3, 0.3, 0.2]))
    noise_hu = float(noise_hu if noise_hu is not None else rng.uniform(*cfg["noise"]))
    pixel = float(rng.uniform(*cfg["pixel_fov_mm"]) / 512.0)
    # Body and heart placement.
    a = rng.uniform(*cfg["body"][0])  # half width
    b = rng.uniform(*cfg["body"][1])  # half depth
    body_shift = rng.uniform(-15.0, 15.0, size=2)
    fat = rng.uniform(6.0, 18.0)
    ai, bi = a - fat, b - fat
    dia_z = 0.0
    half_long, heart_r = rng.uniform(*cfg["heart_long"]), rng.uniform(*cfg["heart_radius"])
    frame = _heart_frame(rng)
    ao_r = rng.uniform(12.0, 16.0)
    spine_y = 0.62 * bi
    desc_y = spine_y - 26.0
    # The heart lies between the sternum and the descending aorta, with fat on both sides.
    u = frame[:, 0]
    reach_y = float(np.sqrt((half_long * u[1]) ** 2 + heart_r ** 2 * (1.0 - u[1] ** 2))) + 8.0
    back = desc_y - ao_r - rng.uniform(6.0, 14.0) - reach_y
    front = -(bi - 9.0) + 12.0 + reach_y
    if front > back:  # a small chest: a smaller heart
        shrink = max(0.75, 1.0 - (front - back) / (2.0 * reach_y))
        half_long, heart_r, reach_y = half_long * shrink, heart_r * shrink, reach_y * shrink
        back, front = desc_y - ao_r - 6.0 - reach_y, -(bi - 9.0) + 12.0 + reach_y
    heart_c = np.array([rng.uniform(12.0, 35.0), float(rng.uniform(min(front, back), back)),
                        dia_z + rng.uniform(45.0, 60.0)])
    # aortic valve at the centre of the base, just under its surface: the ostia open above it
    valve = heart_c - u * (0.82 * half_long) + np.array([-5.0, -6.0, 0.0])
    root_axis = _unit(np.array([-0.25, -0.15, 1.0]) + rng.uniform(-0.1, 0.1, size=3))
    heart = _Heart(heart_c, frame, half_long, heart_r, valve, root_axis, ao_r)
    # Scan range: a whole chest, or a gated calcium scan from the carina to below the apex.
    if fov_mm is not None:
        z_extent = float(z_extent_mm or rng.uniform(120.0, 160.0))
        z_lo = heart_c[2] - rng.uniform(0.45, 0.6) * z_extent
        pixel = float(fov_mm) / size
        centre_xy = heart_c[:2] + rng.uniform(-10.0, 10.0, size=2)
    else:
        z_extent = float(z_extent_mm or rng.uniform(200.0, 290.0))
        z_lo = heart_c[2] - rng.uniform(0.38, 0.5) * z_extent
        centre_xy = -body_shift
    n_z = int(round(z_extent / increment)) + 1
    zc = (z_lo + increment * np.arange(n_z)).astype(np.float64)
    centre_idx = (size - 1) / 2.0
    xc = (np.arange(size) - centre_idx) * pixel + centre_xy[0]
    yc = (np.arange(size) - centre_idx) * pixel + centre_xy[1]
    canvas = _Canvas(zc, yc, xc, AIR)
    bone_tag = np.zeros(canvas.hu.shape, np.uint8)
    plaque_tag = np.zeros(canvas.hu.shape, np.uint8)
    other_tag = np.zeros(canvas.hu.shape, np.uint8)

    # Body: fat ring around soft tissue (elliptic cylinder).
    yy, xx = np.meshgrid(yc, xc, indexing="ij")
    canvas.hu[:, (xx / a) ** 2 + (yy / b) ** 2 <= 1.0] = FAT
    canvas.hu[:, (xx / ai) ** 2 + (yy / bi) ** 2 <= 1.0] = SOFT
    # Liver under the right dome, lungs above the diaphragm.
    canvas.paint_ellipsoid([-0.25 * ai, 0.05 * bi, dia_z - 70.0], [0.8 * ai, 0.85 * bi, 78.0], LIVER)
    lung_r = np.array([0.46 * ai, 0.84 * bi, 150.0])
    for side, dome in ((-1.0, dia_z + 6.0), (1.0, dia_z - 4.0)):
        canvas.paint_ellipsoid([side * 0.5 * ai, 0.06 * bi, dome + lung_r[2]], lung_r, LUNG)
    # Mediastinal and pericardial fat, then the heart: epicardial fat, myocardium, blood pools.
    canvas.paint_ellipsoid(heart_c + [-8.0, -heart_r * 0.7, -18.0], [38.0, 16.0, 26.0], FAT)
    canvas.paint_ellipsoid(heart_c, [half_long + 8, heart_r + 8, heart_r + 8], FAT, rotation=frame)
    canvas.paint_ellipsoid(heart_c, [half_long, heart_r, heart_r], MYOCARDIUM, rotation=frame)
    for along, lateral, r in ((0.15, 0.3, 0.45), (0.1, -0.35, 0.4), (-0.55, 0.2, 0.35), (-0.5, -0.35, 0.35)):
        c = heart_c + frame @ np.array([along * half_long, 0.0, lateral * heart_r])
        canvas.paint_ellipsoid(c, [r * half_long * 1.2, r * heart_r * 1.4, r * heart_r * 1.2], BLOOD,
                               rotation=frame)
    # Aorta: root at the valve inside the heart's base, ascending, arch, descending beside the spine.
    top = valve[2] + rng.uniform(60.0, 80.0)
    desc = np.array([18.0, desc_y, top - 15.0])
    ascending = valve + root_axis * (top - 12.0 - valve[2]) / root_axis[2]
    corners = np.array([valve, valve + root_axis * 25.0, ascending,
                        [ascending[0] * 0.5 + 4.0, (ascending[1] + desc[1]) / 2.0, top], desc,
                        [desc[0] + 2.0, desc[1], zc[0] - 10.0]])
    aorta = _resample_polyline(corners, 2.0)
    beyond_heart = aorta[int(30.0 / 2.0):]
    canvas.paint_tube(beyond_heart, ao_r + 4.0, FAT)  # mediastinal fat around the great vessel
    canvas.paint_tube(aorta[:int(30.0 / 2.0) + 1], ao_r + 2.5, BLOOD)  # sinuses of Valsalva, wider
    canvas.paint_tube(aorta, ao_r, BLOOD)
    # Coronary arteries in the epicardial fat.
    tree = _coronary_tree(heart, rng)
    vessel_r = {"LM": 2.2, "LAD": 1.8, "LCX": 1.6, "RCA": 1.9}
    for name, line in tree.items():
        taper = np.linspace(vessel_r[name], vessel_r[name] * 0.6, len(line))
        canvas.paint_tube(line, taper, SOFT)
    _paint_bones(canvas, rng, ai, bi, spine_y, heart_c, bone_tag)
    plaques = _paint_coronary_plaques(canvas, rng, tree, vessel_r, burden, plaque_tag, cfg["plaque_shape"])
    aortic_calcium = _paint_aortic_calcium(canvas, rng, aorta, heart, other_tag, _arch_span(aorta, corners))
    _paint_mitral_annulus(canvas, rng, heart, other_tag)
    _paint_ecg_leads(canvas, rng, a, b, heart_c, other_tag)

    # Scanner: partial-volume blur (slice profile + in-plane kernel), then low-dose noise and streaks.
    sigma_xy = rng.uniform(*cfg["blur_mm"]) / pixel
    sigma_z = 0.5 * thickness / 2.355 / increment  # small objects already carry the slice average
    hu = ndimage.gaussian_filter(canvas.hu, (sigma_z, sigma_xy, sigma_xy), mode="nearest")
    grain = rng.uniform(*cfg["noise_grain"]) / pixel * 0.45
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, (0.0, grain, grain))
    noise *= noise_hu / max(float(noise.std()), 1e-6)
    hu += noise
    if rng.random() < 0.3:
        _add_streaks(hu, rng, xc, yc, spine_y, noise_hu)
    hu = np.clip(np.round(hu), -1024, 3071).astype(np.int16)

    calcium = hu >= CALCIUM_HU
    # Blur spreads each object by about a voxel: grow the painted tags by one voxel.
    labels = (_grow(plaque_tag) * calcium).astype(np.uint8)
    distractors = (bone_tag * calcium).astype(np.uint8)  # bone tags already include a 1.5 mm halo
    other = _grow(other_tag)
    distractors[(other > 0) & calcium] = other[(other > 0) & calcium]
    labels[distractors > 0] = 0  # calcium touching bone, aorta or valves is not coronary
    origin = (float(xc[0]), float(yc[0]), float(zc[0]))
    params = {"seed": seed, "size": size, "increment": increment, "thickness": thickness, "burden": burden,
              "noise_hu": noise_hu, "pixel_mm": pixel, "body_half_axes_mm": [a, b], "style": style,
              "fov_mm": fov_mm, "aortic_calcium": aortic_calcium}
    return ThoraxPhantom(hu=hu, labels=labels, distractors=distractors,
                         spacing_zyx=(increment, pixel, pixel), origin_lps=origin, slice_thickness=thickness,
                         heart_center_lps=tuple(float(v) for v in heart_c), plaques=plaques, params=params)


def _grow(tag: np.ndarray) -> np.ndarray:
    """Tags grown by one voxel (max filter), computed only around the tagged voxels."""
    where = [np.nonzero(tag.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1))]
    out = np.zeros_like(tag)
    if any(len(w) == 0 for w in where):
        return out
    sl = tuple(slice(max(0, int(w[0]) - 1), int(w[-1]) + 2) for w in where)
    out[sl] = ndimage.maximum_filter(tag[sl], size=3)
    return out


def _paint_bones(canvas: _Canvas, rng: np.random.Generator, ai: float, bi: float, spine_y: float,
                 heart_c: np.ndarray, tag: np.ndarray) -> None:
    """Vertebrae (cortex and marrow), rib heads, ribs, sternum, costal cartilage: never coronary."""
    z0, z1 = canvas.zc[0] - 30.0, canvas.zc[-1] + 30.0
    level = z0 + rng.uniform(0.0, 27.0)
    marrow = float(rng.uniform(120.0, MARROW + 40.0))  # osteoporotic to young
    while level < z1:
        centre = np.array([0.0, spine_y, 0.0])
        top = level + 22.0
        canvas.paint_tube(np.array([centre + [0, 0, level], centre + [0, 0, top]]), 17.0, CORTEX,
                          tag=(tag, 1), tag_margin=1.5)
        canvas.paint_tube(np.array([centre + [0, 0, level + 2], centre + [0, 0, top - 2]]), 14.5, marrow)
        canvas.paint_tube(np.array([centre + [0, 26, level + 4], centre + [0, 42, level + 12]]), 5.0, 500.0,
                          tag=(tag, 1), tag_margin=1.5)
        level = top + 5.0
    canvas.paint_tube(np.array([[0, spine_y + 21, z0], [0, spine_y + 21, z1]]), 8.0, 20.0)  # canal
    rib_z = canvas.zc[-1] + rng.uniform(0.0, 25.0)
    cartilage_calcified = rng.random() < 0.6
    while rib_z > canvas.zc[0] - 60.0:
        for side in (-1.0, 1.0):
            angles = np.radians(np.linspace(-80.0, 55.0, 28))  # -90 = posterior, 90 = anterior
            pts = np.stack([side * (ai - 7.0) * np.cos(angles), (bi - 7.0) * -np.sin(angles),
                            rib_z - 40.0 * (np.sin(angles) + 1.0) / 2.0], axis=1)
            canvas.paint_tube(pts, 4.5, 520.0, tag=(tag, 1), tag_margin=1.5)
            # rib head and neck: from the vertebral body to the rib's angle (costovertebral joint)
            head = np.array([side * 14.0, spine_y - 4.0, pts[0, 2] + 4.0])
            canvas.paint_tube(np.stack([head, pts[0]]), 4.0, 480.0, tag=(tag, 1), tag_margin=1.5)
            # costal cartilage: from the rib's anterior end to the sternum's edge
            sternum_edge = np.array([side * 12.0, -(bi - 9.0), pts[-1, 2] - 25.0])
            line = _resample_polyline(np.stack([pts[-1], (pts[-1] + sternum_edge) / 2.0 + [0, -6.0, 0], sternum_edge]), 2.0)
            canvas.paint_tube(line, 4.0, CARTILAGE)
            if cartilage_calcified:
                for k in rng.choice(len(line), size=min(len(line), int(rng.integers(0, 4))), replace=False):
                    canvas.paint_small_ellipsoid(line[k], rng.uniform(1.0, 2.5, size=3), float(rng.uniform(250.0, 700.0)),
                                                 tag=(tag, 1))
        rib_z -= rng.uniform(22.0, 28.0)
    y_st = -(bi - 9.0)
    st = np.array([[0.0, y_st, heart_c[2] - 45.0], [0.0, y_st - 2.0, heart_c[2] + 110.0]])
    canvas.paint_tube(st, 8.0, 480.0, tag=(tag, 1), tag_margin=1.5)
    canvas.paint_tube(st, 5.5, 240.0)


def _paint_coronary_plaques(canvas: _Canvas, rng: np.random.Generator, tree: dict[str, np.ndarray],
                            vessel_r: dict[str, float], burden: str, tag: np.ndarray,
                            shape: str = "ellipsoid") -> list[Plaque]:
    """Eccentric calcified plaques along the arteries; the burden sets how many and how big."""
    counts = {"zero": (0, 0), "mild": (1, 3), "moderate": (3, 7), "severe": (7, 14)}[burden]
    n = int(rng.integers(counts[0], counts[1] + 1))
    scale = {"zero": 1.0, "mild": 0.9, "moderate": 1.1, "severe": 1.35}[burden]
    weights = np.array([0.12, 0.4, 0.2, 0.28])
    plaques = []
    for _ in range(n):
        artery = str(rng.choice(ARTERIES, p=weights))
        line = tree[artery]
        # LM anywhere past its ostium; the others mostly proximal and mid, where calcium is most common.
        first = 2 if artery == "LM" else 1
        stop = len(line) - 1 if artery == "LM" else max(2, int(len(line) * 0.8))
        k = min(int(rng.integers(first, max(first + 1, stop))), len(line) - 2)
        tangent = _unit(line[k + 1] - line[k])
        normal = _unit(np.cross(tangent, rng.standard_normal(3)))
        r = vessel_r[artery] * (1.0 - 0.4 * k / len(line))
        centre = line[k] + normal * r * rng.uniform(0.3, 0.9)
        peak = float(rng.uniform(250.0, 1300.0))
        rotation = np.stack([tangent, normal, np.cross(tangent, normal)], axis=1)
        if shape == "cylinder":
            # a calcified arc of the wall: a short, thin tube segment along the vessel
            length = rng.uniform(2.0, 9.0) * scale
            half = np.array([length / 2.0, rng.uniform(0.6, 1.4) * scale, rng.uniform(0.6, 1.4) * scale])
            for t in np.linspace(-0.5, 0.5, max(2, int(length / 1.0))):
                canvas.paint_small_ellipsoid(centre + tangent * t * length, [1.0, half[1], half[2]], peak,
                                             rotation=rotation, tag=(tag, ARTERIES.index(artery) + 1))
        else:
            half = np.array([rng.uniform(1.2, 5.0), rng.uniform(0.8, 2.2), rng.uniform(0.8, 2.2)]) * scale
            canvas.paint_small_ellipsoid(centre, half, peak, rotation=rotation, tag=(tag, ARTERIES.index(artery) + 1))
        plaques.append(Plaque(artery, tuple(float(v) for v in centre), tuple(float(v) for v in half), peak))
    return plaques


def _arch_span(aorta: np.ndarray, corners: np.ndarray) -> tuple[int, int]:
    """Indices of the resampled aorta where the arch begins (end of the ascending aorta) and ends
    (start of the descending aorta)."""
    first, last = (int(np.argmin(np.linalg.norm(aorta - corners[i], axis=1))) for i in (2, 4))
    return first, last


def _paint_aortic_calcium(canvas: _Canvas, rng: np.random.Generator, aorta: np.ndarray, heart: _Heart,
                          tag: np.ndarray, arch: tuple[int, int]) -> list[dict[str, Any]]:
    """Aortic wall (ascending, arch, descending) and valve calcium: dense, near the coronaries, never coronary.

    Returns each wall plaque's centre (LPS mm) and the part of the aorta it was painted on.
    """
    ao_r = heart.aortic_radius
    placed = []
    for _ in range(int(rng.integers(0, 8))):
        k = int(rng.integers(len(aorta) // 8, len(aorta) - 2))
        tangent = _unit(aorta[k + 1] - aorta[k])
        normal = _unit(np.cross(tangent, rng.standard_normal(3)))
        half = np.array([rng.uniform(1.5, 6.0), rng.uniform(0.7, 1.5), rng.uniform(1.0, 4.0)])
        rotation = np.stack([tangent, normal, np.cross(tangent, normal)], axis=1)
        centre = aorta[k] + normal * (ao_r - 0.5)
        canvas.paint_small_ellipsoid(centre, half, float(rng.uniform(300.0, 1100.0)), rotation=rotation, tag=(tag, 2))
        part = "ascending" if k < arch[0] else "arch" if k <= arch[1] else "descending"
        placed.append({"centre_lps": [round(float(v), 2) for v in centre], "part": part})
    for _ in range(int(rng.integers(1, 5)) if rng.random() < 0.4 else 0):
        offset = _unit(np.cross(heart.root_axis, rng.standard_normal(3))) * rng.uniform(0.2, 0.8) * ao_r
        canvas.paint_small_ellipsoid(heart.valve + offset + heart.root_axis * rng.uniform(-2.0, 4.0),
                                     rng.uniform(1.0, 3.5, size=3), float(rng.uniform(300.0, 1000.0)), tag=(tag, 3))
    return placed


def _paint_mitral_annulus(canvas: _Canvas, rng: np.random.Generator, heart: _Heart, tag: np.ndarray) -> None:
    """Mitral annular calcification: an arc inside the heart at the left atrioventricular junction."""
    if rng.random() >= 0.2:
        return
    groove = 120.0
    start, stop = rng.uniform(40.0, 90.0), rng.uniform(130.0, 200.0)
    for phi in np.arange(start, stop, 9.0):
        point = heart.surface(groove, float(phi), -rng.uniform(6.0, 9.0))
        canvas.paint_small_ellipsoid(point, rng.uniform(1.2, 2.8, size=3), float(rng.uniform(300.0, 900.0)),
                                     tag=(tag, 4))


def _paint_ecg_leads(canvas: _Canvas, rng: np.random.Generator, a: float, b: float, heart_c: np.ndarray,
                     tag: np.ndarray) -> None:
    """ECG electrodes on the skin of the front of the chest: metal-dense, outside the body."""
    if rng.random() >= 0.5:
        return
    for _ in range(int(rng.integers(2, 5))):
        angle = np.radians(rng.uniform(40.0, 140.0))  # front of the chest
        x, y = a * np.cos(angle) * rng.uniform(0.3, 1.0), -b * np.sin(angle)
        z = heart_c[2] + rng.uniform(-60.0, 60.0)
        point = np.array([x, y - 3.0, z])
        canvas.paint_small_ellipsoid(point, [2.5, 1.2, 2.5], float(rng.uniform(1500.0, 3000.0)), tag=(tag, 5))


def _add_streaks(hu: np.ndarray, rng: np.random.Generator, xc: np.ndarray, yc: np.ndarray, spine_y: float,
                 noise_hu: float) -> None:
    """Photon-starvation streaks through the spine in some slices (bright and dark bands)."""
    yy, xx = np.meshgrid(yc, xc, indexing="ij")
    for z in rng.choice(hu.shape[0], size=max(1, hu.shape[0] // 6), replace=False):
        angle = rng.uniform(0.0, np.pi)
        distance = (xx - 0.0) * np.sin(angle) - (yy - spine_y) * np.cos(angle)
        band = np.exp(-(distance / rng.uniform(1.5, 4.0)) ** 2)
        hu[z] += float(rng.choice([-1.0, 1.0])) * rng.uniform(1.0, 3.0) * noise_hu * band.astype(np.float32)
