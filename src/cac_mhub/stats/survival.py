"""Outcome analysis of CAC groups: join a cohort table with follow-up, then Kaplan-Meier, log-rank, Cox, Harrell's C.

Pure: rows (dicts from CSV files) in, a JSON-able result out. The statistics come from libraries,
none is written by hand: Kaplan-Meier curves with log-log 95 % intervals, the log-rank test and
Harrell's C from scikit-survival; Cox proportional-hazards models (Breslow ties, Wald 95 %
intervals) from statsmodels' PHReg (scikit-survival's Cox model gives no standard errors; lifelines
needs pandas < 3). Numbers at risk are counts.

Nothing is dropped in silence: every row that cannot be analysed is counted under its reason
(no follow-up row, no cohort row, duplicate id, not scored, missing or negative time, an event
that is not 0 or 1, a missing covariate for the adjusted model) and its id listed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..formatting import number

#: --group value that makes groups from a score column and cut points (DeepCAC2's CAC groups).
AGATSTON_GROUPS = "agatston_groups"
DEFAULT_CUTS = (0.0, 100.0, 300.0)
#: Reasons a row is left out, in report order.
REASONS = ("no_followup_row", "no_cohort_row", "cohort_duplicate_id", "followup_duplicate_id", "cohort_not_scored",
           "no_group", "missing_time", "negative_time", "bad_event")
REASON_TEXT = {
    "no_followup_row": "cohort id without a follow-up row",
    "no_cohort_row": "follow-up id without a cohort row",
    "cohort_duplicate_id": "id on more than one usable cohort row (all of them left out)",
    "followup_duplicate_id": "id on more than one follow-up row (all of them left out)",
    "cohort_not_scored": "cohort row not scored (status is not 'scored')",
    "no_group": "no group: the group or score cell is empty or not a number",
    "missing_time": "follow-up time empty or not a number",
    "negative_time": "follow-up time negative",
    "bad_event": "event is not 0 or 1",
}
#: Ids listed per reason in the result (all are counted).
LISTED_IDS = 50
#: Points kept per Kaplan-Meier curve in the result (the plot's resolution).
CURVE_POINTS = 400


class OutcomeError(ValueError):
    """Input that cannot be analysed at all (a column missing, nothing left): exit code 2."""


@dataclass
class Spec:
    """What to join and analyse (the command's options)."""

    id: str
    time: str
    event: str
    followup_id: str | None = None
    """Id column of the follow-up table (default: ``id``)."""
    group: str = AGATSTON_GROUPS
    score: str = "agatston"
    cuts: Sequence[float] = DEFAULT_CUTS
    adjust: Sequence[str] = ()
    reference_group: str | None = None
    horizons: Sequence[float] | None = None


@dataclass
class Joined:
    """The analysable rows, and every left-out id with its reason."""

    ids: list[str]
    time: np.ndarray
    event: np.ndarray
    group: list[str]
    groups: list[str]
    """Group labels, the reference first."""
    covariates: dict[str, list[Any]] = field(default_factory=dict)
    excluded: dict[str, list[str]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


def group_label(score: float, cuts: Sequence[float]) -> str:
    """``0`` for a score at or below the first cut, then ``>a-b`` intervals, then ``>last``."""
    if score <= cuts[0]:
        return f"{cuts[0]:g}" if cuts[0] == 0 else f"<={cuts[0]:g}"
    for a, b in zip(cuts, cuts[1:]):
        if score <= b:
            return f">{a:g}-{b:g}"
    return f">{cuts[-1]:g}"


def group_labels(cuts: Sequence[float]) -> list[str]:
    """All labels of :func:`group_label`, lowest first."""
    first = f"{cuts[0]:g}" if cuts[0] == 0 else f"<={cuts[0]:g}"
    return [first] + [f">{a:g}-{b:g}" for a, b in zip(cuts, cuts[1:])] + [f">{cuts[-1]:g}"]


def join(cohort: list[dict[str, str]], followup: list[dict[str, str]], spec: Spec) -> Joined:
    """Pair cohort and follow-up rows by id; sort every row that cannot be used under its reason."""
    followup_id = spec.followup_id or spec.id
    _need(cohort, [spec.id] + ([spec.score] if spec.group == AGATSTON_GROUPS else [spec.group]), "cohort table")
    _need(followup, [followup_id], "follow-up table")
    have = set(cohort[0] if cohort else ()) | set(followup[0] if followup else ())
    missing = [c for c in (spec.time, spec.event, *spec.adjust) if c not in have]
    if missing:
        raise OutcomeError(f"column(s) {', '.join(missing)} in neither table")
    excluded: dict[str, list[str]] = {reason: [] for reason in REASONS}
    usable: dict[str, dict[str, str]] = {}
    seen_twice: set[str] = set()
    for row in cohort:
        key = str(row.get(spec.id) or "").strip()
        if not key:
            continue
        if row.get("status", "scored") not in ("scored", "", None):
            excluded["cohort_not_scored"].append(key)
            continue
        if key in usable or key in seen_twice:
            seen_twice.add(key)
            usable.pop(key, None)
            continue
        usable[key] = row
    excluded["cohort_duplicate_id"] = sorted(seen_twice)
    follow: dict[str, dict[str, str]] = {}
    twice: set[str] = set()
    for row in followup:
        key = str(row.get(followup_id) or "").strip()
        if not key:
            continue
        if key in follow or key in twice:
            twice.add(key)
            follow.pop(key, None)
            continue
        follow[key] = row
    excluded["followup_duplicate_id"] = sorted(twice)
    not_scored = set(excluded["cohort_not_scored"])
    excluded["no_followup_row"] = [k for k in usable if k not in follow and k not in twice]
    excluded["no_cohort_row"] = [k for k in follow if k not in usable and k not in seen_twice and k not in not_scored]
    ids, times, events, groups = [], [], [], []
    covariates: dict[str, list[Any]] = {name: [] for name in spec.adjust}
    for key, row in usable.items():
        if key not in follow:
            continue
        both = {**row, **{k: v for k, v in follow[key].items() if v not in (None, "")}}
        if spec.group == AGATSTON_GROUPS:
            score = number(both.get(spec.score))
            label = None if score is None else group_label(score, spec.cuts)
        else:
            label = str(both.get(spec.group) or "").strip() or None
        time, event = number(both.get(spec.time)), number(both.get(spec.event))
        if label is None:
            excluded["no_group"].append(key)
        elif time is None:
            excluded["missing_time"].append(key)
        elif time < 0:
            excluded["negative_time"].append(key)
        elif event not in (0.0, 1.0):
            excluded["bad_event"].append(key)
        else:
            ids.append(key)
            times.append(time)
            events.append(bool(event))
            groups.append(label)
            for name in spec.adjust:
                covariates[name].append(both.get(name))
    order = group_order(groups, spec)
    return Joined(ids, np.asarray(times, float), np.asarray(events, bool), groups, order, covariates,
                  {k: v for k, v in excluded.items() if v}, {"cohort": len(cohort), "followup": len(followup)})


def group_order(groups: list[str], spec: Spec) -> list[str]:
    """Groups present, the reference first: score groups low to high, else numbers by value, text alphabetically."""
    present = set(groups)
    if spec.group == AGATSTON_GROUPS:
        order = [g for g in group_labels(spec.cuts) if g in present]
    else:
        order = sorted(present, key=lambda g: (number(g) is None, number(g) or 0.0, g))
    if spec.reference_group is not None:
        if spec.reference_group not in present:
            raise OutcomeError(f"reference group {spec.reference_group!r} not among the groups {order}")
        order = [spec.reference_group] + [g for g in order if g != spec.reference_group]
    return order


def analyse(joined: Joined, spec: Spec) -> dict[str, Any]:
    """Counts, Kaplan-Meier at the horizons, log-rank, Cox (unadjusted and adjusted), Harrell's C."""
    if not joined.ids:
        raise OutcomeError("no row left to analyse: " + excluded_text(joined.excluded))
    time, event, group = joined.time, joined.event, np.asarray(joined.group, dtype=object)
    horizons = list(spec.horizons) if spec.horizons else default_horizons(time)
    result: dict[str, Any] = {
        "n": len(joined.ids), "events": int(event.sum()), "rows": joined.rows,
        "excluded": {reason: len(ids) for reason, ids in joined.excluded.items()},
        "excluded_meaning": {reason: REASON_TEXT[reason] for reason in joined.excluded},
        "excluded_ids": {reason: ids[:LISTED_IDS] for reason, ids in joined.excluded.items()},
        "reference_group": joined.groups[0],
        "groups": [{"group": g, "n": int((group == g).sum()), "events": int(event[group == g].sum()),
                    "median_time": float(np.median(time[group == g]))} for g in joined.groups],
        "horizons": horizons,
    }
    result["kaplan_meier"] = {g: kaplan_meier(time[group == g], event[group == g], horizons) for g in joined.groups}
    result["at_risk"] = at_risk_table(time, group, joined.groups)
    result["log_rank"] = log_rank(time, event, group) if len(joined.groups) > 1 else None
    design, names = group_design(joined.group, joined.groups)
    result["cox_unadjusted"] = cox(time, event, design, names)
    if spec.adjust:
        extra, extra_names, complete, notes = covariate_design(joined.covariates)
        adjusted = cox(time[complete], event[complete], np.hstack([design[complete], extra[complete]]),
                       names + extra_names)
        adjusted["covariates"] = list(spec.adjust)
        adjusted["left_out_missing_covariate"] = int((~complete).sum())
        adjusted["left_out_ids"] = [i for i, ok in zip(joined.ids, complete) if not ok][:LISTED_IDS]
        adjusted["notes"] = notes + adjusted.get("notes", [])
        result["cox_adjusted"] = adjusted
    return result


def excluded_text(excluded: dict[str, list[str]]) -> str:
    return "; ".join(f"{len(ids)} {REASON_TEXT[reason]}" for reason, ids in excluded.items()) or "no rows"


def default_horizons(time: np.ndarray) -> list[float]:
    """A quarter, half and three quarters of the longest follow-up, to two significant digits."""
    top = float(time.max()) if len(time) else 0.0
    if top <= 0:
        return [0.0]
    return sorted({float(f"{top * f:.2g}") for f in (0.25, 0.5, 0.75)})


def kaplan_meier(time: np.ndarray, event: np.ndarray, horizons: Sequence[float]) -> dict[str, Any]:
    """Survival with log-log 95 % intervals at each horizon (None beyond the group's follow-up), and the curve."""
    from sksurv.nonparametric import kaplan_meier_estimator

    if not len(time):
        return {"survival": [None] * len(horizons), "lower": [None] * len(horizons), "upper": [None] * len(horizons),
                "curve": {"time": [], "survival": [], "lower": [], "upper": []}}
    steps, survival, interval = kaplan_meier_estimator(event, time, conf_type="log-log")
    last = float(time.max())

    def at(t: float) -> tuple[float | None, float | None, float | None]:
        if t > last:
            return None, None, None
        index = int(np.searchsorted(steps, t, side="right")) - 1
        if index < 0:
            return 1.0, 1.0, 1.0
        return float(survival[index]), _finite(interval[0][index]), _finite(interval[1][index])

    values = [at(float(t)) for t in horizons]
    grid = np.unique(np.concatenate([[0.0], np.linspace(0.0, last, CURVE_POINTS)])) if len(steps) > CURVE_POINTS \
        else np.concatenate([[0.0], steps])
    curve = [at(float(t)) for t in grid]
    return {
        "survival": [v[0] for v in values], "lower": [v[1] for v in values], "upper": [v[2] for v in values],
        "curve": {"time": [float(t) for t in grid], "survival": [c[0] for c in curve],
                  "lower": [c[1] for c in curve], "upper": [c[2] for c in curve]},
    }


def at_risk_table(time: np.ndarray, group: np.ndarray, groups: list[str], ticks: int = 6) -> dict[str, Any]:
    """Numbers at risk (follow-up time >= t) per group at evenly spaced times from 0 to the longest follow-up."""
    top = float(time.max()) if len(time) else 0.0
    times = [float(f"{t:.3g}") for t in np.linspace(0.0, top, ticks)]
    return {"times": times, "groups": {g: [int(((group == g) & (time >= t)).sum()) for t in times] for g in groups}}


def log_rank(time: np.ndarray, event: np.ndarray, group: np.ndarray) -> dict[str, Any]:
    """Log-rank test of equal survival across the groups (chi-squared, K - 1 degrees of freedom)."""
    from sksurv.compare import compare_survival

    y = _structured(time, event)
    chi2, p = compare_survival(y, group.astype(str))
    return {"chi2": float(chi2), "df": int(len(set(group)) - 1), "p": float(p)}


def group_design(group: Sequence[str], groups: list[str]) -> tuple[np.ndarray, list[str]]:
    """0/1 columns for every group but the reference (the first)."""
    values = np.asarray(group, dtype=object)
    names = [f"group {g} vs {groups[0]}" for g in groups[1:]]
    return np.stack([(values == g).astype(float) for g in groups[1:]], axis=1) if names else \
        np.zeros((len(values), 0)), names


def covariate_design(covariates: dict[str, list[Any]]) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """Numeric covariates as they are; text ones (sex) as 0/1 columns against their first value; rows complete."""
    columns, names, notes = [], [], []
    n = len(next(iter(covariates.values()))) if covariates else 0
    complete = np.ones(n, bool)
    for name, values in covariates.items():
        text = [str(v).strip().lstrip("'") if v is not None else "" for v in values]
        numbers = [number(t) for t in text]
        filled = [t for t in text if t]
        if filled and all(number(t) is not None for t in filled):
            column = np.array([np.nan if v is None else v for v in numbers], float)
            complete &= np.isfinite(column)
            columns.append(column)
            names.append(name)
            continue
        levels = sorted(set(filled))
        complete &= np.array([bool(t) for t in text])
        if len(levels) < 2:
            notes.append(f"covariate {name!r} has fewer than two values: left out of the model")
            continue
        for level in levels[1:]:
            columns.append(np.array([1.0 if t == level else 0.0 for t in text]))
            names.append(f"{name}={level} vs {levels[0]}")
    design = np.stack(columns, axis=1) if columns else np.zeros((n, 0))
    return design, names, complete, notes


def cox(time: np.ndarray, event: np.ndarray, design: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Cox model (Breslow ties): hazard ratio, Wald 95 % interval and p per term; Harrell's C of its risk score."""
    from statsmodels.duration.hazard_regression import PHReg
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    out: dict[str, Any] = {"n": int(len(time)), "events": int(event.sum()), "terms": [], "notes": []}
    if design.shape[1] == 0:
        out["notes"].append("one group only: no hazard ratio")
        return out
    if not event.any():
        out["notes"].append("no events: no hazard ratio")
        return out
    constant = [i for i in range(design.shape[1]) if np.ptp(design[:, i]) == 0]
    if constant:
        out["notes"].append("left out (no variation): " + ", ".join(names[i] for i in constant))
        keep = [i for i in range(design.shape[1]) if i not in constant]
        design, names = design[:, keep], [names[i] for i in keep]
        if not names:
            return out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = PHReg(time, design, status=event.astype(float), ties="breslow").fit()
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        out["notes"].append("the fit did not converge (a term without events?): treat the estimates with care")
    params, errors = np.asarray(fit.params), np.asarray(fit.bse)
    interval, pvalues = np.asarray(fit.conf_int()), np.asarray(fit.pvalues)
    for i, name in enumerate(names):
        out["terms"].append({
            "term": name, "coef": float(params[i]), "se": _finite(errors[i]), "hr": _exp(params[i]),
            "ci_lower": _exp(interval[i, 0]), "ci_upper": _exp(interval[i, 1]), "p": _finite(pvalues[i]),
        })
    out["concordance"] = concordance(time, event, design @ params)
    return out


def concordance(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float | None:
    """Harrell's C of a risk score (higher = earlier event); None when no pair is comparable."""
    from sksurv.metrics import concordance_index_censored

    try:
        return float(concordance_index_censored(event.astype(bool), time.astype(float), risk.astype(float))[0])
    except ValueError:  # no comparable pairs (e.g. no events)
        return None


def _structured(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    y = np.empty(len(time), dtype=[("event", bool), ("time", float)])
    y["event"], y["time"] = event, time
    return y


def _need(rows: list[dict[str, str]], columns: list[str], name: str) -> None:
    if not rows:
        raise OutcomeError(f"{name} has no rows")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise OutcomeError(f"{name}: no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(rows[0])})")


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _exp(value: Any) -> float | None:
    value = float(value)
    return math.exp(value) if math.isfinite(value) and value < 700 else None
