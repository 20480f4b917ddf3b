"""Data handed from one chain stage to the next, kept in memory (no NIfTI round trips).

Conventions, used everywhere in the project:

* Arrays are indexed ``[z, y, x]`` (slice, row, column), as ``SimpleITK.GetArrayFromImage``.
* ``spacing_zyx`` is in millimetres in array order; ``spacing_zyx[0]`` is the slice *increment*
  (distance between neighbouring slice centres), not the nominal slice thickness.
* ``origin_lps`` is the DICOM patient-coordinate (LPS) position of voxel ``[0, 0, 0]``.
* ``direction`` is the ITK direction matrix as 9 numbers, row-major: column ``i`` of the 3x3
  matrix is the LPS direction of array axis x (i=0), y (i=1), z (i=2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Artery names used in label maps, reports, SEG segments and SR measurements.
ARTERIES: tuple[str, ...] = ("LM", "LAD", "LCX", "RCA")
#: Name of calcium that belongs to no artery (binary model, or a label with no artery mapping).
UNASSIGNED = "CAC"


@dataclass
class Series:
    """One DICOM series found in the input, with its header-only datasets (no pixel data)."""

    uid: str
    """SeriesInstanceUID, or a derived ``fallback.<hash>`` id when the files carry none."""
    study_uid: str
    files: list[Path]
    headers: list[Any]
    """pydicom Datasets read with ``stop_before_pixels``, in the same order as ``files``."""
    modality: str = ""
    description: str = ""
    selected: bool = True
    reason: str = ""
    """Why the series was not selected (empty when selected)."""
    rules: list[str] = field(default_factory=list)
    """The selection rules that were applied, in words, for the log and the report."""
    warnings: list[str] = field(default_factory=list)
    """What selection accepted with a caveat (missing ImageType, a derived reconstruction, ...)."""
    notes: list[str] = field(default_factory=list)
    """What scanning set aside or read once (scouts, a second reconstruction, copies), whatever the
    selection decides: warnings in the report and row."""
    set_aside: list[tuple[Path, str]] = field(default_factory=list)
    """Files filed under this SeriesInstanceUID that are not part of the stack, with the reason."""
    identity: str = ""
    """Short hash of patient, study and geometry (:mod:`cac_mhub.dicom.stacks`)."""
    folder_suffix: str = ""
    """Set when another series of the input shares this one's SeriesInstanceUID: its output
    folder is ``<uid>_<suffix>`` (stable: from patient, study and geometry)."""
    shared_with: str = ""
    """What differs from the other series of the same UID (patient/study/geometry), or ''."""

    @property
    def first(self) -> Any:
        return self.headers[0]


@dataclass
class Volume:
    """A CT series as a 3D array of Hounsfield units with exact geometry."""

    hu: np.ndarray
    """int16 or float32 HU, ``[z, y, x]``; padding / outside-scan voxels are set to -1024 or below."""
    spacing_zyx: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    sop_instance_uids: list[str | None] = field(default_factory=list)
    """Source SOPInstanceUID of each z slice; None for slices made by resampling."""
    slice_thickness: float | None = None
    """Nominal reconstructed slice thickness (DICOM SliceThickness), if given."""
    acquisition: dict[str, Any] = field(default_factory=dict)
    """kVp, kernel, manufacturer, contrast flag, ... (see :mod:`cac_mhub.dicom.volume`)."""
    resampled: bool = False
    """True when the array is not the original slices (tilt correction, gap filling)."""
    stored_dtype: str = ""
    """Pixel type a NIfTI of the series holds: ``int16`` when every slice's HU are integers in range
    (integer rescale of integer pixels: MHub's converter keeps them as int16), else ``float32``;
    empty: not from DICOM (see :attr:`pixel_type`)."""

    @property
    def pixel_type(self) -> str:
        """``stored_dtype``, else the array's own type (int16 or float32)."""
        return self.stored_dtype or ("int16" if self.hu.dtype == np.int16 else "float32")

    @property
    def increment(self) -> float:
        return float(self.spacing_zyx[0])

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        z, y, x = self.spacing_zyx
        return (x, y, z)

    def to_sitk(self, array: np.ndarray | None = None) -> Any:
        """This volume (or another array on the same grid) as a SimpleITK image."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self.hu if array is None else array)
        image.SetSpacing(self.spacing_xyz)
        image.SetOrigin(self.origin_lps)
        image.SetDirection(self.direction)
        return image


@dataclass
class Labels:
    """A calcium label map on the grid of a :class:`Volume`."""

    array: np.ndarray
    """uint8 ``[z, y, x]``, 0 = background."""
    names: dict[int, str]
    """Label value -> artery name (one of :data:`ARTERIES`) or :data:`UNASSIGNED`."""
    source: str = ""
    """Where the labels came from: ``model:<name>@<version>`` or ``file:<path>``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Provenance for the report (model sha256, fold list, SEG SOPInstanceUID, ...)."""
