"""Write a synthetic HU volume as a real, valid DICOM CT Image Storage series.

Used by the phantom generators and by tests that need DICOM edge cases with known geometry
(missing slices, uneven spacing, gantry tilt, duplicate positions, empty UIDs, ...).
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ..io import atomic_path


@dataclass
class CtSeriesSpec:
    """Header values of a synthetic CT series; defaults look like a low-dose chest CT."""

    patient_id: str = "PHANTOM-0001"
    patient_name: str = "Phantom^Thorax"
    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    series_number: int = 1
    series_description: str = "Synthetic chest CT"
    study_description: str = "CT CHEST"
    modality: str = "CT"
    manufacturer: str = "cac-mhub phantom"
    kvp: float = 120.0
    kernel: str = "B30f"
    slice_thickness: float | None = None
    """Nominal thickness; defaults to the slice increment."""
    contrast_agent: str | None = None
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL")
    pixel_padding_value: int | None = None
    """Stored value marking padding (outside the scan circle), as scanners write it."""
    rescale_slope: float = 1.0
    rescale_intercept: float = -1024.0
    gantry_tilt_deg: float = 0.0
    """Tilt about the x axis: rows tilt by this angle, slices still advance along patient z."""
    empty_uids: bool = False
    """Write empty Study/Series/SOP UIDs (as some anonymisers do)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Additional top-level attributes, keyword -> value."""


def write_ct_series(
    hu: np.ndarray,
    out_dir: Path,
    spacing_zyx: Sequence[float],
    origin_lps: Sequence[float] = (0.0, 0.0, 0.0),
    spec: CtSeriesSpec | None = None,
    z_positions: Sequence[float] | None = None,
    file_names: str = "IM{index:04d}.dcm",
) -> list[Path]:
    """Write ``hu`` (``[z, y, x]``) as one CT file per slice and return the paths.

    ``z_positions`` overrides the slice positions along patient z (default: origin z plus
    k times the increment), which is how tests make missing slices, uneven spacing or
    duplicate positions. Stored values are ``round((HU - intercept) / slope)`` as uint16.
    """
    spec = spec or CtSeriesSpec()
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu must be 3D [z, y, x], got shape {hu.shape}")
    dz, dy, dx = (float(s) for s in spacing_zyx)
    if z_positions is None:
        z_positions = [origin_lps[2] + k * dz for k in range(hu.shape[0])]
    if len(z_positions) != hu.shape[0]:
        raise ValueError("z_positions must have one entry per slice")
    stored = np.round((hu.astype(np.float64) - spec.rescale_intercept) / spec.rescale_slope)
    stored = np.clip(stored, 0, 65535).astype(np.uint16)
    tilt = math.radians(spec.gantry_tilt_deg)
    orientation = [1.0, 0.0, 0.0, 0.0, math.cos(tilt), math.sin(tilt)]
    now = _dt.datetime(2026, 1, 1, 12, 0, 0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(hu.shape[0]):
        sop_uid = "" if spec.empty_uids else generate_uid()
        ds = _slice_dataset(spec, sop_uid, now)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(origin_lps[0]), float(origin_lps[1]), float(z_positions[k])]
        ds.ImageOrientationPatient = orientation
        ds.SliceLocation = float(z_positions[k])
        ds.PixelSpacing = [dy, dx]
        ds.SliceThickness = spec.slice_thickness if spec.slice_thickness is not None else dz
        ds.Rows, ds.Columns = int(hu.shape[1]), int(hu.shape[2])
        ds.PixelData = stored[k].tobytes()
        path = out_dir / file_names.format(index=k + 1)
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


def _slice_dataset(spec: CtSeriesSpec, sop_uid: str, when: _dt.datetime) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = "" if spec.empty_uids else spec.study_uid
    ds.SeriesInstanceUID = "" if spec.empty_uids else spec.series_uid
    ds.FrameOfReferenceUID = spec.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = "19500101"
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = when.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.StudyDescription = spec.study_description
    ds.SeriesDescription = spec.series_description
    ds.Modality = spec.modality
    ds.SeriesNumber = spec.series_number
    ds.AcquisitionNumber = 1
    ds.Manufacturer = spec.manufacturer
    ds.PatientPosition = "FFS"
    ds.ImageType = list(spec.image_type)
    ds.KVP = spec.kvp
    ds.ConvolutionKernel = spec.kernel
    ds.GantryDetectorTilt = spec.gantry_tilt_deg
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = spec.rescale_intercept
    ds.RescaleSlope = spec.rescale_slope
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    if spec.pixel_padding_value is not None:
        ds.PixelPaddingValue = spec.pixel_padding_value
    if spec.contrast_agent:
        ds.ContrastBolusAgent = spec.contrast_agent
    for keyword, value in spec.extra.items():
        setattr(ds, keyword, value)
    return ds
