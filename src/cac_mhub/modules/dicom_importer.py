"""DicomImporter: find the series in the input folder and choose which ones to score."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from ..chain import ChainError, Context, Instance, Module, Option
from ..dicom.identity import uid_message, uid_report
from ..dicom.scan import SelectionRules, scan, scan_files, select, unreadable_beside
from ..io import safe_name
from ..types import Series

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
            if series.uid in ctx.taken_uids and not series.folder_suffix:
                series.folder_suffix = series.identity or "2"
                series.shared_with = series.shared_with or "patient/study"
        for series in result.series:
            if not series.selected and not self.opts["report_skipped"]:
                continue
            instance = Instance(key=series_key(series, used), series=series)
            if not series.selected:
                instance.status, instance.reason = "skipped", f"DicomImporter: {series.reason}"
                log.info("%s skipped: %s", instance.key, series.reason)
            self.annotate(instance, result.ignored)
            instances.append(instance)
        self.note_shared_uids(instances)
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
        for message in series.notes:
            instance.warn(message)
        if series.set_aside:
            instance.report["set_aside"] = [{"file": p.name, "reason": why} for p, why in series.set_aside]
        if series.selected:
            for message in series.warnings + ([uid_message(uids)] if uids else []):
                instance.warn(message)
        unreadable = unreadable_beside(series, ignored)
        if unreadable:
            names = ", ".join(p.name for p in unreadable[:3]) + (", ..." if len(unreadable) > 3 else "")
            instance.report["unreadable_files_beside"] = len(unreadable)
            instance.warn(f"{len(unreadable)} unreadable file(s) in this series' folder ({names}): "
                          "the series may be missing slices")


    @staticmethod
    def note_shared_uids(instances: list[Instance]) -> None:
        """Series that share a SeriesInstanceUID but not patient, study or geometry: a warning
        on each, naming the other output folders (an earlier unit's folder: the engine's catalog
        knows it, the record then says so)."""
        by_uid: dict[str, list[Instance]] = {}
        for instance in instances:
            if instance.series is not None and instance.series.shared_with:
                by_uid.setdefault(instance.series.uid, []).append(instance)
        for group in by_uid.values():
            for instance in group:
                series = instance.series
                assert series is not None
                others = [o.key for o in group if o is not instance]
                if others:
                    instance.warn(f"this SeriesInstanceUID also names another series (another {series.shared_with}): "
                                  f"kept apart, this one as {instance.key}, the other(s) as {', '.join(others)}")
                else:
                    instance.warn("this SeriesInstanceUID also names a series of another patient or study found "
                                  f"earlier in the input: kept apart, this one as {instance.key}")


def series_key(series: Series, used: set[str]) -> str:
    """The output folder of a series: its SeriesInstanceUID, made safe; ``<uid>_<suffix>`` for a
    series that shares its UID with another (stable: the suffix hashes patient, study, geometry)."""
    base = safe_name(series.uid, fallback="series")
    key = f"{base[:119]}_{series.folder_suffix}" if series.folder_suffix else base
    while key in used:
        key += "_"
    used.add(key)
    return key


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path
