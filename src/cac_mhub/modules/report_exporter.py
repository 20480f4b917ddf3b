"""ReportExporter: one JSON report per series, and its cohort row.

Runs for every instance, whatever happened to it earlier (``always_run``), so that each series
found in the input gets a report: scored, processed, skipped with its reason, or failed with it.
A report that cannot be built is replaced by a minimal one; one that cannot be written fails
the series, and its cohort row says so. The report and the row go to the state database; the
cohort files (``cohort.csv``/``cohort.json``) and ``dashboard.html`` are written from there by
the cohort engine (:mod:`cac_mhub.cohort.files`), with this module's ``cohort_name`` and
``dashboard`` options; the table's leading columns and statuses are in :mod:`cac_mhub.cohort_schema`.

Text in cohort.csv is made safe for spreadsheets (:func:`cac_mhub.formatting.csv_cell`): DICOM values are
whatever the scanner or an attacker wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from .. import __version__
from ..chain import Context, Instance, Module, Option, fatal, one_line
from ..formatting import csv_cell
from ..io import atomic_write_bytes, atomic_write_text, json_default

log = logging.getLogger("cac_mhub")


class ReportExporter(Module):
    always_run = True
    options = {
        "patient_id": Option(str, "keep", "PatientID in reports", choices=("keep", "pseudonymise", "omit")),
        "salt": Option(str, "", "secret mixed into pseudonyms (sha256(salt + PatientID))"),
        "report_name": Option(str, "report.json", "per-series report file name"),
        "cohort_name": Option(str, "cohort", "stem of the cohort files at the top of the output"),
        "qc_image": Option(bool, True, "write qc.png: the slices with most calcium, outlined by artery"),
        "dashboard": Option(bool, True, "write dashboard.html at the top of the output when the run ends (cohort at a glance)"),
    }

    def run(self, instance: Instance, ctx: Context) -> None:
        if self.opts["qc_image"] and instance.scores is not None and instance.volume is not None \
                and instance.labels is not None:
            try:
                self.write_qc(instance, ctx)
            except Exception as error:  # noqa: BLE001 - a missing picture must not cost the report
                if fatal(error):
                    raise
                instance.warn(f"qc.png not written: {one_line(error)}")
        target = ctx.output_dir / instance.key / self.opts["report_name"]
        instance.outputs["report"] = str(target.relative_to(ctx.output_dir))
        try:
            report = self.build(instance, ctx)
            report["outputs"] = dict(instance.outputs)
            text = json.dumps(report, indent=2, default=json_default) + "\n"
        except Exception as error:  # noqa: BLE001 - every series gets a report, if only a minimal one
            self._fail(instance, f"ReportExporter: report could not be built: {one_line(error)}")
            report = self.minimal(instance, ctx, self.status(instance), instance.reason)
            report["outputs"] = dict(instance.outputs)
            text = json.dumps(report, indent=2, default=str) + "\n"
        try:
            atomic_write_text(target, text)
        except OSError as error:
            if fatal(error):
                raise
            instance.outputs.pop("report", None)
            self._fail(instance, f"ReportExporter: report not written: {one_line(error)}")
            report.update(status="failed", reason=instance.reason, outputs=dict(instance.outputs))
        instance.report["_final"] = report
        instance.report["_row"] = self.safe_row(instance, report)

    @staticmethod
    def _fail(instance: Instance, reason: str) -> None:
        instance.status, instance.reason = "failed", reason
        log.error("%s failed: %s", instance.key, reason)

    def write_qc(self, instance: Instance, ctx: Context) -> None:
        from ..anatomy.confidence import summary_text
        from ..plots import lesion_overview

        volume, labels = instance.volume, instance.labels
        anatomy = instance.anatomy
        region = anatomy.full("region") if anatomy is not None and anatomy.found else None
        guarded = instance.report.get("_guard_result")
        sites = instance.report.get("_noncoronary_sites")
        png = lesion_overview(volume.hu, labels.array, labels.names, instance.scores.to_dict(),
                              volume.spacing_zyx, title=f"series {instance.key[-12:]}", region=region,
                              excluded=guarded.excluded_maps if guarded is not None else None,
                              noncoronary=sites.site_maps(volume.hu.shape) if sites is not None else None,
                              unlabelled=instance.report.get("_unlabelled_map"),
                              confidence=summary_text(instance.report.get("confidence") or {}))
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

    @staticmethod
    def status(instance: Instance) -> str:
        if instance.status == "ok":
            return "scored" if instance.scores is not None else "processed"
        return instance.status

    def minimal(self, instance: Instance, ctx: Context, status: str, reason: str) -> dict[str, Any]:
        """A report that cannot fail: what the run knows of the series without its headers."""
        series = instance.series
        info = {} if series is None else {
            "series_uid": str(series.uid), "study_uid": str(series.study_uid),
            "modality": str(series.modality), "description": str(series.description),
        }
        return {**_head(ctx), "status": status, "reason": reason, "series": info,
                "warnings": list(instance.warnings), "timings_s": dict(instance.timings)}

    def build(self, instance: Instance, ctx: Context) -> dict[str, Any]:
        series = instance.series
        first = series.first if series is not None and series.headers else None
        extra = {k: v for k, v in instance.report.items() if not k.startswith("_")}
        report: dict[str, Any] = {
            **_head(ctx),
            "status": self.status(instance),
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

    def write_dashboard(self, ctx: Context) -> None:
        """dashboard.html from the cohort CSV just written; a failure only warns (the run's results stand)."""
        from ..report.dashboard import write_dashboard

        try:
            write_dashboard(ctx.output_dir, self.opts["cohort_name"], self.opts["report_name"])
        except Exception as error:  # noqa: BLE001 - a missing dashboard must never fail the run
            log.warning("dashboard.html not written: %s", one_line(error))

    def safe_row(self, instance: Instance, report: dict[str, Any]) -> dict[str, Any]:
        """The cohort row, spreadsheet-safe; a row that cannot be made still names the series."""
        try:
            row = self.row(instance, report)
        except Exception as error:  # noqa: BLE001 - one row per series, whatever its report holds
            row = {"key": instance.key, "status": "failed", "run_id": report.get("run", {}).get("id"),
                   "reason": f"ReportExporter: cohort row could not be made: {one_line(error)}"}
        return {key: csv_cell(value) for key, value in row.items()}

    def row(self, instance: Instance, report: dict[str, Any]) -> dict[str, Any]:
        """The cohort row: :data:`cac_mhub.cohort_schema.BASE_COLUMNS`, then score and module columns."""
        series = report.get("series", {})
        acquisition = report.get("acquisition", {})
        geometry = report.get("geometry", {})
        guard = report.get("guard") or {}
        excluded = guard.get("excluded") or {}
        row = {
            "key": instance.key,
            "status": report["status"],
            "reason": report["reason"],
            "confidence": (report.get("confidence") or {}).get("verdict"),
            "confidence_reasons": "; ".join(r["text"] for r in (report.get("confidence") or {}).get("reasons", [])),
            "patient_id": series.get("patient_id"),
            "study_uid": series.get("study_uid"),
            "study_date": series.get("study_date"),
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
            "excluded_candidates": sum(int(e.get("candidates", 0)) for e in excluded.values()) if guard.get("applied") else None,
            "excluded_agatston": guard.get("excluded_agatston") if guard.get("applied") else None,
            "warnings": " | ".join(report.get("warnings", [])),
            "seconds": round(sum(report.get("timings_s", {}).values()), 3),
            "run_id": report.get("run", {}).get("id"),
        }
        if report["status"] != "pending" and instance.scores is not None and hasattr(instance.scores, "summary_row"):
            row.update(instance.scores.summary_row())
        row.update(instance.report.get("_columns") or {})  # non-coronary calcium, percentile: modules' own columns
        return row


def _head(ctx: Context) -> dict[str, Any]:
    """What every report starts with: software, run and config."""
    return {
        "software": {"name": "cac-mhub", "version": __version__},
        "run": {"id": ctx.run_id},
        "config": {
            "name": ctx.config.get("general", {}).get("name", ""),
            "source": ctx.config.get("source", ""),
            "hash": ctx.config_hash,
        },
    }


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
        "study_date": str(first.get("StudyDate", "") or "") or None,
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
