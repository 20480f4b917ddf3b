"""``dashboard.html``: a cohort at a glance, one self-contained page at the top of the output.

Counts by status, a score histogram (log scale), risk groups and the share of each artery are
drawn here as inline SVG; the table (sortable, filterable, one row per series, each opening its
``qc.png`` and report) is rendered by the page's own script with virtual scrolling, so that
130,000 series stay usable. Rows are embedded compactly: a JSON array of arrays, repeated text
(status, kernel, reason, warnings ...) as indexes into one string table. No network, no CDN: the
page opens from disk; links to ``<key>/qc.png`` and ``<key>/report.json`` are relative.

The page shows what ``cohort.csv`` holds and nothing more: the patient column is the cohort's
``patient_id``, which is pseudonymised or empty when ``ReportExporter.patient_id`` says so.

:func:`build_dashboard` is pure (rows in, HTML out); :func:`write_dashboard` reads the cohort
CSV of an output folder and writes the page atomically.
"""

from __future__ import annotations

import csv
import json
import time
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..io import atomic_write_text
from ..formatting import number as _number

DASHBOARD_NAME = "dashboard.html"

#: Table columns: (key, label, type, width px, cohort column); type n = number, s = text (interned), t = text.
COLUMNS: tuple[tuple[str, str, str, int, str], ...] = (
    ("key", "series", "t", 170, "key"),
    ("patient", "patient", "t", 130, "patient_id"),
    ("date", "study date", "t", 80, "study_date"),
    ("description", "description", "s", 150, "series_description"),
    ("kvp", "kVp", "n", 45, "kvp"),
    ("thickness", "thickness mm", "n", 85, "slice_thickness_mm"),
    ("kernel", "kernel", "s", 80, "kernel"),
    ("score", "Agatston", "n", 75, "agatston"),
    ("group", "risk group", "s", 80, "risk_category"),
    ("confidence", "confidence", "s", 75, "confidence"),
    ("percentile", "MESA percentile", "s", 70, "cac_percentile"),
    ("avc", "AVC", "n", 60, "avc_agatston"),
    ("mac", "MAC", "n", 60, "mac_agatston"),
    ("tac", "TAC", "n", 60, "tac_agatston"),
    ("status", "status", "s", 65, "status"),
    ("reason", "reason", "s", 220, "reason"),
    ("warnings", "warnings", "s", 200, "warnings"),
    ("excluded", "excluded candidates", "n", 70, "excluded_candidates"),
    ("excluded_agatston", "excluded Agatston", "n", 75, "excluded_agatston"),
    ("unlabelled", "not counted Agatston", "n", 75, "unlabelled_agatston"),
    ("confidence_reasons", "confidence reasons", "s", 260, "confidence_reasons"),
)
DIGITS = {"score": 1, "excluded_agatston": 1, "avc": 1, "mac": 1, "tac": 1, "unlabelled": 1}
CONFIDENCE_ORDER = ("high", "medium", "low")
CONFIDENCE_COLOURS = {"high": "#34c759", "medium": "#ff9500", "low": "#ff3b30"}
#: Pages that may sit beside dashboard.html (written by other commands), linked when present.
BESIDE = (("outcomes.html", "outcome analysis (Kaplan-Meier, Cox) of this cohort"),)
STATUS_ORDER = ("scored", "processed", "skipped", "failed", "pending")
GROUP_ORDER = ("very low", "low", "moderate", "high")
ARTERIES = ("LM", "LAD", "LCX", "RCA", "CAC")
#: Histogram bin edges of the Agatston score (log scale); 0 has its own bar.
HISTOGRAM_EDGES = (0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000)
STATUS_COLOURS = {"scored": "#34c759", "processed": "#0a84ff", "skipped": "#ffcc00", "failed": "#ff3b30", "pending": "#aeaeb2"}


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts by status, score histogram, risk groups, confidence and per-artery totals of cohort rows."""
    statuses: dict[str, int] = {}
    groups: dict[str, int] = {}
    histogram = [0] * len(HISTOGRAM_EDGES)  # [0], (0,1], (1,3], ... , > 10000
    arteries = dict.fromkeys(ARTERIES, 0.0)
    confidence: dict[str, int] = {}
    for row in rows:
        status = str(row.get("status") or "unknown")
        statuses[status] = statuses.get(status, 0) + 1
        score = _number(row.get("agatston"))
        if status != "scored" or score is None:
            continue
        group = str(row.get("risk_category") or "")
        if group:
            groups[group] = groups.get(group, 0) + 1
        verdict = str(row.get("confidence") or "")
        if verdict:
            confidence[verdict] = confidence.get(verdict, 0) + 1
        histogram[_bin(score)] += 1
        for artery in ARTERIES:
            arteries[artery] += _number(row.get(f"agatston_{artery}")) or 0.0
    return {"statuses": statuses, "groups": groups, "histogram": histogram, "arteries": arteries,
            "confidence": confidence}


def _bin(score: float) -> int:
    if score <= 0:
        return 0
    for index, edge in enumerate(HISTOGRAM_EDGES[1:], start=1):
        if score <= edge:
            return index
    return len(HISTOGRAM_EDGES) - 1


def histogram_labels() -> list[str]:
    edges = HISTOGRAM_EDGES
    return ["0"] + [f"{a:g}–{b:g}" for a, b in zip(edges[:-2], edges[1:-1])] + [f"> {edges[-2]:g}"]


def svg_bars(title: str, items: Iterable[tuple[str, float, str]], value_format: str = "{:g}",
             width: int = 300) -> str:
    """A small horizontal bar chart as inline SVG: (label, value, colour) per bar."""
    items = list(items)
    top = max((v for _, v, _ in items), default=0) or 1
    bar_h, label_w, height = 16, 80, 18 * max(len(items), 1) + 4
    parts = [f"<div class='card'><h2>{escape(title)}</h2><svg width='{width}' height='{height}' role='img' "
             f"aria-label='{escape(title)}' font-size='11'>"]
    for i, (label, value, colour) in enumerate(items):
        y = 2 + i * 18
        length = (width - label_w - 60) * value / top
        parts.append(f"<text x='{label_w - 4}' y='{y + 12}' text-anchor='end'>{escape(label)}</text>"
                     f"<rect x='{label_w}' y='{y}' width='{length:.1f}' height='{bar_h}' fill='{colour}'/>"
                     f"<text x='{label_w + length + 4:.1f}' y='{y + 12}'>{escape(value_format.format(value))}</text>")
    parts.append("</svg></div>")
    return "".join(parts)


def charts(summary: dict[str, Any]) -> str:
    """The charts: status counts, score histogram, risk groups, confidence, per-artery share."""
    statuses = summary["statuses"]
    order = [s for s in STATUS_ORDER if s in statuses] + sorted(set(statuses) - set(STATUS_ORDER))
    status_bars = [(s, statuses[s], STATUS_COLOURS.get(s, "#8e8e93")) for s in order]
    histogram = [(label, count, "#0a84ff") for label, count in zip(histogram_labels(), summary["histogram"])]
    groups = summary["groups"]
    group_order = [g for g in GROUP_ORDER if g in groups] + sorted(set(groups) - set(GROUP_ORDER))
    group_bars = [(g, groups[g], "#ff9500") for g in group_order]
    total = sum(summary["arteries"].values())
    artery_bars = [(a, 100.0 * v / total if total else 0.0, "#af52de") for a, v in summary["arteries"].items()]
    return "".join([
        svg_bars("series by status", status_bars),
        svg_bars("Agatston score, scored series (log bins)", histogram),
        svg_bars("risk groups, scored series", group_bars),
        svg_bars("confidence, scored series", [(c, summary.get("confidence", {}).get(c, 0), CONFIDENCE_COLOURS[c])
                                                 for c in CONFIDENCE_ORDER]),
        svg_bars("share of the Agatston total per artery", artery_bars, "{:.1f} %"),
    ])


def encode_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rows as a compact table: column specs, one string table and an array of arrays."""
    strings: list[str] = []
    index: dict[str, int] = {}
    columns = [{"key": key, "label": label, "type": kind, "width": width, **({"digits": DIGITS[key]} if key in DIGITS else {})}
               for key, label, kind, width, _ in COLUMNS]
    encoded = []
    for row in rows:
        out: list[Any] = []
        for key, _, kind, _, source in COLUMNS:
            value = row.get(source)
            if kind == "n":
                number = _number(value)
                out.append(None if number is None else (int(number) if number.is_integer() else round(number, 3)))
            elif kind == "s":
                text = "" if value is None else str(value)
                if text not in index:
                    index[text] = len(strings)
                    strings.append(text)
                out.append(index[text])
            else:
                out.append("" if value is None else str(value))
        encoded.append(out)
    return {"columns": columns, "strings": strings, "rows": encoded}


def _template() -> str:
    return resources.files("cac_mhub.report").joinpath("dashboard_template.html").read_text(encoding="utf-8")


def _script_json(value: Any) -> str:
    """JSON safe inside <script>: no '<' (so no '</script>' or '<!--') can end the element."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")


def build_dashboard(rows: Sequence[dict[str, Any]], title: str = "cac-mhub cohort", subtitle: str = "",
                    report_name: str = "report.json", links: Sequence[tuple[str, str]] = ()) -> str:
    """The dashboard page of cohort rows (dicts with cohort.csv's columns); ``links``: (relative href, text)."""
    data = encode_rows(rows) | {"report_name": report_name}
    page = _template()
    anchors = " · ".join(f"<a href='{escape(href)}'>{escape(text)}</a>" for href, text in links)
    for name, value in (("title", escape(title)), ("subtitle", escape(subtitle)), ("links", anchors),
                        ("charts", charts(summarise(rows))), ("data", _script_json(data))):
        page = page.replace("{{" + name + "}}", value)
    return page


def read_cohort_rows(output_dir: Path, cohort_name: str = "cohort") -> list[dict[str, str]]:
    """The rows of an output folder's cohort CSV."""
    with open(Path(output_dir) / f"{cohort_name}.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_dashboard(output_dir: Path, cohort_name: str = "cohort", report_name: str = "report.json") -> Path:
    """Rebuild ``dashboard.html`` of an output folder from its cohort CSV (atomic write)."""
    output_dir = Path(output_dir)
    rows = read_cohort_rows(output_dir, cohort_name)
    runs = sorted({row.get("run_id") or "" for row in rows} - {""})
    subtitle = (f"{len(rows)} series · run {', '.join(runs[:3])}{' …' if len(runs) > 3 else ''} · "
                f"built {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} from {cohort_name}.csv")
    target = output_dir / DASHBOARD_NAME
    links = [(name, text) for name, text in BESIDE if (output_dir / name).is_file()]
    atomic_write_text(target, build_dashboard(rows, subtitle=subtitle, report_name=report_name, links=links))
    return target
