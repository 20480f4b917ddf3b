"""DsegConverter: write the calcium label map as a DICOM SEG that files into the CT's study."""

from __future__ import annotations

from pathlib import Path

import pydicom

from ..chain import Context, Instance, Module, Option
from ..dicom.identity import WriterSources, writer_sources
from ..dicom.seg import (
    DEFAULT_SERIES_DESCRIPTION,
    DEFAULT_SERIES_NUMBER,
    AlgorithmInfo,
    SegNotPossible,
    build_seg,
    build_seg_dcmqi,
    headers_in_volume_order,
    plan_segments,
)
from ..io import atomic_path, safe_name


class DsegConverter(Module):
    """One BINARY segment per artery present, referencing the source CT slice by slice."""

    options = {
        "engine": Option(str, "highdicom", "SEG writer: highdicom (in process) or dcmqi (itkimage2segimage)",
                         choices=("highdicom", "dcmqi")),
        "name": Option(str, "cac", "output file name stem: <series folder>/<name>.seg.dcm"),
        "series_description": Option(str, DEFAULT_SERIES_DESCRIPTION, "SeriesDescription of the SEG"),
        "series_number": Option(int, DEFAULT_SERIES_NUMBER, "SeriesNumber of the SEG"),
        "empty": Option(str, "skip", "no calcium voxels: skip = no SEG (the report says why), "
                        "write = a SEG with one empty CAC segment", choices=("skip", "write")),
    }

    def run(self, instance: Instance, ctx: Context) -> None:
        if instance.series is None or instance.volume is None or instance.labels is None:
            raise ValueError("DsegConverter needs a volume and labels "
                             "(run NiftiConverter and a segmentation module first)")
        volume, labels = instance.volume, instance.labels
        sources = writer_sources(instance.series)
        note_sources(instance, sources)
        try:
            headers = headers_in_volume_order(sources.headers, volume)
        except SegNotPossible as why:
            instance.warn(f"no DICOM SEG written: {why}")
            instance.report["seg"] = {"written": False, "reason": str(why)}
            return
        segments = plan_segments(labels.array, labels.names)
        write_empty = self.opts["empty"] == "write"
        if not segments and not write_empty:
            instance.report["seg"] = {"written": False, "reason": "no calcium voxels in the label map (empty: skip)"}
            return
        algorithm = AlgorithmInfo(model_id=labels.source)
        target = ctx.output_dir / instance.key / f"{safe_name(self.opts['name'], 'cac')}.seg.dcm"
        common = dict(series_description=self.opts["series_description"], series_number=self.opts["series_number"])
        # dcmqi cannot encode an empty segmentation: the empty SEG always comes from highdicom.
        engine = self.opts["engine"] if segments else "highdicom"
        if engine == "dcmqi" and sources.changed:
            # dcmqi copies from the files on disk, which lack what writer_sources supplied
            instance.warn("SEG written with highdicom, not dcmqi: the source files lack UIDs or hold invalid "
                          "values that dcmqi would copy")
            engine = "highdicom"
        with atomic_path(target) as tmp:
            if engine == "dcmqi":
                build_seg_dcmqi(self._source_files(instance, headers), labels.array, labels.names, volume,
                                algorithm, tmp, **common)
            else:
                seg = build_seg(headers, labels.array, labels.names, algorithm, write_empty=write_empty, **common)
                assert seg is not None  # segments present, or write_empty
                seg.save_as(tmp)
        written = pydicom.dcmread(target, stop_before_pixels=True)
        instance.outputs["seg"] = str(target.relative_to(ctx.output_dir))
        instance.report["seg"] = {
            "written": True,
            "engine": engine,
            "sop_instance_uid": str(written.SOPInstanceUID),
            "series_instance_uid": str(written.SeriesInstanceUID),
            "frames": int(getattr(written, "NumberOfFrames", 1)),
            "segments": {int(s.SegmentNumber): str(s.SegmentLabel) for s in written.SegmentSequence},
        }

    @staticmethod
    def _source_files(instance: Instance, headers: list) -> list[Path]:
        """The files of the volume's slices (dcmqi reads the source CT from disk)."""
        assert instance.series is not None
        filled = writer_sources(instance.series).headers
        file_of = {str(h.SOPInstanceUID): f for f, h in zip(instance.series.files, filled)}
        return [Path(file_of[str(h.SOPInstanceUID)]) for h in headers]


def note_sources(instance: Instance, sources: WriterSources) -> None:
    """Put what writer_sources had to supply into the report, each warning once per series."""
    if sources.uids:
        instance.report["uids_derived"] = sources.uids
    for message in sources.warnings:
        if message not in instance.warnings:
            instance.warn(message)
