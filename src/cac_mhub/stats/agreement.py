"""Agreement between two sets of calcium scores: the statistics every CAC paper reports.

Pure: two arrays of scores (the same subjects, in the same order) in, plain dicts out. Each
statistic comes from a maintained library so that readers can trust and reproduce it:
Spearman and Pearson from :mod:`scipy.stats`, Cohen's kappa and the confusion matrix from
:mod:`sklearn.metrics`, the intraclass correlations from :func:`pingouin.intraclass_corr`
(Shrout & Fleiss 1979 forms). Bland-Altman limits are two lines of arithmetic (mean difference
± 1.96 SD of the differences, Bland & Altman 1986). Undefined values (a constant column) are
``None``, never NaN, so that the JSON stays valid.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Sequence

import numpy as np

#: Default risk-group cut points (Agatston): 0, 1-100, 101-300, > 300 (DeepCAC / DeepCAC2).
DEFAULT_CUTS: tuple[float, ...] = (0.0, 100.0, 300.0)
#: Statistics that get a bootstrap confidence interval.
BOOTSTRAPPED = ("spearman", "pearson_log", "icc_1_1", "icc_2_1", "icc_3_1", "kappa", "kappa_linear",
                "kappa_quadratic", "group_agreement", "mean_difference", "mean_difference_log")


def risk_groups(scores: Sequence[float] | np.ndarray, cuts: Sequence[float] = DEFAULT_CUTS) -> np.ndarray:
    """Group index per score: 0 for ``score <= cuts[0]``, i for ``cuts[i-1] < score <= cuts[i]``,
    ``len(cuts)`` above the last cut (the comparisons of :func:`scoring.categories.risk_group`)."""
    return np.searchsorted(np.asarray(cuts, float), np.asarray(scores, float), side="left")


def group_names(cuts: Sequence[float] = DEFAULT_CUTS) -> list[str]:
    """Readable names of the groups of ``cuts``: ``0``, ``(0, 100]``, ..., ``> 300``."""
    names = [f"<= {_num(cuts[0])}" if cuts[0] != 0 else "0"]
    names += [f"({_num(lo)}, {_num(hi)}]" for lo, hi in zip(cuts[:-1], cuts[1:])]
    return names + [f"> {_num(cuts[-1])}"]


def _num(value: float) -> str:
    return f"{value:g}"


def _clean(value: Any) -> float | None:
    value = float(value)
    return None if not math.isfinite(value) else value


def spearman(reference: np.ndarray, test: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if np.ptp(reference) == 0 or np.ptp(test) == 0:
        return None
    return _clean(spearmanr(reference, test).statistic)


def pearson_log(reference: np.ndarray, test: np.ndarray) -> float | None:
    """Pearson's r of log(1 + score): scores span four decades, raw r follows the largest few."""
    from scipy.stats import pearsonr

    x, y = np.log1p(reference), np.log1p(test)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return _clean(pearsonr(x, y).statistic)


def icc(reference: np.ndarray, test: np.ndarray) -> dict[str, float | None]:
    """ICC(1,1), ICC(2,1) and ICC(3,1) (Shrout & Fleiss 1979) of two raters, with pingouin's
    F-based 95 % intervals. ICC(2,1) is absolute agreement, ICC(3,1) consistency."""
    if len(reference) < 3 or (np.ptp(reference) == 0 and np.ptp(test) == 0):
        return {"icc_1_1": None, "icc_2_1": None, "icc_3_1": None}
    return icc_table(np.column_stack([reference, test]))


def icc_table(ratings: np.ndarray) -> dict[str, Any]:
    """ICC(1,1), ICC(2,1), ICC(3,1) of a subjects x raters table (pingouin.intraclass_corr)."""
    import pandas as pd
    import pingouin

    ratings = np.asarray(ratings, float)
    n, k = ratings.shape
    frame = pd.DataFrame({"target": np.repeat(np.arange(n), k), "rater": np.tile(np.arange(k), n),
                          "rating": ratings.ravel()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = pingouin.intraclass_corr(frame, targets="target", raters="rater", ratings="rating")
    rows = dict(zip(table["Type"], zip(table["ICC"], table["CI95"])))
    out: dict[str, Any] = {}
    for name, kind in (("icc_1_1", "ICC(1,1)"), ("icc_2_1", "ICC(A,1)"), ("icc_3_1", "ICC(C,1)")):
        value, ci = rows[kind]
        out[name] = _clean(value)
        out[f"{name}_ci95_f"] = [_clean(c) for c in ci]
    return out


def kappas(reference_groups: np.ndarray, test_groups: np.ndarray, levels: int) -> dict[str, Any]:
    """Cohen's kappa unweighted, linear and quadratic over ordered groups, the confusion matrix
    (rows reference, columns test) and the fraction of subjects in the same group."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    labels = list(range(levels))
    matrix = confusion_matrix(reference_groups, test_groups, labels=labels)
    out: dict[str, Any] = {"confusion_matrix": matrix.tolist(),
                           "group_agreement": _clean(np.mean(reference_groups == test_groups))}
    for key, weights in (("kappa", None), ("kappa_linear", "linear"), ("kappa_quadratic", "quadratic")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = cohen_kappa_score(reference_groups, test_groups, labels=labels, weights=weights)
        out[key] = _clean(value)
    return out


def bland_altman(reference: np.ndarray, test: np.ndarray) -> dict[str, float | None]:
    """Mean difference (test - reference) and its 95 % limits of agreement (± 1.96 SD)."""
    difference = np.asarray(test, float) - np.asarray(reference, float)
    mean = float(difference.mean())
    sd = float(difference.std(ddof=1)) if len(difference) > 1 else float("nan")
    return {"mean_difference": _clean(mean), "sd_difference": _clean(sd),
            "limits_of_agreement": [_clean(mean - 1.96 * sd), _clean(mean + 1.96 * sd)]}


def agreement(reference: Sequence[float] | np.ndarray, test: Sequence[float] | np.ndarray,
              cuts: Sequence[float] = DEFAULT_CUTS) -> dict[str, Any]:
    """Every statistic of one pair of score arrays, keyed as in ``agreement.json``."""
    reference, test = np.asarray(reference, float), np.asarray(test, float)
    if reference.shape != test.shape or reference.ndim != 1:
        raise ValueError("reference and test must be 1-D arrays of the same length")
    if not (np.isfinite(reference).all() and np.isfinite(test).all()):
        raise ValueError("scores must be finite numbers")
    levels = len(cuts) + 1
    reference_groups, test_groups = risk_groups(reference, cuts), risk_groups(test, cuts)
    raw = bland_altman(reference, test)
    logs = bland_altman(np.log1p(reference), np.log1p(test))
    out: dict[str, Any] = {
        "n": int(len(reference)),
        "spearman": spearman(reference, test) if len(reference) > 2 else None,
        "pearson_log": pearson_log(reference, test) if len(reference) > 2 else None,
        **icc(reference, test),
        **kappas(reference_groups, test_groups, levels),
        "groups": group_names(cuts),
        "reference_group_counts": np.bincount(reference_groups, minlength=levels).tolist(),
        "test_group_counts": np.bincount(test_groups, minlength=levels).tolist(),
        **raw,
        **{f"{key}_log": value for key, value in logs.items()},
        "reference_median": _clean(np.median(reference)) if len(reference) else None,
        "test_median": _clean(np.median(test)) if len(test) else None,
    }
    return out


def bootstrap(reference: Sequence[float] | np.ndarray, test: Sequence[float] | np.ndarray,
              cuts: Sequence[float] = DEFAULT_CUTS, resamples: int = 1000, seed: int = 0,
              statistic: Callable[..., dict[str, Any]] = agreement) -> dict[str, list[float | None]]:
    """Percentile bootstrap 95 % intervals (subjects resampled with replacement, fixed seed so
    that a rerun gives the same numbers) of the statistics in :data:`BOOTSTRAPPED`."""
    reference, test = np.asarray(reference, float), np.asarray(test, float)
    n = len(reference)
    if resamples <= 0 or n < 3:
        return {}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {key: [] for key in BOOTSTRAPPED}
    for _ in range(resamples):
        pick = rng.integers(0, n, n)
        values = statistic(reference[pick], test[pick], cuts)
        for key in BOOTSTRAPPED:
            if values.get(key) is not None:
                samples[key].append(values[key])
    out: dict[str, list[float | None]] = {}
    for key, values in samples.items():
        # an interval from fewer than half the resamples (a statistic mostly undefined) says nothing
        if len(values) >= resamples / 2:
            low, high = np.percentile(values, [2.5, 97.5])
            out[key] = [_clean(low), _clean(high)]
        else:
            out[key] = [None, None]
    return out
