"""CacPercentile: the coronary score's MESA percentile for the patient's age and sex (docs/scoring.md)."""

from __future__ import annotations

from typing import ClassVar

from ..chain import Context, Instance, Module, Option
from ..scoring.percentile import NOT_GIVEN, RACES


class CacPercentile(Module):
    """Reads ``instance.scores`` and the header's age and sex; adds ``report["percentile"]``.

    Age and sex come from PatientAge (else PatientBirthDate and the study date) and PatientSex;
    when either is missing or implausible there is no percentile, and the report says why. The
    log never shows them.
    """

    options: ClassVar[dict[str, Option]] = {
        "race": Option(str, "not_given", "race/ethnicity of the MESA reference: not_given (the band over all four "
                       "tables), white, black, hispanic, chinese", choices=("not_given", *RACES)),
    }

    def run(self, instance: Instance, ctx: Context) -> None:
        from ..dicom.demographics import Demographics, demographics
        from ..scoring.percentile import percentile

        header = instance.series.first if instance.series is not None and instance.series.headers else None
        person = demographics(header) if header is not None else Demographics(None, None, "", ["no DICOM header"])
        race = self.settings["race"]
        score = getattr(instance.scores, "agatston", None)
        result = percentile(score, person.age_years, person.sex, NOT_GIVEN if race == "not_given" else race)
        reason = result.reason
        if result.band is None and person.problems and reason.startswith(("age unknown", "sex unknown")):
            reason = "; ".join(person.problems)  # which attribute was missing or implausible, and why
        instance.report["percentile"] = {**result.to_dict(), "reason": reason, "patient": person.to_dict()}
        instance.report.setdefault("_columns", {}).update({
            "age": None if person.age_years is None else round(person.age_years, 1),
            "sex": person.sex,
            "cac_percentile": result.band.text if result.band else None,
            "cac_percentile_lower": result.band.lower if result.band else None,
            "cac_percentile_upper": result.band.upper if result.band else None,
            "cac_percentile_ge75": result.at_or_above_75th,
        })
