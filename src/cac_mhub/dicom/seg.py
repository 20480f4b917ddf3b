"""DICOM Segmentation (SEG) of coronary calcium: build one, and read one back onto a CT grid.

Pure functions: header datasets, arrays and names in, datasets or arrays out. Two engines write
equivalent objects: highdicom (default, in process) and dcmqi's ``itkimage2segimage`` (the tool
MHub models use). Both encode one BINARY segment per artery present, coded as SNOMED CT
"Morphologically abnormal structure" / "Vascular calcification" with the artery as anatomic
region, and reference the source CT frame by frame.

A SEG can only reference the CT slices one to one when the volume is the original slices in
order (``Volume.resampled`` False, a SOPInstanceUID for every slice); otherwise
:class:`SegNotPossible` is raised and the caller decides (the DsegConverter skips the SEG with a
warning). Reading never resamples: a SEG whose frames do not land exactly on the CT grid raises
:class:`GeometryMismatch` with the reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from .. import __version__
from ..types import ARTERIES, UNASSIGNED, Volume

#: Names in segment order, and the fixed label value each gets in label maps made from a SEG.
SEGMENT_ORDER: tuple[str, ...] = ARTERIES + (UNASSIGNED,)
CANONICAL_VALUES: dict[str, int] = {name: i + 1 for i, name in enumerate(SEGMENT_ORDER)}

#: Anatomic region (SNOMED CT) of each segment name.
ANATOMY = {
    "LM": codes.SCT.LeftMainCoronaryArtery,
    "LAD": codes.SCT.AnteriorDescendingBranchOfLeftCoronaryArtery,
    "LCX": codes.SCT.CircumflexCoronaryArtery,
    "RCA": codes.SCT.RightCoronaryArtery,
    UNASSIGNED: codes.SCT.CoronaryArtery,
}
CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
PROPERTY_TYPE = codes.SCT.VascularCalcification
#: Display colours (RGB) so that viewers show the arteries apart.
COLOURS = {
    "LM": (255, 215, 0),
    "LAD": (230, 40, 40),
    "LCX": (40, 180, 60),
    "RCA": (40, 100, 240),
    UNASSIGNED: (255, 140, 0),
}
DESCRIPTIONS = {
    "LM": "Calcium in the left main coronary artery",
    "LAD": "Calcium in the left anterior descending artery",
    "LCX": "Calcium in the left circumflex artery",
    "RCA": "Calcium in the right coronary artery",
    UNASSIGNED: "Coronary artery calcium",
}

DEFAULT_SERIES_DESCRIPTION = "CAC segmentation (cac-mhub)"
DEFAULT_SERIES_NUMBER = 901


class SegNotPossible(ValueError):
    """The volume cannot be referenced frame by frame (resampled, or slices without a UID)."""


class GeometryMismatch(ValueError):
    """A segmentation does not lie exactly on the CT grid it is meant for."""


@dataclass(frozen=True)
class AlgorithmInfo:
    """Who made the segmentation, written into every segment and the SR."""

    name: str = "cac-mhub"
    version: str = __version__
    model_id: str = ""
    """Where the labels came from, e.g. ``model:deepcac2-nnunet@1`` or ``file:labels/x.nii.gz``."""


@dataclass(frozen=True)
class Segment:
    """One SEG segment: a name and the label values of the label map that belong to it."""

    number: int
    name: str
    values: tuple[int, ...]
    tracking_uid: str = field(default_factory=generate_uid)

    @property
    def tracking_id(self) -> str:
        return f"CAC {self.name}"


def plan_segments(array: np.ndarray, names: Mapping[int, str]) -> list[Segment]:
    """The segments to write: one per name with voxels, in LM, LAD, LCX, RCA, CAC order.

    Label values whose name is not an artery count as CAC; several values may share a name.
    """
    present = label_values_present(array)
    by_name: dict[str, list[int]] = {}
    for value in sorted(present):
        name = names.get(value, UNASSIGNED)
        by_name.setdefault(name if name in ANATOMY else UNASSIGNED, []).append(value)
    ordered = [n for n in SEGMENT_ORDER if n in by_name]
    return [Segment(i + 1, n, tuple(by_name[n])) for i, n in enumerate(ordered)]


def occupied_slices(array: np.ndarray) -> np.ndarray:
    """Indices of the z slices with any non-zero voxel (cheap: calcium is sparse)."""
    return np.flatnonzero(array.reshape(array.shape[0], -1).any(axis=1))


def label_values_present(array: np.ndarray) -> set[int]:
    """The non-zero values of a label map, looking only at the slices that have any."""
    values = array[occupied_slices(array)]
    values = values[values != 0]
    return {int(v) for v in np.unique(values)}


def segment_lut(segments: Sequence[Segment]) -> np.ndarray:
    """Lookup table: label value (0..255) -> segment number."""
    lut = np.zeros(256, np.uint8)
    for segment in segments:
        lut[list(segment.values)] = segment.number
    return lut


def segment_number_map(array: np.ndarray, segments: Sequence[Segment]) -> np.ndarray:
    """Label map -> uint8 array of segment numbers (0 = background)."""
    out = np.zeros(array.shape, np.uint8)
    occupied = occupied_slices(array)
    out[occupied] = segment_lut(segments)[array[occupied].astype(np.uint8, copy=False)]
    return out


def headers_in_volume_order(headers: Iterable[Dataset], volume: Volume) -> list[Dataset]:
    """The source CT header of every volume slice, in z order; raises :class:`SegNotPossible`."""
    if volume.resampled:
        raise SegNotPossible(
            "the volume was resampled (gantry tilt or gap filling), so SEG frames cannot "
            "reference the original slices one to one"
        )
    uids = list(volume.sop_instance_uids)
    if len(uids) != volume.hu.shape[0] or any(not uid for uid in uids):
        raise SegNotPossible("not every volume slice has a source SOPInstanceUID")
    by_uid = {str(h.SOPInstanceUID): h for h in headers}
    missing = [uid for uid in uids if uid not in by_uid]
    if missing:
        raise SegNotPossible(f"{len(missing)} volume slices have no matching source header")
    return [by_uid[uid] for uid in uids]


def _algorithm_sequence(algorithm: AlgorithmInfo) -> Any:
    import highdicom as hd

    parameters = {"model": algorithm.model_id} if algorithm.model_id else None
    return hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=codes.DCM.ArtificialIntelligence,
        version=algorithm.version,
        parameters=parameters,
    )


def segment_descriptions(segments: Sequence[Segment], algorithm: AlgorithmInfo) -> list[Any]:
    """highdicom SegmentDescriptions with the codes, colours and algorithm of each segment."""
    import highdicom as hd

    result = []
    for s in segments:
        item = hd.seg.SegmentDescription(
            segment_number=s.number,
            segment_label=s.name,
            segmented_property_category=CATEGORY,
            segmented_property_type=PROPERTY_TYPE,
            algorithm_type="AUTOMATIC",
            algorithm_identification=_algorithm_sequence(algorithm),
            tracking_uid=s.tracking_uid,
            tracking_id=s.tracking_id,
            anatomic_regions=[ANATOMY[s.name]],
            display_color=hd.color.CIELabColor.from_rgb(*COLOURS[s.name]),
        )
        item.SegmentDescription = DESCRIPTIONS[s.name]  # as the dcmqi engine writes it
        result.append(item)
    return result


def build_seg(
    source_headers: Sequence[Dataset],
    label_array: np.ndarray,
    names: Mapping[int, str],
    algorithm: AlgorithmInfo,
    series_description: str = DEFAULT_SERIES_DESCRIPTION,
    series_number: int = DEFAULT_SERIES_NUMBER,
    write_empty: bool = False,
) -> Dataset | None:
    """A BINARY highdicom Segmentation of ``label_array`` (``[z, y, x]``, one slice per header).

    ``source_headers`` must be in the array's z order (see :func:`headers_in_volume_order`).
    Only the slices containing calcium become frames and are referenced (as dcmqi does): highdicom
    checks every source image it is given, so this keeps a 300-slice series fast. With no
    calcium, returns None unless ``write_empty``: then one empty CAC segment on the first slice
    (the smallest valid SEG that still files into the study).
    """
    import highdicom as hd

    if label_array.shape[0] != len(source_headers):
        raise ValueError(f"{label_array.shape[0]} slices but {len(source_headers)} source headers")
    first = source_headers[0]
    if label_array.shape[1:] != (int(first.Rows), int(first.Columns)):
        raise ValueError(f"label map {label_array.shape[1:]} != CT matrix {first.Rows}x{first.Columns}")
    segments = plan_segments(label_array, names)
    if segments:
        occupied = occupied_slices(label_array)
        pixels = segment_lut(segments)[label_array[occupied].astype(np.uint8, copy=False)]
        sources = [source_headers[z] for z in occupied]
    elif write_empty:
        segments = [Segment(1, UNASSIGNED, ())]
        pixels = np.zeros((1,) + label_array.shape[1:], np.uint8)
        sources = [source_headers[0]]
    else:
        return None
    content = "Coronary artery calcium"
    if algorithm.model_id:
        content = f"{content}; {algorithm.model_id}"[:64]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(segments, algorithm),
        series_instance_uid=generate_uid(),
        series_number=int(series_number),
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=algorithm.name,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        device_serial_number="none",
        content_label="CAC",
        content_description=content,
        content_creator_name=None,
        series_description=series_description,
        omit_empty_frames=bool(segments[0].values),
    )
    _fix_slice_spacing(seg)
    return seg


def _fix_slice_spacing(seg: Dataset) -> None:
    """Make SpacingBetweenSlices non-negative.

    highdicom copies the source's value, and some scanners (Philips) write a negative one,
    which is invalid in a SEG (dciodvfy error); the slice order is given by the positions.
    """
    for item in seg.SharedFunctionalGroupsSequence[0].get("PixelMeasuresSequence", []):
        if "SpacingBetweenSlices" in item and float(item.SpacingBetweenSlices) < 0:
            item.SpacingBetweenSlices = abs(float(item.SpacingBetweenSlices))


# --------------------------------------------------------------------------- dcmqi engine


def dcmqi_metadata(
    segments: Sequence[Segment],
    algorithm: AlgorithmInfo,
    series_description: str,
    series_number: int,
) -> dict[str, Any]:
    """The itkimage2segimage JSON describing ``segments`` (label ID = segment number)."""

    def code(c: Any) -> dict[str, str]:
        return {"CodeValue": c.value, "CodingSchemeDesignator": c.scheme_designator, "CodeMeaning": c.meaning}

    attributes = [
        {
            "labelID": s.number,
            "SegmentLabel": s.name,
            "SegmentDescription": DESCRIPTIONS[s.name],
            "SegmentAlgorithmType": "AUTOMATIC",
            "SegmentAlgorithmName": algorithm.name,
            "SegmentedPropertyCategoryCodeSequence": code(CATEGORY),
            "SegmentedPropertyTypeCodeSequence": code(PROPERTY_TYPE),
            "AnatomicRegionSequence": code(ANATOMY[s.name]),
            "recommendedDisplayRGBValue": list(COLOURS[s.name]),
            "TrackingIdentifier": s.tracking_id,
            "TrackingUniqueIdentifier": s.tracking_uid,
        }
        for s in segments
    ]
    description = "Coronary artery calcium"
    if algorithm.model_id:
        description = f"{description}; {algorithm.model_id}"[:64]
    return {
        "ContentCreatorName": f"{algorithm.name}^",
        "ClinicalTrialSeriesID": "1",
        "ClinicalTrialTimePointID": "1",
        "ClinicalTrialCoordinatingCenterName": algorithm.name,
        "SeriesDescription": series_description,
        "SeriesNumber": str(int(series_number)),
        "InstanceNumber": "1",
        "ContentLabel": "CAC",
        "ContentDescription": description,
        "BodyPartExamined": "HEART",
        "segmentAttributes": [attributes],
    }


def dcmqi_tool(name: str) -> str:
    """Path of a dcmqi command line tool (from the dcmqi wheel, or PATH)."""
    try:
        import dcmqi

        candidate = Path(dcmqi.__file__).parent / "bin" / name
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"dcmqi tool {name} not found (pip install dcmqi)")
    return found


def build_seg_dcmqi(
    source_files: Sequence[Path],
    label_array: np.ndarray,
    names: Mapping[int, str],
    volume: Volume,
    algorithm: AlgorithmInfo,
    out_path: Path,
    series_description: str = DEFAULT_SERIES_DESCRIPTION,
    series_number: int = DEFAULT_SERIES_NUMBER,
    timeout_s: float = 600.0,
) -> bool:
    """Write the SEG of ``label_array`` to ``out_path`` with dcmqi; False when there is no calcium.

    ``source_files`` are the CT series' DICOM files; ``volume`` gives the label map's geometry.
    dcmqi cannot encode an empty segmentation, so an empty label map writes nothing (use
    :func:`build_seg` with ``write_empty`` for an empty SEG).
    """
    import SimpleITK as sitk

    if label_array.shape != volume.hu.shape:
        raise ValueError(f"label map {label_array.shape} != volume {volume.hu.shape}")
    segments = plan_segments(label_array, names)
    if not segments:
        return False
    pixels = segment_number_map(label_array, segments)
    meta = dcmqi_metadata(segments, algorithm, series_description, series_number)
    with tempfile.TemporaryDirectory(prefix="cac-dcmqi-") as tmp:
        work = Path(tmp)
        (work / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        image = volume.to_sitk(pixels)
        sitk.WriteImage(image, str(work / "labels.nrrd"), useCompression=True)
        dicom_dir = work / "dicom"
        dicom_dir.mkdir()
        for i, source in enumerate(source_files):
            (dicom_dir / f"{i:05d}.dcm").symlink_to(Path(source).resolve())
        command = [
            dcmqi_tool("itkimage2segimage"),
            "--inputImageList", str(work / "labels.nrrd"),
            "--inputDICOMDirectory", str(dicom_dir),
            "--inputMetadata", str(work / "meta.json"),
            "--outputDICOM", str(out_path),
            "--useLabelIDAsSegmentNumber",
            "--skip", "1",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0 or not Path(out_path).exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"itkimage2segimage failed ({done.returncode}): {' | '.join(tail)}")
    return True


# --------------------------------------------------------------------------- reading back


@dataclass
class SegLabels:
    """A SEG decoded onto a CT grid."""

    segment_numbers: np.ndarray
    """uint8 ``[z, y, x]`` of segment numbers (0 = background)."""
    segment_labels: dict[int, str]
    """Segment number -> SegmentLabel as written in the SEG."""
    overlap_voxels: int = 0
    """Voxels claimed by more than one segment (kept in the lowest segment number)."""


def _position_tolerance(volume: Volume) -> float:
    return max(0.01, 0.01 * min(volume.spacing_zyx))


def slice_positions(volume: Volume) -> np.ndarray:
    """LPS position of the first voxel of every z slice, ``(nz, 3)``."""
    direction = np.asarray(volume.direction, float).reshape(3, 3)
    steps = np.arange(volume.hu.shape[0]) * volume.spacing_zyx[0]
    return np.asarray(volume.origin_lps, float) + np.outer(steps, direction[:, 2])


def _functional(seg: Dataset, frame: int, sequence: str) -> Dataset | None:
    """A functional group item of one frame, per-frame first, then shared."""
    per_frame = getattr(seg, "PerFrameFunctionalGroupsSequence", None)
    if per_frame is not None and per_frame[frame].get(sequence):
        return per_frame[frame][sequence][0]
    shared = getattr(seg, "SharedFunctionalGroupsSequence", None)
    if shared and shared[0].get(sequence):
        return shared[0][sequence][0]
    return None


def check_seg_geometry(seg: Dataset, volume: Volume, frame_of_reference_uid: str | None = None) -> None:
    """Raise :class:`GeometryMismatch` unless the SEG's matrix, spacing and orientation are the CT's."""
    nz, ny, nx = volume.hu.shape
    if (int(seg.Rows), int(seg.Columns)) != (ny, nx):
        raise GeometryMismatch(f"SEG matrix {seg.Rows}x{seg.Columns} != CT {ny}x{nx}")
    seg_for = str(getattr(seg, "FrameOfReferenceUID", "") or "")
    if frame_of_reference_uid and seg_for and seg_for != frame_of_reference_uid:
        raise GeometryMismatch("SEG FrameOfReferenceUID differs from the CT's")
    measures = _functional(seg, 0, "PixelMeasuresSequence")
    if measures is not None and "PixelSpacing" in measures:
        row_spacing, column_spacing = (float(v) for v in measures.PixelSpacing)
        expected = (volume.spacing_zyx[1], volume.spacing_zyx[2])
        if not np.allclose((row_spacing, column_spacing), expected, rtol=1e-4, atol=1e-4):
            raise GeometryMismatch(f"SEG pixel spacing {row_spacing}/{column_spacing} != CT {expected}")
    orientation = _functional(seg, 0, "PlaneOrientationSequence")
    if orientation is not None and "ImageOrientationPatient" in orientation:
        direction = np.asarray(volume.direction, float).reshape(3, 3)
        expected = np.concatenate([direction[:, 0], direction[:, 1]])
        found = np.asarray([float(v) for v in orientation.ImageOrientationPatient])
        if not np.allclose(found, expected, atol=1e-4):
            raise GeometryMismatch(f"SEG orientation {found.round(4).tolist()} != CT {expected.round(4).tolist()}")


def frame_slices(seg: Dataset, volume: Volume) -> list[int]:
    """The CT z index of every SEG frame, by source-image reference and position.

    A frame referencing a CT slice must also sit at that slice's position (when the SEG gives
    one); a frame without a reference is placed by position. Anything off the grid raises.
    """
    uid_to_z = {uid: z for z, uid in enumerate(volume.sop_instance_uids) if uid}
    positions = slice_positions(volume)
    tolerance = _position_tolerance(volume)
    in_plane = np.asarray(volume.direction, float).reshape(3, 3)[:, :2]
    result = []
    for frame in range(int(getattr(seg, "NumberOfFrames", 1))):
        reference = None
        derivation = _functional(seg, frame, "DerivationImageSequence")
        if derivation is not None and "SourceImageSequence" in derivation:
            reference = str(derivation.SourceImageSequence[0].ReferencedSOPInstanceUID)
        plane = _functional(seg, frame, "PlanePositionSequence")
        position = None
        if plane is not None and "ImagePositionPatient" in plane:
            position = np.asarray([float(v) for v in plane.ImagePositionPatient])
        if reference is not None and reference in uid_to_z:
            z = uid_to_z[reference]
        elif position is not None:
            z = int(np.argmin(np.linalg.norm(positions - position, axis=1)))
        elif reference is not None:
            raise GeometryMismatch(f"SEG frame {frame + 1} references an image that is not in this CT series")
        else:
            raise GeometryMismatch(f"SEG frame {frame + 1} has neither a source reference nor a position")
        if position is not None:
            offset = position - positions[z]
            if np.linalg.norm(offset) > tolerance:
                along = float(np.linalg.norm(offset - in_plane @ (in_plane.T @ offset)))
                raise GeometryMismatch(
                    f"SEG frame {frame + 1} at {position.round(3).tolist()} is {np.linalg.norm(offset):.3f} mm "
                    f"({along:.3f} mm along the slice normal) from CT slice {z}; no resampling is done"
                )
        result.append(z)
    return result


def read_seg(seg: Dataset, volume: Volume, frame_of_reference_uid: str | None = None) -> SegLabels:
    """Decode a SEG (BINARY, FRACTIONAL or LABELMAP) onto the grid of ``volume``."""
    seg_type = str(getattr(seg, "SegmentationType", ""))
    if str(getattr(seg, "Modality", "")) != "SEG" or not seg_type:
        raise ValueError("not a DICOM Segmentation (Modality SEG with a SegmentationType)")
    check_seg_geometry(seg, volume, frame_of_reference_uid)
    labels = {int(item.SegmentNumber): str(getattr(item, "SegmentLabel", "")) for item in seg.SegmentSequence}
    if labels and max(labels) > 255:
        raise ValueError(f"SEG has segment number {max(labels)}; at most 255 are supported")
    slices = frame_slices(seg, volume)
    frames = np.asarray(seg.pixel_array)
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    out = np.zeros(volume.hu.shape, np.uint8)
    overlap = 0
    for frame, z in enumerate(slices):
        if seg_type == "LABELMAP":
            values = frames[frame].astype(np.uint8)
            _merge(out[z], values > 0, values)
            continue
        if seg_type == "FRACTIONAL":
            threshold = float(getattr(seg, "MaximumFractionalValue", 255)) / 2.0
            mask = frames[frame] >= max(threshold, 1.0)
        else:
            mask = frames[frame] > 0
        identification = _functional(seg, frame, "SegmentIdentificationSequence")
        if identification is None:
            raise ValueError(f"SEG frame {frame + 1} does not say which segment it belongs to")
        number = int(identification.ReferencedSegmentNumber)
        overlap += _merge(out[z], mask, np.uint8(number))
    return SegLabels(out, labels, overlap)


def _merge(target: np.ndarray, mask: np.ndarray, numbers: Any) -> int:
    """Write segment numbers into ``target`` where ``mask``; the lowest number wins. Returns overlaps."""
    numbers = np.broadcast_to(np.asarray(numbers, np.uint8), target.shape)
    taken = mask & (target != 0) & (target != numbers)
    write = mask & ((target == 0) | (numbers < target))
    target[write] = numbers[write]
    return int(taken.sum())


def segment_names(seg: Dataset, mapping: Mapping[Any, str] | None = None) -> dict[int, str]:
    """Segment number -> artery name (or CAC).

    ``mapping`` keys may be segment numbers or SegmentLabels; otherwise the SegmentLabel is used
    when it is an artery name, then the anatomic region code, then CAC.
    """
    mapping = dict(mapping or {})
    by_code = {c.value: name for name, c in ANATOMY.items()}
    result = {}
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        label = str(getattr(item, "SegmentLabel", "")).strip()
        name = mapping.get(number, mapping.get(str(number), mapping.get(label)))
        if name is None and label.upper() in ANATOMY:
            name = label.upper()
        if name is None:
            for region in getattr(item, "AnatomicRegionSequence", []):
                if str(region.CodeValue) in by_code:
                    name = by_code[str(region.CodeValue)]
                    break
        result[number] = name or UNASSIGNED
    return result


IGNORE = "ignore"
"""Mapping target that drops a label value or segment (e.g. calcium outside the coronaries)."""


def to_canonical(numbers: np.ndarray, names: Mapping[int, str]) -> tuple[np.ndarray, dict[int, str]]:
    """Relabel a label map (value -> name) to the fixed values of :data:`CANONICAL_VALUES`.

    Values named :data:`IGNORE` become background; values not in ``names`` raise. The names
    returned are those of the values present.
    """
    lut = np.zeros(256, np.uint8)
    used: dict[int, str] = {}
    for value, name in names.items():
        if not 0 < int(value) < 256:
            raise ValueError(f"label value {value} is outside 1..255")
        if name == IGNORE:
            continue
        if name not in CANONICAL_VALUES:
            raise ValueError(f"label {value}: {name!r} is not one of {list(CANONICAL_VALUES) + [IGNORE]}")
        lut[int(value)] = CANONICAL_VALUES[name]
        used[CANONICAL_VALUES[name]] = name
    occupied = occupied_slices(numbers)
    present = label_values_present(numbers)
    unnamed = sorted(present - {int(v) for v in names})
    if unnamed:
        raise ValueError(f"label values {unnamed} have no artery mapping")
    out = np.zeros(numbers.shape, np.uint8)
    out[occupied] = lut[numbers[occupied].astype(np.uint8, copy=False)]
    kept = {int(lut[v]) for v in present}
    return out, {value: name for value, name in sorted(used.items()) if value in kept}
