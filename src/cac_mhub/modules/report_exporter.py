"""ReportExporter: one JSON report per series and cohort CSV + JSON over all of them.

Runs for every instance, whatever happened to it earlier (``always_run``), so that each series
found in the input gets a report: scored, processed, skipped with its reason, or failed with it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from typing import Any

from .. import __version__
from ..chain import Context, Instance, Module, Option
from ..io import atomic_write_bytes, atomic_write_text

log = logging.getLogger("cac_mhub")

#: Leading cohort CSV columns, in order; score columns (from the scoring module) follow.
BASE_COLUMNS = [
    "key", "status", "reason", "patient_id", "study_uid", "series_uid", "series_number",
    "series_description", "modality", "manufacturer", "kvp", "kernel", "kernel_class",
    "slice_thickness_mm", "increment_mm", "pixel_spacing_mm", "slices", "contrast",
    "resampled", "warnings", "seconds",
]


class ReportExporter(Module):
    always_run = True
    options = {
        "patient_id": Option(str, "keep", "PatientID in reports", choices=("keep", "pseudonymise", "omit")),
        "salt": Option(str, "", "secret mixed into pseudonyms (sha256(salt + PatientID))"),
        "report_name": Option(str, "report.json", "per-series report file name"),
        "cohort_name": Option(str, "cohort", "stem of the cohort files at the top of the output"),
        "qc_image": Option(bool, True, "write qc.png: the slices with most calcium, outlined by artery"),
    }

    def run(self, instance: Instance, ctx: Context) -> None:
        if self.opts["qc_image"] and instance.scores is not None and instance.volume is not None \
                and instance.labels is not None:
            self.write_qc(instance, ctx)
        report = self.build(instance, ctx)
        target = ctx.output_dir / instance.key / self.opts["report_name"]
        instance.outputs["report"] = str(target.relative_to(ctx.output_dir))
        report["outputs"] = dict(instance.outputs)
        atomic_write_text(target, json.dumps(report, indent=2, default=_json_default) + "\n")
        instance.report["_final"] = report

    def write_qc(self, instance: Instance, ctx: Context) -> None:
        from ..plots import lesion_overview

        volume, labels = instance.volume, instance.labels
        png = lesion_overview(volume.hu, labels.array, labels.names, instance.scores.to_dict(),
                              volume.spacing_zyx, title=f"series {instance.key[-12:]}")
        target = ctx.output_dir / instance.key / "qc.png"
        atomic_write_bytes(target, png)
        instance.outputs["qc"] = str(target.relative_to(ctx.output_dir))

    def patient_id(self, value: str) -> str | None:
        mode = self.opts["patient_id"]
        if mode == "omit":
            return None
        if mode == "pseudonymise":
            return hashlib.sha256((self.opts["salt"] + value).encode()).hexdigest()[:16] if value else ""
        return value

    def build(self, instance: Instance, ctx: Context) -> dict[str, Any]:
        series = instance.series
        first = series.first if series is not None and series.headers else None
        status = instance.status
        if status == "ok":
            status = "scored" if instance.scores is not None else "processed"
        extra = {k: v for k, v in instance.report.items() if not k.startswith("_")}
        report: dict[str, Any] = {
            "software": {"name": "cac-mhub", "version": __version__},
            "config": {
                "name": ctx.config.get("general", {}).get("name", ""),
                "source": ctx.config.get("source", ""),
                "hash": ctx.config_hash,
            },
            "status": status,
            "reason": instance.reason,
            "series": _series_info(series, first, self.patient_id(str(first.get("PatientID", "") or "")) if first else None),
            **extra,
        }
        if instance.labels is not None:
            report["segmentation"] = {
                "source": instance.labels.source,
                "labels": {str(k): v for k, v in instance.labels.names.items()},
                **instance.labels.extra,
            }
        if instance.scores is not None:
            report["scores"] = instance.scores.to_dict()
        report["warnings"] = list(instance.warnings)
        report["timings_s"] = dict(instance.timings)
        return report

    def finish(self, instances: list[Instance], ctx: Context) -> None:
        rows, reports = [], []
        for instance in instances:
            report = instance.report.get("_final")
            if report is None:  # the module did not run for it (should not happen: always_run)
                continue
            reports.append(report)
            rows.append(self.row(instance, report))
        score_columns = sorted({k for row in rows for k in row} - set(BASE_COLUMNS))
        columns = BASE_COLUMNS + score_columns
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        stem = self.opts["cohort_name"]
        atomic_write_text(ctx.output_dir / f"{stem}.csv", buffer.getvalue())
        counts = {s: sum(r["status"] == s for r in reports) for s in ("scored", "processed", "skipped", "failed")}
        cohort = {
            "software": {"name": "cac-mhub", "version": __version__},
            "config": {"name": ctx.config.get("general", {}).get("name", ""), "hash": ctx.config_hash},
            "counts": counts,
            "ignored_files": [{"path": p, "reason": r} for p, r in ctx.shared.get("ignored_files", [])],
            "series": reports,
        }
        atomic_write_text(ctx.output_dir / f"{stem}.json", json.dumps(cohort, indent=2, default=_json_default) + "\n")
        log.info(
            "cohort: %d scored, %d processed, %d skipped, %d failed -> %s.csv",
            counts["scored"], counts["processed"], counts["skipped"], counts["failed"], stem,
        )

    def row(self, instance: Instance, report: dict[str, Any]) -> dict[str, Any]:
        series = report.get("series", {})
        acquisition = report.get("acquisition", {})
        geometry = report.get("geometry", {})
        row = {
            "key": instance.key,
            "status": report["status"],
            "reason": report["reason"],
            "patient_id": series.get("patient_id"),
            "study_uid": series.get("study_uid"),
            "series_uid": series.get("series_uid"),
            "series_number": series.get("series_number"),
            "series_description": series.get("description"),
            "modality": series.get("modality"),
            "manufacturer": acquisition.get("manufacturer", series.get("manufacturer")),
            "kvp": acquisition.get("kvp", series.get("kvp")),
            "kernel": acquisition.get("kernel", series.get("kernel")),
            "kernel_class": acquisition.get("kernel_class"),
            "slice_thickness_mm": acquisition.get("slice_thickness_mm", series.get("slice_thickness_mm")),
            "increment_mm": acquisition.get("increment_mm", series.get("increment_mm")),
            "pixel_spacing_mm": _join(acquisition.get("pixel_spacing_mm", series.get("pixel_spacing_mm"))),
            "slices": acquisition.get("slices", series.get("slices")),
            "contrast": acquisition.get("contrast", series.get("contrast")),
            "resampled": geometry.get("resampled"),
            "warnings": " | ".join(report.get("warnings", [])),
            "seconds": round(sum(report.get("timings_s", {}).values()), 3),
        }
        if instance.scores is not None and hasattr(instance.scores, "summary_row"):
            row.update(instance.scores.summary_row())
        return row


def _series_info(series: Any, first: Any, patient_id: str | None) -> dict[str, Any]:
    if series is None or first is None:
        return {}
    from ..dicom.scan import header_geometry, kernel_text
    from ..dicom.volume import contrast_from_header

    geometry = header_geometry(series)
    in_dicom = str(first.get("SeriesInstanceUID", "") or "").strip()
    info = {
        "series_uid": series.uid,
        "series_uid_missing": not in_dicom,
        "study_uid": series.study_uid,
        "patient_id": patient_id,
        "modality": series.modality,
        "series_number": _plain(first.get("SeriesNumber")),
        "description": series.description,
        "files": len(series.files),
        "manufacturer": str(first.get("Manufacturer", "") or ""),
        "kvp": _plain(first.get("KVP")),
        "kernel": kernel_text(first),
        "contrast": bool(contrast_from_header(first)),
        **geometry,
        "selection": {"selected": series.selected, "reason": series.reason, "rules": series.rules},
    }
    if patient_id is None:
        info.pop("patient_id")
    return info


def _plain(value: Any) -> Any:
    if value is None or value == "":
        return None
    try:
        number = float(value)
        return int(number) if number.is_integer() else number
    except (TypeError, ValueError):
        return str(value)


def _join(value: Any) -> Any:
    return "x".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)
