"""``agreement.html``: the statistics of ``cac-mhub compare`` as a page a reader can check at a glance.

Pure: the result dict (as in ``agreement.json``) and the plot file names in, HTML text out.
The plots are separate PNG files beside the page, linked by relative name.
"""

from __future__ import annotations

from html import escape
from typing import Any

#: (key, label) of the table's rows, in order.
ROWS = (
    ("n", "matched ids (n)"),
    ("spearman", "Spearman ρ"),
    ("pearson_log", "Pearson r of log(1 + score)"),
    ("icc_1_1", "ICC(1,1) one-way"),
    ("icc_2_1", "ICC(2,1) absolute agreement"),
    ("icc_3_1", "ICC(3,1) consistency"),
    ("kappa", "Cohen's κ (risk groups)"),
    ("kappa_linear", "κ linear weights"),
    ("kappa_quadratic", "κ quadratic weights"),
    ("group_agreement", "same risk group (fraction)"),
    ("mean_difference", "mean difference, test − reference"),
    ("mean_difference_log", "mean difference of log(1 + score)"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    return escape(str(value))


def _interval(values: Any) -> str:
    if not values or values[0] is None:
        return ""
    return f"{_fmt(values[0])} – {_fmt(values[1])}"


def agreement_html(result: dict[str, Any], plots: dict[str, str]) -> str:
    """The page: sources, the statistics with their intervals, unmatched ids, per artery, plots."""
    ci = result.get("ci95", {})
    unmatched = result.get("unmatched", {})
    lines = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>cac-mhub compare</title>",
        "<style>body{font:14px system-ui,sans-serif;margin:24px;max-width:1100px}table{border-collapse:collapse;"
        "margin:8px 0 20px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f2f2f2}"
        "td:first-child,th:first-child{text-align:left}img{max-width:48%;margin:4px;border:1px solid #ddd}"
        ".muted{color:#666}</style></head><body>",
        "<h1>Agreement of two score tables</h1>",
        f"<p>reference: <b>{escape(result['reference']['column'])}</b> in {escape(result['reference']['table'])}<br>"
        f"test: <b>{escape(result['test']['column'])}</b> in {escape(result['test']['table'])}<br>"
        f"paired by <b>{escape(result['id'])}</b>; risk-group cut points {escape(str(result['cuts']))}</p>",
        f"<p>{unmatched.get('n', result.get('n', 0))} ids matched; {unmatched.get('only_reference', 0)} only in the "
        f"reference, {unmatched.get('only_test', 0)} only in the test table, {unmatched.get('missing_score', 0)} "
        "without a score on one side (not scored, empty or not a number). The lists are in agreement.json.</p>",
        "<table><tr><th>statistic</th><th>value</th><th>bootstrap 95 % CI</th></tr>",
    ]
    for key, label in ROWS:
        lines.append(f"<tr><td>{label}</td><td>{_fmt(result.get(key))}</td><td>{_interval(ci.get(key))}</td></tr>")
    limits, limits_log = result.get("limits_of_agreement"), result.get("limits_of_agreement_log")
    lines.append(f"<tr><td>95 % limits of agreement</td><td>{_interval(limits)}</td><td></td></tr>")
    lines.append(f"<tr><td>95 % limits, log(1 + score)</td><td>{_interval(limits_log)}</td><td></td></tr>")
    lines.append("</table>")
    bootstrap = result.get("bootstrap", {})
    lines.append(f"<p class='muted'>Intervals: {bootstrap.get('resamples', 0)} bootstrap resamples (seed "
                 f"{bootstrap.get('seed', 0)}, {escape(str(bootstrap.get('method', '')))}). ICC from pingouin, κ from "
                 "scikit-learn, ρ and r from SciPy.</p>")
    if result.get("confusion_matrix"):
        groups = result.get("groups", [])
        lines.append("<h2>Risk groups (rows reference, columns test)</h2><table><tr><th></th>"
                     + "".join(f"<th>{escape(g)}</th>" for g in groups) + "</tr>")
        for name, row in zip(groups, result["confusion_matrix"]):
            lines.append(f"<tr><th>{escape(name)}</th>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
        lines.append("</table>")
    if result.get("per_artery"):
        arteries = result["per_artery"]
        lines.append("<h2>Per artery</h2><table><tr><th>statistic</th>"
                     + "".join(f"<th>{escape(a)}</th>" for a in arteries) + "</tr>")
        for key, label in ROWS:
            lines.append(f"<tr><td>{label}</td>" + "".join(f"<td>{_fmt(s.get(key))}</td>" for s in arteries.values())
                         + "</tr>")
        lines.append("</table>")
    if plots:
        lines.append("<h2>Plots</h2>")
        lines += [f"<img src='{escape(name)}' alt='{escape(title)}'>" for title, name in plots.items()]
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"
