"""SrExporter: write the scores as a TID 1500 measurement report referencing the SEG and the CT."""

from __future__ import annotations

import pydicom

from ..chain import Context, Instance, Module, Option
from ..dicom.identity import writer_sources
from ..dicom.seg import AlgorithmInfo
from ..dicom.sr import DEFAULT_SERIES_DESCRIPTION, DEFAULT_SERIES_NUMBER, build_sr
from ..io import atomic_path, safe_name
from .dseg_converter import note_sources


class SrExporter(Module):
    """Comprehensive 3D SR with totals, per-artery scores and the risk category (coded)."""

    options = {
        "name": Option(str, "cac", "output file name stem: <series folder>/<name>.sr.dcm"),
        "series_description": Option(str, DEFAULT_SERIES_DESCRIPTION, "SeriesDescription of the SR"),
        "series_number": Option(int, DEFAULT_SERIES_NUMBER, "SeriesNumber of the SR"),
    }

    def run(self, instance: Instance, ctx: Context) -> None:
        if instance.series is None or instance.scores is None:
            raise ValueError("SrExporter needs scores (run AgatstonCalculator first)")
        seg = None
        if "seg" in instance.outputs:
            seg = pydicom.dcmread(ctx.output_dir / instance.outputs["seg"], stop_before_pixels=True)
        sources = writer_sources(instance.series)
        note_sources(instance, sources)
        unique = {str(h.SOPInstanceUID): h for h in sources.headers}
        source = instance.labels.source if instance.labels is not None else ""
        sr = build_sr(
            list(unique.values()),
            instance.scores,
            AlgorithmInfo(model_id=source),
            seg=seg,
            series_description=self.opts["series_description"],
            series_number=self.opts["series_number"],
            noncoronary=instance.report.get("noncoronary"),
            confidence=instance.report.get("confidence"),
        )
        target = ctx.output_dir / instance.key / f"{safe_name(self.opts['name'], 'cac')}.sr.dcm"
        with atomic_path(target) as tmp:
            sr.save_as(tmp)
        instance.outputs["sr"] = str(target.relative_to(ctx.output_dir))
        instance.report["sr"] = {
            "sop_instance_uid": str(sr.SOPInstanceUID),
            "series_instance_uid": str(sr.SeriesInstanceUID),
            "references_seg": seg is not None,
        }
