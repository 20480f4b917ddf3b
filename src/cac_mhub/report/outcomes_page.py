"""``outcomes.html``: the outcome analysis of ``cac-mhub outcomes`` as one page a reader can check.

Pure: the result dict (as in ``outcomes.json``) and the plot's file name in, HTML text out.
"""

from __future__ import annotations

from html import escape
from typing import Any

STYLE = ("body{font:14px system-ui,sans-serif;margin:24px;max-width:1100px}table{border-collapse:collapse;"
         "margin:8px 0 20px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f2f2f2}"
         "td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}.muted{color:#666}")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return escape(str(value))


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cox(block: dict[str, Any] | None, title: str) -> str:
    if not block:
        return ""
    rows = [[escape(t["term"]), _fmt(t["hr"], 2), f"{_fmt(t['ci_lower'], 2)} – {_fmt(t['ci_upper'], 2)}", _fmt(t["p"])]
            for t in block["terms"]]
    extra = ""
    if block.get("covariates"):
        extra = (f"<p class='muted'>adjusted for {escape(', '.join(block['covariates']))}; "
                 f"{block.get('left_out_missing_covariate', 0)} row(s) without a covariate left out of this model</p>")
    notes = "".join(f"<p class='muted'>{escape(n)}</p>" for n in block.get("notes", []))
    return (f"<h2>{escape(title)}</h2><p>n {block['n']}, events {block['events']}, Harrell's C "
            f"{_fmt(block.get('concordance'))}</p>" + _table(["term", "hazard ratio", "95 % CI", "p"], rows) + extra + notes)


def outcomes_html(result: dict[str, Any], plot: str) -> str:
    """The page: inputs, what was left out and why, groups, Kaplan-Meier, log-rank, Cox models."""
    inputs = result["inputs"]
    left_out = [[escape(result["excluded_meaning"][k]), str(v)] for k, v in result["excluded"].items()]
    groups = [[escape(g["group"]), str(g["n"]), str(g["events"]), _fmt(g["median_time"], 2)] for g in result["groups"]]
    horizons = result["horizons"]
    km_rows = []
    for g in result["groups"]:
        km = result["kaplan_meier"][g["group"]]
        km_rows.append([escape(g["group"])] + [
            f"{_fmt(s)} ({_fmt(lo)} – {_fmt(hi)})" if s is not None else "beyond follow-up"
            for s, lo, hi in zip(km["survival"], km["lower"], km["upper"])])
    risk = result["at_risk"]
    risk_rows = [[escape(g)] + [str(v) for v in risk["groups"][g]] for g in risk["groups"]]
    log_rank = result.get("log_rank")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>cac-mhub outcomes</title>",
        f"<style>{STYLE}</style></head><body><h1>Outcomes by CAC group</h1>",
        f"<p>cohort: {escape(inputs['cohort'])}<br>follow-up: {escape(inputs['followup'])}<br>joined on "
        f"<b>{escape(inputs['id'])}</b>; time <b>{escape(inputs['time'])}</b>, event <b>{escape(inputs['event'])}</b>; "
        f"groups: <b>{escape(inputs['group_description'])}</b> (reference {escape(result['reference_group'])})</p>",
        f"<p>{result['rows']['cohort']} cohort rows, {result['rows']['followup']} follow-up rows; "
        f"<b>{result['n']}</b> analysed, <b>{result['events']}</b> events.</p>",
        "<h2>Rows left out</h2>" + (_table(["reason", "rows"], left_out) + "<p class='muted'>The ids are listed in "
                                    "outcomes.json.</p>" if left_out else "<p>none</p>"),
        "<h2>Groups</h2>" + _table(["group", "n", "events", "median time"], groups),
        f"<h2>Kaplan-Meier</h2><img src='{escape(plot)}' alt='Kaplan-Meier curves by CAC group with numbers at risk'>",
        "<h3>Survival at the horizons (95 % CI, log-log)</h3>" + _table(["group"] + [f"{h:g}" for h in horizons], km_rows),
        "<h3>Numbers at risk</h3>" + _table(["group"] + [f"{t:g}" for t in risk["times"]], risk_rows),
    ]
    if log_rank:
        parts.append(f"<h2>Log-rank test</h2><p>χ² {_fmt(log_rank['chi2'], 2)}, {log_rank['df']} degrees of freedom, "
                     f"p {_fmt(log_rank['p'])}</p>")
    parts.append(_cox(result.get("cox_unadjusted"), "Cox model, unadjusted"))
    parts.append(_cox(result.get("cox_adjusted"), "Cox model, adjusted"))
    parts.append(f"<p class='muted'>{escape(result.get('method', ''))}</p></body></html>")
    return "\n".join(parts)
