"""TID 1500 measurement report (Comprehensive 3D SR) of CAC scores, and reading one back.

Pure functions. The report holds:

* one *total* group (TID 1501, tracking identifier ``CAC total``, finding site coronary
  artery): Agatston score (DCM 112058 "Calcium score", method DCM 112055 "Agatston scoring
  method"), calcium volume (DCM 122660), calcium mass (DCM 122661, only when calibrated),
  the uncalibrated mass (HU x mm3, private code), number of lesions (DCM 111038), and the
  DeepCAC2 risk category and CAC-DRS category as coded qualitative evaluations (private
  coding scheme ``99CACMHUB``: no standard code set exists for them);
* one group per artery (LM, LAD, LCX, RCA, and CAC for unassigned calcium when present) with
  the same measurements. When the SEG has a segment for the artery, the group is a TID 1411
  volumetric group that references that segment (and the source CT series); otherwise a
  TID 1501 group with the artery as finding site.
* with non-coronary calcium measured (:mod:`cac_mhub.scoring.noncoronary`), one TID 1501 group per
  site that was delineated, with its own tracking identifier (``AVC``, ``MAC``, ``TAC ascending``,
  ``TAC arch``, ``TAC descending``, ``TAC total``), finding type heart valve calcification (SCT
  373136005; valve and annulus) or vascular calcification (aorta), finding site aortic valve (SCT
  34202007), anulus fibrosus of the mitral orifice (SCT 279174006), ascending aorta (SCT
  54247002), aortic arch (SCT 57034009), descending aorta (SCT 281130003) or aorta (SCT 15825003),
  and the Agatston score, calcium volume and lesion count. They never enter the ``CAC total``
  group; the aortic valve group carries the sex-specific category as a coded evaluation.

The evidence lists every source CT image and the SEG, so the report files into the study and
a viewer can find both.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from ..types import ARTERIES, UNASSIGNED
from .seg import ANATOMY, AlgorithmInfo

DEFAULT_SERIES_DESCRIPTION = "CAC measurement report (cac-mhub)"
DEFAULT_SERIES_NUMBER = 902
PRIVATE_SCHEME = "99CACMHUB"
TOTAL_TRACKING_ID = "CAC total"

#: Measurement key in the scores dict -> (concept, unit (value, meaning)).
_UNITS = {
    "agatston": ("1", "no units"),
    "volume_mm3": ("mm3", "cubic millimeter"),
    "mass_mg": ("mg", "milligram"),
    "mass_hu_mm3": ("[hnsf'U].mm3", "Hounsfield unit x cubic millimeter"),
    "lesions": ("{lesions}", "lesions"),
}


def _concepts() -> dict[str, Any]:
    from highdicom.sr import CodedConcept

    return {
        "agatston": codes.DCM.CalciumScore,
        "volume_mm3": codes.DCM.CalciumVolume,
        "mass_mg": codes.DCM.CalciumMass,
        "mass_hu_mm3": CodedConcept("MASSHU", PRIVATE_SCHEME, "Uncalibrated calcium mass"),
        "lesions": codes.DCM.NumberOfCalcifications,
    }


def _noncoronary_sites() -> dict[str, tuple[str, Any, Any]]:
    """Non-coronary site (report key) -> (tracking identifier, finding site, finding type)."""
    valve, vessel = codes.SCT.HeartValveCalcification, codes.SCT.VascularCalcification
    return {
        "aortic_valve": ("AVC", codes.SCT.AorticValve, valve),
        "mitral_annulus": ("MAC", codes.SCT.EntireAnulusFibrosusOfMitralOrifice, valve),
        "aorta_ascending": ("TAC ascending", codes.SCT.AscendingAorta, vessel),
        "aorta_arch": ("TAC arch", codes.SCT.AorticArch, vessel),
        "aorta_descending": ("TAC descending", codes.SCT.DescendingAorta, vessel),
        "tac": ("TAC total", codes.SCT.Aorta, vessel),
    }


def _avc_name() -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept("AVCCAT", PRIVATE_SCHEME, "Aortic valve calcium category")


_AVC_CODES = {"likely severe aortic stenosis": "AVCSEVERE", "below the severe aortic stenosis threshold": "AVCBELOW"}


def _risk_name() -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept("RISKCAT", PRIVATE_SCHEME, "CAC risk category (DeepCAC2)")


def _drs_name() -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept("CACDRS", PRIVATE_SCHEME, "CAC-DRS Agatston category")


def _as_dict(scores: Any) -> Mapping[str, Any]:
    return scores.to_dict() if hasattr(scores, "to_dict") else scores


def _measurements(values: Mapping[str, Any], algorithm_id: Any) -> list[Any]:
    """Measurements for the keys present (None values, e.g. uncalibrated mass, are left out)."""
    import highdicom as hd

    result = []
    for key, concept in _concepts().items():
        value = values.get(key)
        if value is None:
            continue
        unit_value, unit_meaning = _UNITS[key]
        result.append(
            hd.sr.Measurement(
                name=concept,
                value=float(value),
                unit=hd.sr.CodedConcept(unit_value, "UCUM", unit_meaning),
                method=codes.DCM.AgatstonScoringMethod if key == "agatston" else None,
                algorithm_id=algorithm_id,
            )
        )
    return result


def _segments_by_name(seg: Dataset | None) -> dict[str, Dataset]:
    if seg is None:
        return {}
    return {str(item.SegmentLabel): item for item in seg.SegmentSequence if "SegmentLabel" in item}


def build_sr(
    source_headers: Sequence[Dataset],
    scores: Any,
    algorithm: AlgorithmInfo,
    seg: Dataset | None = None,
    series_description: str = DEFAULT_SERIES_DESCRIPTION,
    series_number: int = DEFAULT_SERIES_NUMBER,
    noncoronary: Mapping[str, Any] | None = None,
    confidence: Mapping[str, Any] | None = None,
) -> Any:
    """A Comprehensive 3D SR (TID 1500) of ``scores`` (a scoring result or its ``to_dict()``).

    ``seg`` (the DICOM SEG written for the same series, header is enough) makes each artery
    group reference its segment; without it (score zero, resampled volume) the groups only
    name the artery. ``noncoronary`` (the ``noncoronary`` report block) adds one group per
    delineated non-coronary site. ``confidence`` (the report's verdict) adds the verdict and each
    reason as qualitative evaluations of the total. Every source header becomes evidence.
    """
    import highdicom as hd

    data = _as_dict(scores)
    parameters = [p for p in (algorithm.model_id, _profile_name(data)) if p]
    algorithm_id = hd.sr.AlgorithmIdentification(algorithm.name, algorithm.version, parameters=parameters or None)
    ct_series_uid = str(source_headers[0].SeriesInstanceUID)
    totals = dict(data)
    totals["lesions"] = data.get("lesion_count")
    groups: list[Any] = [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=TOTAL_TRACKING_ID),
            finding_type=codes.SCT.VascularCalcification,
            finding_sites=[hd.sr.FindingSite(codes.SCT.CoronaryArtery)],
            method=codes.DCM.AgatstonScoringMethod,
            algorithm_id=algorithm_id,
            measurements=_measurements(totals, algorithm_id),
            qualitative_evaluations=_evaluations(data) + _confidence(confidence),
        )
    ]
    segments = _segments_by_name(seg)
    per_artery = data.get("per_artery", {}) or {}
    for name in ARTERIES + (UNASSIGNED,):
        values = per_artery.get(name)
        if values is None and name not in segments:
            continue
        values = values or {}
        if name == UNASSIGNED and name not in segments and not values.get("agatston"):
            continue  # no unassigned calcium: leave the CAC group out
        common = dict(
            finding_type=codes.SCT.VascularCalcification,
            finding_sites=[hd.sr.FindingSite(ANATOMY[name])],
            method=codes.DCM.AgatstonScoringMethod,
            algorithm_id=algorithm_id,
            measurements=_measurements(values, algorithm_id),
        )
        item = segments.get(name)
        if item is not None:
            tracking = hd.sr.TrackingIdentifier(
                uid=str(getattr(item, "TrackingUID", "") or generate_uid()), identifier=f"CAC {name}"
            )
            reference = hd.sr.ReferencedSegment(
                sop_class_uid=str(seg.SOPClassUID),  # type: ignore[union-attr]
                sop_instance_uid=str(seg.SOPInstanceUID),  # type: ignore[union-attr]
                segment_number=int(item.SegmentNumber),
                source_series=hd.sr.SourceSeriesForSegmentation(ct_series_uid),
            )
            groups.append(
                hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking, referenced_segment=reference, **common
                )
            )
        else:
            tracking = hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"CAC {name}")
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(tracking_identifier=tracking, **common))

    groups.extend(_noncoronary_groups(noncoronary, algorithm_id))

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[algorithm.name]),
            name=algorithm.name,
            manufacturer_name=algorithm.name,
            model_name=algorithm.version,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.CardiacCTForCalciumScoring,
        imaging_measurements=groups,
    )
    evidence = list(source_headers) + ([seg] if seg is not None else [])
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=generate_uid(),
        series_number=int(series_number),
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=algorithm.name,
        is_complete=True,
        series_description=series_description,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        coding_schemes=[_private_scheme()],
    )


def _noncoronary_groups(block: Mapping[str, Any] | None, algorithm_id: Any) -> list[Any]:
    """TID 1501 groups of the delineated non-coronary sites (none when nothing was measured)."""
    import highdicom as hd

    if not block or not block.get("measured"):
        return []
    groups = []
    sites = dict(block.get("sites") or {})
    if block.get("tac") and block["tac"].get("agatston") is not None:
        sites["tac"] = {**block["tac"], "delineated": True}
    for key, (identifier, site, finding) in _noncoronary_sites().items():
        values = sites.get(key)
        if not values or not values.get("delineated") or values.get("agatston") is None:
            continue
        evaluations = []
        category = block.get("avc_category") if key == "aortic_valve" else None
        if category in _AVC_CODES:
            evaluations.append(hd.sr.QualitativeEvaluation(
                _avc_name(), hd.sr.CodedConcept(_AVC_CODES[category], PRIVATE_SCHEME, category)))
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=identifier),
            finding_type=finding,
            finding_sites=[hd.sr.FindingSite(site)],
            method=codes.DCM.AgatstonScoringMethod,
            algorithm_id=algorithm_id,
            measurements=_measurements(values, algorithm_id),
            qualitative_evaluations=evaluations or None,
        ))
    return groups


def _profile_name(data: Mapping[str, Any]) -> str:
    profile = data.get("profile")
    name = profile.get("name") if isinstance(profile, Mapping) else profile
    return f"profile={name}" if name else ""


def _private_scheme() -> Any:
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    return CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME,
        name="cac-mhub CAC categories",
        responsible_organization="cac-mhub",
    )


def _confidence_name() -> Any:
    import highdicom as hd

    return hd.sr.CodedConcept("CONFID", PRIVATE_SCHEME, "Confidence of the result")


def _confidence_reason_name() -> Any:
    import highdicom as hd

    return hd.sr.CodedConcept("CONFRSN", PRIVATE_SCHEME, "Reason for lowered confidence")


def _confidence(confidence: Mapping[str, Any] | None) -> list[Any]:
    """The verdict (high / medium / low) and one evaluation per reason, its text as the code meaning."""
    import highdicom as hd

    if not confidence or not confidence.get("verdict"):
        return []
    verdict = str(confidence["verdict"])
    result = [hd.sr.QualitativeEvaluation(_confidence_name(),
                                          hd.sr.CodedConcept(verdict.upper()[:16], PRIVATE_SCHEME, verdict))]
    for reason in confidence.get("reasons", []):
        meaning = str(reason.get("text", reason["code"]))[:64]
        result.append(hd.sr.QualitativeEvaluation(
            _confidence_reason_name(), hd.sr.CodedConcept(str(reason["code"]).upper()[:16], PRIVATE_SCHEME, meaning)))
    return result


def _evaluations(data: Mapping[str, Any]) -> list[Any]:
    import highdicom as hd

    result = []
    category = data.get("risk_category")
    if category:
        group = data.get("risk_group")
        value = f"RISK{group}" if group is not None else str(category).upper().replace(" ", "")[:16]
        code = hd.sr.CodedConcept(value, PRIVATE_SCHEME, str(category))
        result.append(hd.sr.QualitativeEvaluation(_risk_name(), code))
    drs = data.get("cac_drs")
    if drs:
        code = hd.sr.CodedConcept(str(drs)[:16], PRIVATE_SCHEME, str(drs))
        result.append(hd.sr.QualitativeEvaluation(_drs_name(), code))
    return result


# --------------------------------------------------------------------------- reading back

_KEY_OF_CODE = {
    ("112058", "DCM"): "agatston",
    ("122660", "DCM"): "volume_mm3",
    ("122661", "DCM"): "mass_mg",
    ("MASSHU", PRIVATE_SCHEME): "mass_hu_mm3",
    ("111038", "DCM"): "lesions",
}


def _group_values(group: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for measurement in group.get_measurements():
        key = _KEY_OF_CODE.get((measurement.name.value, measurement.name.scheme_designator))
        if key is not None:
            values[key] = int(measurement.value) if key == "lesions" else float(measurement.value)
    return values


def read_sr(sr: Dataset) -> dict[str, Any]:
    """The numbers of a report written by :func:`build_sr`, in the scores-dict layout.

    Returns ``agatston``, ``volume_mm3``, ``mass_mg`` (None when absent), ``mass_hu_mm3``,
    ``lesion_count``, ``risk_category``, ``cac_drs``, ``per_artery`` {name: {...}},
    ``segments`` {name: (SEG SOPInstanceUID, segment number)} and ``noncoronary`` {site: {...}}
    (sites as in the report block, ``tac`` for the aorta total; ``avc_category`` when coded),
    ``confidence`` and ``confidence_reasons`` (codes, lower case) when the report carried them.
    """
    import highdicom as hd

    document = hd.sr.Comprehensive3DSR.from_dataset(sr, copy=False)
    report = document.content
    result: dict[str, Any] = {"mass_mg": None, "per_artery": {}, "segments": {}, "noncoronary": {}}
    names = {c.value: n for n, c in ANATOMY.items()}
    apart = {identifier: key for key, (identifier, _, _) in _noncoronary_sites().items()}
    for group in report.get_image_measurement_groups() + report.get_volumetric_roi_measurement_groups():
        identifier = str(group.tracking_identifier or "")
        values = _group_values(group)
        if identifier == TOTAL_TRACKING_ID:
            values["lesion_count"] = values.pop("lesions", None)
            result.update(values)
            for evaluation in group.get_qualitative_evaluations():
                concept = evaluation.name.value
                if concept == "RISKCAT":
                    result["risk_category"] = evaluation.value.meaning
                elif concept == "CACDRS":
                    result["cac_drs"] = evaluation.value.meaning
                elif concept == "CONFID":
                    result["confidence"] = evaluation.value.meaning
                elif concept == "CONFRSN":
                    result.setdefault("confidence_reasons", []).append(evaluation.value.value.lower())
            continue
        if identifier in apart:
            result["noncoronary"][apart[identifier]] = values
            for evaluation in group.get_qualitative_evaluations():
                if evaluation.name.value == "AVCCAT":
                    result["noncoronary"]["avc_category"] = evaluation.value.meaning
            continue
        name = identifier.removeprefix("CAC ").strip()
        if name not in ANATOMY:
            sites = [names.get(site.value) for site in group.finding_sites]
            name = next((s for s in sites if s), UNASSIGNED)
        result["per_artery"][name] = values
        segment = getattr(group, "referenced_segment", None)
        if segment is not None:
            result["segments"][name] = (
                str(segment.referenced_sop_instance_uid),
                int(segment.referenced_segment_numbers[0]),
            )
    return result
