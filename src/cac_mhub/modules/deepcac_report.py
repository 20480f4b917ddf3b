"""DeepCacReportExporter: DeepCAC2's own report files (MHub deepcac2 parity), beside ours.

MHub's deepcac2 container writes ``<series>/DeepCAC.report.json`` and a cohort
``DeepCAC.report.json`` (a list of the same objects), each a flat JSON object with the published
field names: ``SeriesInstanceUID``, ``PatientID``, ``Predicted Agatston Score`` (an integer) and
``Predicted Risk Group`` (0: 0, 1: 1-100, 2: 101-300, 3: > 300). The score is DeepCAC2's own
Agatston (profile ``deepcac2``) of the calcium mask this module is given: placed right after
DeepCac2Runner it is DeepCAC2's number, before any guard. With ``mapped_scores`` (or a runner
that mapped its mask) the mapped fields of MHub's ``all_pid_*`` workflows are written too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Iterable

from ..chain import Context, Instance, Module, Option
from ..io import atomic_write_text
from .report_exporter import ReportExporter

AGATSTON, RISK = "Predicted Agatston Score", "Predicted Risk Group"
MAPPED_AGATSTON, MAPPED_RISK = "Mapped Predicted Agatston Score", "Mapped Predicted Risk Group"


def deepcac2_fields(hu: Any, spacing_zyx: Any, mask: Any, names: dict[int, str], mapped: bool) -> dict[str, int]:
    """The published score fields of one mask: integer Agatston and risk group (mapped names when mapped)."""
    from ..scoring.agatston import score

    result = score(hu, spacing_zyx, mask, names, profile="deepcac2")
    agatston, risk = (MAPPED_AGATSTON, MAPPED_RISK) if mapped else (AGATSTON, RISK)
    return {agatston: int(result.agatston), risk: int(result.risk_group)}


class DeepCacReportExporter(Module):
    """One ``DeepCAC.report.json`` per scored series and one for the cohort, with DeepCAC2's field names.

    Fields that cannot be made (a series skipped before segmentation) are left out, as MHub's
    ReportExporter leaves out what it cannot read. Our own report carries the same values under
    ``deepcac_report``.
    """

    always_run = True
    options: ClassVar[dict[str, Option]] = {
        "name": Option(str, "DeepCAC.report.json", "file name, per series and for the cohort at the top"),
        "mapped_scores": Option(bool, False, "also the mapped score and group (MHub's all_pid workflows)"),
        "patient_id": Option(str, "keep", "PatientID in these reports", choices=("keep", "pseudonymise", "omit")),
        "salt": Option(str, "", "secret mixed into pseudonyms (sha256(salt + PatientID))"),
    }

    def begin(self, instances: list[Instance], ctx: Context) -> None:
        """No earlier run's cohort file stays beside this run's reports."""
        if not ctx.cohort_files:  # the cohort engine rebuilds it (rebuild_cohort)
            return
        atomic_write_text(ctx.output_dir / self.settings["name"], "[]\n")

    def run(self, instance: Instance, ctx: Context) -> None:
        series = instance.series
        if series is None or not series.selected:
            return
        opts = self.settings
        report: dict[str, Any] = {"SeriesInstanceUID": series.uid}
        first = series.first if series.headers else None
        patient = self.patient_id(str(first.get("PatientID", "") or "")) if first is not None else None
        if patient is not None:
            report["PatientID"] = patient
        labels, volume = instance.labels, instance.volume
        if labels is not None and volume is not None:
            mapped = bool(labels.extra.get("mapped"))
            report.update(deepcac2_fields(volume.hu, volume.spacing_zyx, labels.array, labels.names, mapped))
            if opts["mapped_scores"] and not mapped:
                from ..segmentation.deepcac2 import map_to_calcium

                report.update(deepcac2_fields(volume.hu, volume.spacing_zyx, map_to_calcium(volume.hu, labels.array),
                                              {1: "CAC"}, True))
            target = ctx.output_dir / instance.key / opts["name"]
            atomic_write_text(target, json.dumps(report, indent=4) + "\n")
            instance.outputs["deepcac_report"] = str(target.relative_to(ctx.output_dir))
        instance.report["deepcac_report"] = report

    def patient_id(self, value: str) -> str | None:
        """Kept, pseudonymised or omitted as ReportExporter does it (same options, same pseudonym)."""
        return ReportExporter(**{k: v for k, v in self.settings.items() if k in ("patient_id", "salt")}).patient_id(value)

    def finish(self, instances: list[Instance], ctx: Context) -> None:
        if ctx.cohort_files:
            self.rebuild_cohort((i.report for i in instances), ctx.output_dir)

    def rebuild_cohort(self, reports: Iterable[dict[str, Any]], output_dir: Path) -> None:
        """The cohort file from the series' reports (the cohort engine passes its records')."""
        cohort = [r["deepcac_report"] for r in reports if "deepcac_report" in r]
        atomic_write_text(output_dir / self.settings["name"], json.dumps(cohort, indent=4) + "\n")
