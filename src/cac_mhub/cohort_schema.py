"""The cohort table's schema: the leading columns of ``cohort.csv`` and the statuses of its rows.

Shared by the module that makes each row (:mod:`cac_mhub.modules.report_exporter`) and the
cohort engine that writes the files from the state database (:mod:`cac_mhub.cohort.files`), so
neither reads the other's internals. Other columns follow the leading ones, sorted by name: the
scores' own (``Scores.summary_row``: ``agatston``, ``agatston_LAD``, ...) and those a module adds
through ``instance.report["_columns"]`` (non-coronary calcium, MESA percentile).
"""

from __future__ import annotations

#: Leading cohort CSV columns, in order; score columns (from the scoring module) follow.
BASE_COLUMNS = [
    "key", "status", "reason", "confidence", "confidence_reasons", "patient_id", "study_uid", "study_date", "series_uid", "series_number",
    "series_description", "modality", "manufacturer", "kvp", "kernel", "kernel_class",
    "slice_thickness_mm", "increment_mm", "pixel_spacing_mm", "slices", "contrast",
    "resampled", "excluded_candidates", "excluded_agatston", "warnings", "seconds", "run_id",
]
#: Report statuses of finished series.
STATUSES = ("scored", "processed", "skipped", "failed")
