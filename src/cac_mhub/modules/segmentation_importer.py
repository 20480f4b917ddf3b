"""SegmentationImporter: use an existing calcium segmentation (DICOM SEG or label-map file).

Re-scores expert annotations or a released dataset without a model. For each CT series it
looks for

* a DICOM SEG among the inputs (``ctx.shared["catalog"]``) whose ReferencedSeriesSequence
  names the CT series, or whose frames reference the CT's images; or
* a NIfTI / NRRD label map at ``path_template`` (fields ``{input_dir}``, ``{SeriesInstanceUID}``,
  ``{StudyInstanceUID}``, ``{PatientID}``, ``{AccessionNumber}``, ``{SeriesNumber}``,
  ``{key}``; DICOM values are made file-name safe; ``*`` / ``?`` glob to exactly one file).

Nothing is resampled: a segmentation whose grid differs from the CT's is an error naming the
difference. ``label_map`` maps label values (files) or segment numbers / SegmentLabels (SEG)
to LM, LAD, LCX, RCA, CAC or ``ignore``.
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pydicom

from ..chain import ChainError, Context, Instance, Module, Option, SkipInstance
from ..dicom.identity import sop_uid
from ..dicom.seg import (
    CANONICAL_VALUES,
    IGNORE,
    GeometryMismatch,
    read_seg,
    segment_names,
    to_canonical,
)
from ..io import safe_name
from ..types import UNASSIGNED, Labels, Series, Volume

TEMPLATE_FIELDS = ("input_dir", "SeriesInstanceUID", "StudyInstanceUID", "PatientID", "AccessionNumber",
                   "SeriesNumber", "key")
_TARGETS = tuple(CANONICAL_VALUES) + (IGNORE,)


# --------------------------------------------------------------------------- pure helpers


def normalise_label_map(mapping: Mapping[Any, Any]) -> dict[Any, str]:
    """YAML keys may be ints or strings: digits become ints; targets are checked."""
    result: dict[Any, str] = {}
    for key, target in mapping.items():
        name = str(target).strip()
        name = name if name == IGNORE else name.upper()
        if name not in _TARGETS:
            raise ChainError(f"label_map: {key!r} -> {target!r} is not one of {list(_TARGETS)}")
        text = str(key).strip()
        result[int(text) if text.lstrip("-").isdigit() else text] = name
    return result


def check_template(template: str) -> None:
    """Raise ChainError for a template naming an unknown field."""
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None and field not in TEMPLATE_FIELDS:
            raise ChainError(f"path_template: unknown field {{{field}}}; known: {', '.join(TEMPLATE_FIELDS)}")


def template_path(template: str, input_dir: Path, series: Series, key: str) -> Path | None:
    """The label file for ``series``: the formatted template, or its single glob match."""
    first = series.first
    values = {
        "input_dir": str(input_dir),
        "key": key,
        **{f: safe_name(str(first.get(f, "") or ""), fallback="none")
           for f in TEMPLATE_FIELDS if f not in ("input_dir", "key")},
    }
    path = Path(template.format(**values))
    if not any(c in str(path) for c in "*?["):
        return path if path.exists() else None
    anchor = Path(path.anchor) if path.is_absolute() else Path(".")
    matches = sorted(anchor.glob(str(path.relative_to(anchor)) if path.is_absolute() else str(path)))
    if len(matches) > 1:
        raise ValueError(f"path_template matches {len(matches)} files for this series: {matches[0].name}, ...")
    return matches[0] if matches else None


def check_image_geometry(image: Any, volume: Volume) -> None:
    """Raise :class:`GeometryMismatch` unless the SimpleITK image is on the volume's grid."""
    nz, ny, nx = volume.hu.shape
    if tuple(image.GetSize()) != (nx, ny, nz):
        raise GeometryMismatch(f"label map size {tuple(image.GetSize())} (x, y, z) != CT {(nx, ny, nz)}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise GeometryMismatch("label map has several components per voxel")
    if not np.allclose(image.GetSpacing(), volume.spacing_xyz, rtol=1e-4, atol=1e-4):
        raise GeometryMismatch(f"label map spacing {np.round(image.GetSpacing(), 5).tolist()} != CT "
                               f"{np.round(volume.spacing_xyz, 5).tolist()}")
    tolerance = max(0.01, 0.01 * min(volume.spacing_zyx))
    if not np.allclose(image.GetOrigin(), volume.origin_lps, rtol=0, atol=tolerance):
        raise GeometryMismatch(f"label map origin {np.round(image.GetOrigin(), 3).tolist()} != CT "
                               f"{np.round(volume.origin_lps, 3).tolist()} (LPS mm)")
    if not np.allclose(image.GetDirection(), volume.direction, rtol=0, atol=1e-4):
        raise GeometryMismatch(f"label map direction {np.round(image.GetDirection(), 4).tolist()} != CT "
                               f"{np.round(volume.direction, 4).tolist()}")


def read_label_file(path: Path, volume: Volume) -> np.ndarray:
    """A NIfTI / NRRD / any ITK label image as an integer ``[z, y, x]`` array on the CT grid."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    check_image_geometry(image, volume)
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"{path.name}: label map values are not whole numbers")
        array = array.astype(np.int64)
    return array


def file_label_names(array: np.ndarray, mapping: Mapping[Any, str]) -> dict[int, str]:
    """Label value -> name: every non-zero value is CAC without a mapping; with one, all must be mapped."""
    present = sorted(int(v) for v in np.unique(array) if v != 0)
    if not mapping:
        return {v: UNASSIGNED for v in present}
    names = {int(k): v for k, v in mapping.items() if isinstance(k, int)}
    unmapped = [v for v in present if v not in names]
    if unmapped:
        raise ValueError(f"label values {unmapped} are not in label_map (map them, or to 'ignore')")
    return {v: names[v] for v in present}


def seg_candidates(catalog: list[Series], ct: Series, ct_sop_uids: set[str]) -> list[tuple[Path, Any]]:
    """(file, header) of every SEG instance that references the CT series or its images."""
    found = []
    for series in catalog:
        if series.modality != "SEG":
            continue
        # the chain keeps unselected series (SEGs among them) whole in the catalog
        for path, header in zip(series.files, series.headers):
            if _references(header, ct.uid, ct_sop_uids):
                found.append((Path(path), header))
    found.sort(key=lambda item: (str(item[1].get("ContentDate", "")), str(item[1].get("ContentTime", "")),
                                 int(item[1].get("InstanceNumber", 0) or 0)), reverse=True)
    return found


def _references(header: Any, series_uid: str, sop_uids: set[str]) -> bool:
    for item in header.get("ReferencedSeriesSequence", []):
        if str(item.get("SeriesInstanceUID", "")) == series_uid:
            return True
    for frame in header.get("PerFrameFunctionalGroupsSequence", []):
        for derivation in frame.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                if str(source.get("ReferencedSOPInstanceUID", "")) in sop_uids:
                    return True
    return False


def labels_from_seg(seg: Any, volume: Volume, mapping: Mapping[Any, str], frame_of_reference_uid: str | None,
                    source_name: str) -> Labels:
    """Decode a SEG onto the CT grid and map its segments to arteries."""
    decoded = read_seg(seg, volume, frame_of_reference_uid)
    names = segment_names(seg, mapping)
    array, canonical = to_canonical(decoded.segment_numbers, names)
    extra: dict[str, Any] = {
        "seg_file": source_name,
        "seg_sop_instance_uid": str(seg.SOPInstanceUID),
        "segments": {n: {"label": decoded.segment_labels.get(n, ""), "artery": names[n]} for n in sorted(names)},
    }
    if decoded.overlap_voxels:
        extra["overlap_voxels"] = decoded.overlap_voxels
    return Labels(array=array, names=canonical, source=f"seg:{seg.SOPInstanceUID}", extra=extra)


def labels_from_file(path: Path, volume: Volume, mapping: Mapping[Any, str], source_name: str) -> Labels:
    """Read a label file on the CT grid and map its values to arteries."""
    raw = read_label_file(path, volume)
    names = file_label_names(raw, mapping)
    array, canonical = to_canonical(raw, names)
    extra = {"label_file": source_name, "label_values": {v: names[v] for v in sorted(names)}}
    return Labels(array=array, names=canonical, source=f"file:{source_name}", extra=extra)


def _display(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return os.path.abspath(path)


# --------------------------------------------------------------------------- module


class SegmentationImporter(Module):
    """Set ``instance.labels`` from an existing segmentation instead of running a model."""

    whole_input = True  # a SEG may lie in any folder of the input

    options = {
        "source": Option(str, "auto", "where to look: auto = a SEG among the inputs, else the path template",
                         choices=("auto", "seg", "file")),
        "path_template": Option(str, "", "label map file, e.g. {input_dir}/labels/{SeriesInstanceUID}.nii.gz"),
        "label_map": Option(dict, {}, "label value (file) or segment number / SegmentLabel (SEG) -> "
                            "LM | LAD | LCX | RCA | CAC | ignore; files: empty = every label is CAC"),
        "missing": Option(str, "skip", "series without a segmentation: skip it or fail it", choices=("skip", "fail")),
    }

    def setup(self, ctx: Context) -> None:
        check_template(self.opts["path_template"])
        self.mapping = normalise_label_map(self.opts["label_map"])
        if self.opts["source"] == "file" and not self.opts["path_template"]:
            raise ChainError("SegmentationImporter: source 'file' needs a path_template")

    def run(self, instance: Instance, ctx: Context) -> None:
        if instance.series is None or instance.volume is None:
            raise ValueError("SegmentationImporter needs a volume (run NiftiConverter first)")
        mapping = getattr(self, "mapping", None)
        if mapping is None:
            mapping = normalise_label_map(self.opts["label_map"])
        volume, series = instance.volume, instance.series
        looked = []
        if self.opts["source"] in ("auto", "seg"):
            # the SOPInstanceUIDs SEGs may reference: each slice's own, or the one derived for it
            uids = {u for u in volume.sop_instance_uids if u} | {
                sop_uid(h, f, series.uid) for f, h in zip(series.files, series.headers)}
            candidates = seg_candidates(ctx.shared.get("catalog", []), series, uids)
            if candidates:
                path, _ = candidates[0]
                if len(candidates) > 1:
                    instance.warn(f"{len(candidates)} SEGs reference this series; using the latest ({path.name})")
                frame_of_reference = str(series.first.get("FrameOfReferenceUID", "") or "") or None
                instance.labels = labels_from_seg(pydicom.dcmread(path), volume, mapping, frame_of_reference,
                                                  _display(path, ctx.input_dir))
                return
            looked.append("no DICOM SEG references it")
        if self.opts["source"] in ("auto", "file") and self.opts["path_template"]:
            path = template_path(self.opts["path_template"], ctx.input_dir, series, instance.key)
            if path is not None:
                instance.labels = labels_from_file(path, volume, mapping, _display(path, ctx.input_dir))
                return
            looked.append("no file matches path_template")
        reason = "no segmentation found: " + "; ".join(looked or ["nothing to look for"])
        if self.opts["missing"] == "fail":
            raise FileNotFoundError(reason)
        raise SkipInstance(reason)
