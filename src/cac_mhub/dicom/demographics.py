"""Age and sex of the patient from a CT header, for age/sex reference percentiles and sex-specific cut points.

Pure: one pydicom dataset in, :class:`Demographics` out. Age comes from PatientAge (``nnnY``,
``nnnM``, ``nnnW``, ``nnnD``) or else from PatientBirthDate and the study date (StudyDate, else
SeriesDate, AcquisitionDate, ContentDate); sex from PatientSex (``M`` or ``F``; ``O`` and anything
else give none). Missing, malformed or implausible values give ``None`` and a reason that names
the attribute, never its value: reasons go to reports and logs, patient data does not.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any

from .validate import value

#: Ages outside this range (years) are taken as wrong (placeholder birth dates such as 19000101).
PLAUSIBLE_AGE = (0.0, 120.0)
#: PatientAge and the dates may disagree by this much (years) before the report says so.
AGE_TOLERANCE_YEARS = 1.0
_AS = re.compile(r"^(\d{3})([DWMY])$")
_DAYS_PER = {"D": 1.0, "W": 7.0, "M": 365.25 / 12.0, "Y": 365.25}
_STUDY_DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")


@dataclass
class Demographics:
    age_years: float | None
    sex: str | None
    """``M``, ``F`` or None."""
    age_source: str = ""
    """``PatientAge`` or ``PatientBirthDate and <date keyword>``; empty without an age."""
    problems: list[str] = field(default_factory=list)
    """Why age or sex is missing, or why the age sources disagree (no values)."""

    def to_dict(self) -> dict[str, Any]:
        return {"age_years": None if self.age_years is None else round(self.age_years, 2), "sex": self.sex,
                "age_source": self.age_source, "problems": list(self.problems)}


def demographics(header: Any) -> Demographics:
    """Age (years) and sex of the patient in ``header``; see the module docstring for the rules."""
    problems: list[str] = []
    from_tag, tag_problem = _age_from_tag(header)
    from_dates, date_source, date_problem = _age_from_dates(header)
    if from_tag is not None:
        age, source = from_tag, "PatientAge"
        if from_dates is not None and abs(from_dates - from_tag) > AGE_TOLERANCE_YEARS:
            problems.append(f"PatientAge and PatientBirthDate/{date_source} disagree by more than "
                            f"{AGE_TOLERANCE_YEARS:g} year: PatientAge used")
    elif from_dates is not None:
        age, source = from_dates, f"PatientBirthDate and {date_source}"
    else:
        age, source = None, ""
        problems.append(f"no age: {tag_problem}; {date_problem}")
    sex = _text(header, "PatientSex").upper()
    if sex not in ("M", "F"):
        problems.append("no sex: PatientSex " + ("missing" if not sex else "is neither M nor F"))
        sex = ""
    return Demographics(age, sex or None, source, problems)


def _text(header: Any, keyword: str) -> str:
    raw = value(header, keyword)
    return "" if raw is None else str(raw).strip()


def _age_from_tag(header: Any) -> tuple[float | None, str]:
    text = _text(header, "PatientAge").upper()
    if not text:
        return None, "PatientAge missing"
    match = _AS.match(text)
    if not match:
        return None, "PatientAge malformed"
    age = int(match.group(1)) * _DAYS_PER[match.group(2)] / 365.25
    if not PLAUSIBLE_AGE[0] <= age <= PLAUSIBLE_AGE[1]:
        return None, "PatientAge implausible"
    return age, ""


def _age_from_dates(header: Any) -> tuple[float | None, str, str]:
    birth = _date(_text(header, "PatientBirthDate"))
    if birth is None:
        return None, "", "PatientBirthDate missing or malformed"
    for keyword in _STUDY_DATES:
        study = _date(_text(header, keyword))
        if study is None:
            continue
        if study < birth:
            return None, keyword, f"PatientBirthDate after {keyword}"
        years = study.year - birth.year - ((study.month, study.day) < (birth.month, birth.day))
        if not PLAUSIBLE_AGE[0] <= years <= PLAUSIBLE_AGE[1]:
            return None, keyword, f"age from PatientBirthDate and {keyword} implausible"
        return float(years), keyword, ""
    return None, "", "no study date (StudyDate, SeriesDate, AcquisitionDate, ContentDate)"


def _date(text: str) -> _dt.date | None:
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return _dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
