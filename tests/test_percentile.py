"""MESA age/sex percentiles (McClelland et al., Circulation 2006) and the header's age and sex."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from cac_mhub.chain import Context, Instance
from cac_mhub.dicom.demographics import demographics
from cac_mhub.scoring.percentile import MESA_TABLE, band_of, percentile, thresholds
from cac_mhub.types import Series
from tests.test_heart_guard_chain import module


@pytest.mark.parametrize("race, sex, age, printed", [
    # the Agatston score at the 25th, 50th, 75th, 90th percentile, as printed for each band
    ("white", "M", 50, (0, 0, 22, 110)),
    ("white", "M", 60, (0, 28, 155, 452)),
    ("white", "M", 70, (21, 145, 540, 1345)),
    ("white", "M", 80, (103, 385, 1200, 2933)),
    ("white", "F", 50, (0, 0, 0, 8)),
    ("white", "F", 60, (0, 0, 16, 102)),
    ("white", "F", 70, (0, 13, 119, 391)),
    ("white", "F", 80, (20, 106, 370, 921)),
    ("black", "M", 80, (23, 141, 516, 1281)),
    ("black", "F", 60, (0, 0, 5, 74)),
    ("hispanic", "M", 70, (1, 56, 247, 666)),
    ("hispanic", "F", 80, (0, 45, 205, 557)),
    ("chinese", "M", 50, (0, 0, 14, 89)),
    ("chinese", "F", 70, (0, 5, 70, 246)),
])
def test_thresholds_are_the_printed_values(race: str, sex: str, age: float, printed: tuple) -> None:
    assert thresholds(race, sex, age) == printed


def test_table_is_complete_and_rises_with_percentile_and_age() -> None:
    for race, by_sex in MESA_TABLE.items():
        for sex, bands in by_sex.items():
            assert len(bands) == 4, (race, sex)
            for cuts in bands:
                assert list(cuts) == sorted(cuts), (race, sex, cuts)
            for column in range(4):
                assert [b[column] for b in bands] == sorted(b[column] for b in bands), (race, sex, column)
            assert by_sex["M"][3][3] > by_sex["F"][3][3]  # men above women at the oldest 90th percentile


@pytest.mark.parametrize("age, band", [(45, 0), (54.99, 0), (55, 1), (64.5, 1), (65, 2), (74.9, 2), (75, 3), (84.99, 3)])
def test_age_bands_are_the_tables(age: float, band: int) -> None:
    assert thresholds("white", "M", age) == MESA_TABLE["white"]["M"][band]


@pytest.mark.parametrize("age", [44.9, 85.0, 30.0, 101.0])
def test_no_percentile_outside_45_to_84(age: float) -> None:
    assert thresholds("white", "M", age) is None
    result = percentile(100.0, age, "M", "white")
    assert result.band is None and result.reason == "age outside the MESA reference range (45-84 years)"


@pytest.mark.parametrize("score, cuts, band", [
    (200.0, (0, 28, 155, 452), "75-90"),    # white man, 60: between the 75th (155) and 90th (452)
    (500.0, (0, 28, 155, 452), ">90"),
    (28.0, (0, 28, 155, 452), "25-75"),     # exactly the median: anywhere between the neighbours
    (0.0, (0, 28, 155, 452), "0-50"),       # zero: at most the share with zero CAC (between 25th and 50th)
    (10.0, (0, 0, 0, 8), ">90"),            # white woman, 50: any CAC above 8 is above the 90th
    (0.0, (0, 0, 0, 8), "0-90"),
    (1.0, (20, 106, 370, 921), "0-25"),
])
def test_score_falls_between_the_printed_percentiles(score: float, cuts: tuple, band: str) -> None:
    assert band_of(score, cuts).text == band


def test_a_white_man_of_62_with_200_is_in_the_75_to_90th_percentile() -> None:
    result = percentile(200.0, 62.0, "M", "white")
    assert result.band.text == "75-90" and result.at_or_above_75th is True
    assert result.thresholds == {"white": [0, 28, 155, 452]} and result.age_band == (55, 64)
    low = percentile(100.0, 62.0, "M", "white")
    assert low.band.text == "50-75" and low.at_or_above_75th is False
    zero = percentile(0.0, 48.0, "F", "white")  # 75 % of these women have zero: zero is never 'high'
    assert zero.at_or_above_75th is False


def test_race_not_given_gives_the_widest_band_and_each_race() -> None:
    result = percentile(300.0, 70.0, "M")
    assert result.race == "not given"
    assert result.by_race == {"white": "50-75", "black": "75-90", "hispanic": "75-90", "chinese": "75-90"}
    assert result.band.text == "50-90" and result.at_or_above_75th is None  # undecided across races
    agree = percentile(2000.0, 70.0, "M")
    assert agree.band.text == ">90" and agree.at_or_above_75th is True


@pytest.mark.parametrize("age, sex, reason", [
    (None, "M", "age unknown"), (60.0, None, "sex unknown (PatientSex is not M or F)"),
    (60.0, "O", "sex unknown (PatientSex is not M or F)"),
])
def test_missing_age_or_sex_gives_no_percentile_and_the_reason(age, sex, reason) -> None:
    result = percentile(100.0, age, sex)
    assert result.band is None and result.reason == reason and result.to_dict()["band"] is None


def _header(**values: str) -> Dataset:
    ds = Dataset()
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


@pytest.mark.parametrize("values, age, source", [
    ({"PatientAge": "063Y"}, 63.0, "PatientAge"),
    ({"PatientAge": "006M"}, 0.5, "PatientAge"),
    ({"PatientAge": "052W"}, 52 * 7 / 365.25, "PatientAge"),
    ({"PatientBirthDate": "19500612", "StudyDate": "20150611"}, 64.0, "PatientBirthDate and StudyDate"),
    ({"PatientBirthDate": "19500612", "StudyDate": "20150612"}, 65.0, "PatientBirthDate and StudyDate"),
    ({"PatientBirthDate": "19500612", "SeriesDate": "20150612"}, 65.0, "PatientBirthDate and SeriesDate"),
    ({"PatientAge": "70Y", "PatientBirthDate": "19500612", "StudyDate": "20150612"}, 65.0,
     "PatientBirthDate and StudyDate"),  # a malformed PatientAge falls back to the dates
])
def test_age_from_the_header(values: dict, age: float, source: str) -> None:
    person = demographics(_header(PatientSex="F", **values))
    assert person.age_years == pytest.approx(age) and person.age_source == source and person.sex == "F"


@pytest.mark.parametrize("values, problem", [
    ({}, "no age: PatientAge missing; PatientBirthDate missing or malformed"),
    ({"PatientAge": "130Y"}, "PatientAge implausible"),
    ({"PatientAge": "abcd"}, "PatientAge malformed"),
    ({"PatientBirthDate": "19000101", "StudyDate": "20240101"}, "age from PatientBirthDate and StudyDate implausible"),
    ({"PatientBirthDate": "20300101", "StudyDate": "20240101"}, "PatientBirthDate after StudyDate"),
    ({"PatientBirthDate": "UNKNOWN", "StudyDate": "20240101"}, "PatientBirthDate missing or malformed"),
    ({"PatientBirthDate": "19500101"}, "no study date"),
])
def test_missing_or_implausible_age_is_none_with_a_reason_and_no_value(values: dict, problem: str) -> None:
    person = demographics(_header(PatientSex="M", **values))
    assert person.age_years is None and person.age_source == ""
    assert any(problem in p for p in person.problems), person.problems
    for value in values.values():
        assert all(value not in p for p in person.problems)


def test_sex_other_than_m_or_f_is_none_and_disagreeing_ages_are_noted() -> None:
    person = demographics(_header(PatientSex="O", PatientAge="063Y", PatientBirthDate="19400101", StudyDate="20240101"))
    assert person.sex is None and any("PatientSex is neither M nor F" in p for p in person.problems)
    assert person.age_years == 63.0 and any("disagree" in p for p in person.problems)
    assert demographics(_header(PatientAge="063Y")).problems == ["no sex: PatientSex missing"]


def test_module_reports_the_band_or_why_not_and_fills_the_cohort_columns(tmp_path: Path) -> None:
    class Scores:
        agatston = 200.0

    ctx = Context(input_dir=tmp_path, output_dir=tmp_path, config={})
    instance = Instance(key="k", series=Series(uid="1", study_uid="2", files=[],
                                               headers=[_header(PatientAge="062Y", PatientSex="M")]), scores=Scores())
    module("CacPercentile", race="white").run(instance, ctx)
    block = instance.report["percentile"]
    assert block["band"] == "75-90" and block["race"] == "white" and "McClelland" in block["source"]
    assert instance.report["_columns"] == {"age": 62.0, "sex": "M", "cac_percentile": "75-90", "cac_percentile_lower": 75,
                                           "cac_percentile_upper": 90, "cac_percentile_ge75": True}
    unknown = Instance(key="k", series=Series(uid="1", study_uid="2", files=[], headers=[_header(PatientSex="M")]),
                       scores=Scores())
    module("CacPercentile").run(unknown, ctx)
    assert unknown.report["percentile"]["band"] is None
    assert unknown.report["percentile"]["reason"] == ("no age: PatientAge missing; PatientBirthDate missing or "
                                                      "malformed")
    assert unknown.report["_columns"]["cac_percentile"] is None
