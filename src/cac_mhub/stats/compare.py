"""``cac-mhub compare``'s result: two score tables paired by id, every agreement statistic, as one dict.

Pure apart from reading the tables: the command writes the dict as ``agreement.json`` and
renders it (:mod:`cac_mhub.report.agreement_page`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .agreement import DEFAULT_CUTS, agreement, bootstrap
from .tables import artery_columns, pair, read_rows, scores


def compare_tables(reference_table: Path, test_table: Path | None, id_column: str, reference_column: str,
                   test_column: str, cuts: Sequence[float] = DEFAULT_CUTS, resamples: int = 1000,
                   seed: int = 0) -> dict[str, Any]:
    """Agreement of ``reference_column`` (in ``reference_table``) and ``test_column`` (in
    ``test_table``, or the same table when None), over the ids both have a score for."""
    reference_rows = read_rows(reference_table)
    test_rows = read_rows(test_table) if test_table is not None else reference_rows
    reference = scores(reference_rows, id_column, reference_column, f"reference table {reference_table}")
    test = scores(test_rows, id_column, test_column, f"test table {test_table or reference_table}")
    paired = pair(reference, test)
    result: dict[str, Any] = {
        "reference": {"table": str(reference_table), "column": reference_column},
        "test": {"table": str(test_table or reference_table), "column": test_column},
        "id": id_column,
        "cuts": list(cuts),
        **_statistics(paired.reference, paired.test, cuts),
        "unmatched": paired.counts() | {"only_reference_ids": paired.only_reference,
                                        "only_test_ids": paired.only_test, "missing_score_ids": paired.missing},
        "ci95": bootstrap(paired.reference, paired.test, cuts, resamples, seed) if len(paired.ids) >= 3 else {},
        "bootstrap": {"resamples": resamples, "seed": seed, "method": "percentile, subjects resampled"},
        "per_artery": {},
        "pairs": {"ids": paired.ids, "reference": paired.reference, "test": paired.test},
    }
    for artery, (ref_col, test_col) in artery_columns(reference_rows, test_rows, reference_column, test_column).items():
        by_artery = pair(scores(reference_rows, id_column, ref_col, "reference"), scores(test_rows, id_column, test_col, "test"))
        result["per_artery"][artery] = {"columns": [ref_col, test_col],
                                        **_statistics(by_artery.reference, by_artery.test, cuts)}
    return result


def _statistics(reference: list[float], test: list[float], cuts: Sequence[float]) -> dict[str, Any]:
    if not reference:
        return {"n": 0}
    return agreement(reference, test, cuts)
