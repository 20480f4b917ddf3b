"""DicomImporter: find the series in the input folder and choose which ones to score."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from ..chain import ChainError, Context, Instance, Module, Option
from ..dicom.identity import uid_message, uid_report
from ..dicom.scan import SelectionRules, scan, scan_files, select, unreadable_beside
from ..io import safe_name

log = logging.getLogger("cac_mhub")


class DicomImporter(Module):
    """Source module: one instance per series found; unselected series are reported as skipped."""

    source = True
    options = {
        "min_slices": Option(int, 10, "fewest slices a series needs to be scored"),
        "max_increment_mm": Option(float, 3.0, "largest slice increment accepted (mm)"),
        "max_normal_angle_deg": Option(float, 30.0, "largest angle between slice normal and patient z"),
        "allow_derived": Option(bool, False, "accept DERIVED/SECONDARY image types even beside an ORIGINAL series"),
        "per_study": Option(str, "best", "one reconstruction per study, or all eligible", choices=("best", "all")),
        "preferred_increment_mm": Option(list, [2.5, 3.0], "increment range preferred between reconstructions"),
        "report_skipped": Option(bool, True, "list unselected series in the report with their reason"),
    }

    def rules(self) -> SelectionRules:
        preferred = self.opts["preferred_increment_mm"]
        if len(preferred) != 2 or not all(isinstance(v, (int, float)) for v in preferred):
            raise ChainError("DicomImporter.preferred_increment_mm: expected [low, high] in mm")
        return SelectionRules(
            min_slices=self.opts["min_slices"],
            max_increment_mm=self.opts["max_increment_mm"],
            max_normal_angle_deg=self.opts["max_normal_angle_deg"],
            allow_derived=self.opts["allow_derived"],
            per_study=self.opts["per_study"],
            preferred_increment_mm=(float(preferred[0]), float(preferred[1])),
        )

    def setup(self, ctx: Context) -> None:
        for rule in self.rules().describe():  # once per run (and per worker process)
            log.info("selection rule: %s", rule)

    def create_instances(self, ctx: Context) -> list[Instance]:
        rules = self.rules()
        if ctx.unit_files is not None:  # one study of a cohort, from the streaming catalog
            result = scan_files(ctx.unit_files)
        else:
            result = scan(ctx.input_dir, exclude=[ctx.output_dir])
        select(result.series, rules)
        ctx.shared["catalog"] = result.series
        ctx.shared["ignored_files"] = [(str(_relative(p, ctx.input_dir)), why) for p, why in result.ignored]
        if result.ignored:
            reasons = Counter(why for _, why in result.ignored)
            summary = ", ".join(f"{count} {why}" for why, count in reasons.most_common())
            unreadable = any("unreadable" in why for why in reasons)
            log.log(logging.WARNING if unreadable else logging.INFO, "%d file(s)/folder(s) ignored: %s",
                    len(result.ignored), summary)
            for path, why in ctx.shared["ignored_files"]:
                log.debug("ignored %s: %s", path, why)
        if not result.series and ctx.unit_files is None:  # the cohort engine says it once for the input
            log.warning("no DICOM series found in the input folder")
        instances, used = [], set()
        for series in result.series:
            if not series.selected and not self.opts["report_skipped"]:
                continue
            key = safe_name(series.uid, fallback="series")
            while key in used:
                key += "_"
            used.add(key)
            instance = Instance(key=key, series=series)
            if not series.selected:
                instance.status, instance.reason = "skipped", f"DicomImporter: {series.reason}"
                log.info("%s skipped: %s", key, series.reason)
            self.annotate(instance, result.ignored)
            instances.append(instance)
        selected = sum(s.selected for s in result.series)
        log.log(logging.DEBUG if ctx.unit_files is not None else logging.INFO,
                "%d series found, %d selected for scoring", len(result.series), selected)
        return instances

    @staticmethod
    def annotate(instance: Instance, ignored: list[tuple[Path, str]]) -> None:
        """Report what the series' files lack or what may be missing from it (warnings, fields)."""
        series = instance.series
        assert series is not None
        try:
            uids = uid_report(series)
        except Exception:  # noqa: BLE001 - a report detail must never stop the import
            log.debug("uid report of %s", instance.key, exc_info=True)
            uids = {}
        if uids:
            instance.report["uids_derived"] = uids
        if series.selected:
            for message in series.warnings + ([uid_message(uids)] if uids else []):
                instance.warn(message)
        unreadable = unreadable_beside(series, ignored)
        if unreadable:
            names = ", ".join(p.name for p in unreadable[:3]) + (", ..." if len(unreadable) > 3 else "")
            instance.report["unreadable_files_beside"] = len(unreadable)
            instance.warn(f"{len(unreadable)} unreadable file(s) in this series' folder ({names}): "
                          "the series may be missing slices")


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path
