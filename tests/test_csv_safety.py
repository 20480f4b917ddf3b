"""cohort.csv is opened in spreadsheets: DICOM text must not become a formula or break a line."""

from __future__ import annotations

import csv

import pytest

from cac_mhub.cli import main
from cac_mhub.formatting import csv_cell


@pytest.mark.parametrize("value, expected", [
    ("=1+1", "'=1+1"),
    ('=HYPERLINK("http://example.org","x")', '\'=HYPERLINK("http://example.org","x")'),
    ("+41 79 123", "'+41 79 123"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("  =1", "'  =1"),
    ("-1.5", "-1.5"),
    ("+3", "+3"),
    ("-2e-3", "-2e-3"),
    ("-.5", "-.5"),
    ("B30f", "B30f"),
    ("a\x00b\x1b[31mc\x7f\x85", "ab[31mc"),
    ("line1\nline2\r\tend", "line1 line2  end"),
    ("=\x00cmd", "'=cmd"),
    ("", ""),
    (-1.5, -1.5),
    (None, None),
    (True, True),
])
def test_csv_cell(value, expected):
    assert csv_cell(value) == expected


def test_dicom_text_in_the_cohort_csv_is_neutralised(tmp_path, make_ct):
    make_ct(tmp_path / "in" / "s", series_description="=cmd|' /C calc'!A0\x00\x1b[2J", manufacturer="@SUM(1+1)",
            kernel="-2+3", patient_id="+PID\nsecond line")
    out = tmp_path / "out"
    assert main(["run", "--input", str(tmp_path / "in"), "--output", str(out), "--workflow", "import", "--quiet"]) == 0
    raw = (out / "cohort.csv").read_text(encoding="utf-8")
    assert not any(ch in raw for ch in "\x00\x1b\r") and len(raw.splitlines()) == 2
    with open(out / "cohort.csv", newline="", encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    assert row["series_description"] == "'=cmd|' /C calc'!A0[2J"
    assert row["manufacturer"] == "'@SUM(1+1)" and row["kernel"] == "'-2+3"
    assert row["patient_id"] == "'+PID second line"
    assert row["kvp"] == "120.0" and row["increment_mm"] == "2.5"
    assert not any(value.startswith(("=", "+", "-", "@")) for value in row.values() if value)
