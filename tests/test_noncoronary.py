"""Non-coronary calcium (aortic valve, mitral annulus, thoracic aorta): exact to the phantom's oracle where
the site is found, never in the coronary score, in the report, cohort row, SR and qc.png."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from scipy import ndimage

from cac_mhub.anatomy import analyse
from cac_mhub.anatomy.noncoronary import SITES, find_sites
from cac_mhub.chain import Context
from cac_mhub.dicom import seg as S
from cac_mhub.dicom import sr as R
from cac_mhub.phantom.thorax import generate_thorax
from cac_mhub.plots import NONCORONARY_COLOURS
from cac_mhub.scoring.agatston import score
from cac_mhub.scoring.noncoronary import AVC_SEVERE_AU, NonCoronaryResult, SiteScore, avc_category, score_sites
from cac_mhub.types import Series
from tests.test_heart_guard_chain import colour_pixels, instance_of, module
from tests.test_seg import NAMES, SPACING, dciodvfy, make_case

KW = dict(size=256, increment=3.0, z_extent_mm=200.0, burden="moderate", noise_hu=15.0)
#: Phantoms with aortic valve (3, 12, 14), mitral annulus (3, 9, 16) and aortic wall calcium (3, 12, 14, 16).
SEEDS = (3, 9, 12, 14, 16)
#: The phantom's lungs reach down to z = -4 mm (left dome): below is abdominal aorta, not thoracic.
LUNG_BASE_MM = -4.0
PHANTOM_CODE = {"aortic_valve": 3, "mitral_annulus": 4, "aorta": 2}


def oracle(phantom, site: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Ground-truth calcium of a site (the phantom's distractor code) and its 3D components; for the aorta only
    the thoracic part (above the lung bases) and what is not fused with the skeleton (no rule can part those)."""
    truth = phantom.distractors == PHANTOM_CODE[site]
    components, count = ndimage.label(truth, structure=np.ones((3, 3, 3), bool))
    calcium, _ = ndimage.label(phantom.hu >= 130, structure=np.ones((3, 3, 3), bool))
    bone_voxels = np.bincount(calcium[phantom.distractors == 1], minlength=calcium.max() + 1)
    site_voxels = np.bincount(calcium[truth], minlength=calcium.max() + 1)
    keep = np.zeros(truth.shape, bool)
    parts = []
    for index in range(1, count + 1):
        part = components == index
        z_mm = phantom.origin_lps[2] + np.nonzero(part)[0].mean() * phantom.spacing_zyx[0]
        fused = np.any(bone_voxels[np.unique(calcium[part])] > site_voxels[np.unique(calcium[part])])
        if site == "aorta" and (z_mm < LUNG_BASE_MM or fused):
            continue
        keep |= part
        parts.append(part)
    return keep, parts


@pytest.fixture(scope="module")
def measured() -> dict[int, tuple]:
    out = {}
    for seed in SEEDS:
        phantom = generate_thorax(seed, **KW)
        anatomy = analyse(phantom.hu, phantom.spacing_zyx)
        assert anatomy.found
        sites = find_sites(phantom.hu, anatomy, coronary=phantom.labels)
        result = score_sites(phantom.hu, phantom.spacing_zyx, sites, sex="M")
        codes = np.zeros(phantom.hu.shape, np.uint8)
        codes[sites.box] = sites.codes
        out[seed] = (phantom, sites, result, codes)
    return out


def test_scores_are_exact_to_the_oracle_wherever_the_site_is_found(measured) -> None:
    found = {site: 0 for site in PHANTOM_CODE}
    for seed, (phantom, _, result, codes) in measured.items():
        for site, code in PHANTOM_CODE.items():
            truth, parts = oracle(phantom, site)
            wanted = [SITES.index(s) + 1 for s in SITES if s.startswith("aorta")] if site == "aorta" \
                else [SITES.index(site) + 1]
            got = result.tac if site == "aorta" else result.sites[site]
            if not parts:  # no such calcium: nothing may be reported there
                assert got.agatston == 0.0 and got.lesions == 0, (seed, site)
                continue
            if not all(np.isin(codes[part], wanted).all() for part in parts):
                continue  # the anatomy rules did not find the whole site: not comparable
            reference = score(phantom.hu, phantom.spacing_zyx, truth.astype(np.uint8), {1: "CAC"})
            assert got.agatston == pytest.approx(reference.agatston, rel=1e-12, abs=1e-9), (seed, site)
            assert got.volume_mm3 == pytest.approx(reference.volume_mm3, rel=1e-12, abs=1e-9), (seed, site)
            assert got.lesions == reference.lesion_count, (seed, site)
            found[site] += 1
    assert found["aortic_valve"] >= 2 and found["mitral_annulus"] >= 2 and found["aorta"] >= 3, found


def test_aortic_calcium_lands_in_the_part_of_the_aorta_it_was_painted_on(measured) -> None:
    checked = agree = 0
    for phantom, _, _, codes in measured.values():
        placed = phantom.params["aortic_calcium"]
        centres = np.array([p["centre_lps"] for p in placed])
        _, parts = oracle(phantom, "aorta")
        for part in parts:
            zz, yy, xx = np.nonzero(part)
            lps = np.array([phantom.origin_lps[0] + xx.mean() * phantom.spacing_zyx[2],
                            phantom.origin_lps[1] + yy.mean() * phantom.spacing_zyx[1],
                            phantom.origin_lps[2] + zz.mean() * phantom.spacing_zyx[0]])
            painted = placed[int(np.argmin(np.linalg.norm(centres - lps, axis=1)))]["part"]
            sites = {SITES[c - 1] for c in np.unique(codes[part]) if c}
            if not sites:
                continue
            checked += 1
            agree += sites == {f"aorta_{painted}"}
            assert {painted, *(s.removeprefix("aorta_") for s in sites)} != {"ascending", "descending"}
    assert checked >= 8 and agree >= 0.8 * checked, (agree, checked)


def test_sites_never_take_coronary_voxels_and_without_anatomy_say_so(measured) -> None:
    phantom, sites, _, codes = measured[3]
    assert not np.any((codes > 0) & (phantom.labels > 0))
    assert sites.delineated == dict.fromkeys(SITES, True) and sites.notes == []
    anatomy = analyse(phantom.hu, phantom.spacing_zyx)
    anatomy.aorta[:] = False
    anatomy.info["_aortic_root"] = None
    blind = find_sites(phantom.hu, anatomy, coronary=phantom.labels)
    assert not blind.delineated["aortic_valve"] and not blind.delineated["aorta_descending"]
    assert any("aortic root not found" in n for n in blind.notes)
    block = score_sites(phantom.hu, phantom.spacing_zyx, blind).to_dict()
    assert block["sites"]["aortic_valve"]["agatston"] is None and block["tac"]["agatston"] is None


def test_aortic_valve_category_uses_the_sex_specific_thresholds() -> None:
    assert AVC_SEVERE_AU == {"M": 2000.0, "F": 1200.0}
    assert avc_category(1999.9, "M", True)[0] == "below the severe aortic stenosis threshold"
    assert avc_category(2000.0, "M", True)[0] == "likely severe aortic stenosis"
    assert avc_category(1200.0, "F", True)[0] == "likely severe aortic stenosis"
    assert avc_category(1199.0, "F", True)[0] == "below the severe aortic stenosis threshold"
    category, note = avc_category(2500.0, None, True)
    assert category is None and "PatientSex" in note
    assert "not gated" in avc_category(2500.0, "M", False)[1] and "not gated" not in avc_category(2500.0, "M", True)[1]
    assert avc_category(None, "M", True)[0] is None


def test_the_coronary_score_does_not_change_by_one_bit(tmp_path: Path) -> None:
    phantom = generate_thorax(3, **KW)
    instance = instance_of(phantom)
    header = Dataset()
    header.PatientAge, header.PatientSex = "067Y", "F"
    instance.series = Series(uid="1.2.3", study_uid="1.2", files=[], headers=[header])
    ctx = Context(input_dir=tmp_path, output_dir=tmp_path / "out", config={})
    module("HeartLocator").run(instance, ctx)
    module("AgatstonCalculator").run(instance, ctx)
    scores = json.dumps(instance.scores.to_dict(), sort_keys=True)
    labels = instance.labels.array.copy()
    module("NonCoronaryCalcium").run(instance, ctx)
    module("CacPercentile").run(instance, ctx)
    assert json.dumps(instance.scores.to_dict(), sort_keys=True) == scores
    assert np.array_equal(instance.labels.array, labels) and instance.labels.array.dtype == labels.dtype
    # the same coronary numbers as a chain without the new modules
    alone = instance_of(phantom)
    module("HeartLocator").run(alone, ctx)
    module("AgatstonCalculator").run(alone, ctx)
    assert json.dumps(alone.scores.to_dict(), sort_keys=True) == scores
    block = instance.report["noncoronary"]
    assert block["measured"] and block["in_coronary_total"] is False
    assert block["sites"]["aortic_valve"]["agatston"] > 0 and block["sites"]["mitral_annulus"]["agatston"] > 0
    assert block["avc_category"] == "below the severe aortic stenosis threshold"  # F: 1200 AU
    columns = instance.report["_columns"]
    assert columns["avc_agatston"] == pytest.approx(block["sites"]["aortic_valve"]["agatston"])
    assert columns["tac_agatston"] == pytest.approx(sum(block["sites"][s]["agatston"] for s in
                                                         ("aorta_ascending", "aorta_arch", "aorta_descending")))
    row = module("ReportExporter").row(instance, {"status": "scored", "reason": "", "series": {}})
    for key in ("avc_agatston", "mac_agatston", "tac_agatston", "tac_arch_agatston", "cac_percentile"):
        assert key in row
    assert row["agatston"] == instance.scores.summary_row()["agatston"]


def test_without_a_heart_region_nothing_is_measured_and_the_report_says_why(tmp_path: Path) -> None:
    phantom = generate_thorax(3, **KW)
    instance = instance_of(phantom)
    module("NonCoronaryCalcium").run(instance, Context(input_dir=tmp_path, output_dir=tmp_path, config={}))
    assert instance.report["noncoronary"] == {"measured": False, "why": "no HeartLocator in the chain",
                                              "in_coronary_total": False}
    assert "_columns" not in instance.report


def test_qc_png_shows_the_sites_in_their_own_colours(measured, tmp_path: Path) -> None:
    from cac_mhub.plots import lesion_overview

    phantom, sites, _, _ = measured[3]
    names = {1: "LM", 2: "LAD", 3: "LCX", 4: "RCA"}
    scores = score(phantom.hu, phantom.spacing_zyx, phantom.labels, names).to_dict()
    png = lesion_overview(phantom.hu, phantom.labels, names, scores, phantom.spacing_zyx,
                          noncoronary=sites.site_maps(phantom.hu.shape))
    plain = lesion_overview(phantom.hu, phantom.labels, names, scores, phantom.spacing_zyx)
    for site in ("aortic_valve", "mitral_annulus"):
        colour = NONCORONARY_COLOURS[site]
        assert colour_pixels(png, colour) > 20 and colour_pixels(plain, colour) < colour_pixels(png, colour) / 4


def _noncoronary_block() -> dict:
    sites = {"aortic_valve": SiteScore(2100.5, 900.25, 12, 3), "mitral_annulus": SiteScore(33.0, 20.0, 2, 1),
             "aorta_ascending": SiteScore(0.0, 0.0, 0, 0), "aorta_arch": SiteScore(150.0, 80.0, 4, 2),
             "aorta_descending": SiteScore(75.25, 40.0, 3, 1)}
    delineated = {**dict.fromkeys(sites, True), "aorta_arch": False}
    result = NonCoronaryResult(sites, delineated, ["aortic arch not delineated"], "likely severe aortic stenosis", "")
    return {"measured": True, **result.to_dict()}


def test_sr_holds_the_sites_apart_from_the_coronary_total_and_reads_back(tmp_path: Path) -> None:
    _, headers, volume, labels = make_case(tmp_path)
    result = score(volume.hu, SPACING, labels, NAMES)
    block = _noncoronary_block()
    sr = R.build_sr(headers, result, S.AlgorithmInfo(model_id="model:test@1"), noncoronary=block)
    path = tmp_path / "cac.sr.dcm"
    sr.save_as(path)
    errors, _ = dciodvfy(path)
    assert errors == []
    back = R.read_sr(pydicom.dcmread(path))
    apart = back["noncoronary"]
    assert apart["aortic_valve"] == {"agatston": 2100.5, "volume_mm3": 900.25, "lesions": 12}
    assert apart["mitral_annulus"]["agatston"] == 33.0 and apart["aorta_descending"]["agatston"] == 75.25
    assert "aorta_arch" not in apart  # not delineated: no group, never a zero
    assert apart["tac"] == {"agatston": 75.25, "volume_mm3": 40.0, "lesions": 3}
    assert apart["avc_category"] == "likely severe aortic stenosis"
    # the coronary numbers are those of an SR without the sites
    plain = R.read_sr(R.build_sr(headers, result, S.AlgorithmInfo(model_id="model:test@1")))
    for key in ("agatston", "volume_mm3", "lesion_count", "risk_category", "cac_drs", "per_artery"):
        assert back[key] == plain[key], key
    assert back["agatston"] == pytest.approx(result.agatston)
    sites = {str(item.ConceptCodeSequence[0].CodeValue) for item in _finding_sites(pydicom.dcmread(path))}
    assert {"34202007", "279174006", "54247002", "281130003", "15825003"} <= sites


def _finding_sites(ds: Dataset):
    """Every finding-site content item (SCT 363698007) anywhere in the SR tree."""
    stack = list(ds.ContentSequence)
    while stack:
        item = stack.pop()
        name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
        if name is not None and name.CodeValue == "363698007":
            yield item
        stack.extend(getattr(item, "ContentSequence", []))


def test_nothing_about_the_patient_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    phantom = generate_thorax(9, **KW)
    instance = instance_of(phantom)
    header = Dataset()
    header.PatientAge, header.PatientSex, header.PatientBirthDate = "071Y", "M", "19350611"
    instance.series = Series(uid="1.2.3", study_uid="1.2", files=[], headers=[header])
    ctx = Context(input_dir=tmp_path, output_dir=tmp_path, config={})
    with caplog.at_level(logging.DEBUG, logger="cac_mhub"):
        for name in ("HeartLocator", "AgatstonCalculator", "NonCoronaryCalcium", "CacPercentile"):
            module(name).run(instance, ctx)
    assert instance.report["percentile"]["patient"]["age_years"] == 71.0
    text = caplog.text
    assert "071Y" not in text and "19350611" not in text and " 71" not in text


def test_noise_does_not_become_calcium(monkeypatch: pytest.MonkeyPatch) -> None:
    """Low-dose or sharp-kernel noise puts thousands of blood voxels over 130 HU: a candidate must peak
    5 noise SDs above the blood pool; the real aortic plaques stay."""
    import cac_mhub.anatomy.noncoronary as N

    quiet = generate_thorax(7, **{**KW, "noise_hu": 15.0})
    noisy = generate_thorax(7, **{**KW, "noise_hu": 55.0})  # same anatomy and plaques, more noise
    found = {}
    for name, phantom in (("quiet", quiet), ("noisy", noisy)):
        anatomy = analyse(phantom.hu, phantom.spacing_zyx)
        found[name] = find_sites(phantom.hu, anatomy, coronary=phantom.labels)
    assert found["quiet"].noise["candidate_peak_min_hu"] == 130.0 and found["quiet"].noise["faint_candidates_left_out"] == 0
    noise = found["noisy"].noise
    assert noise["noise_sd_hu"] == pytest.approx(55.0, rel=0.2) and noise["candidate_peak_min_hu"] > 300
    assert noise["faint_candidates_left_out"] > 1000 and any("noisy image" in n for n in found["noisy"].notes)
    aorta = [s for s in SITES if s.startswith("aorta")]
    assert [found["noisy"].candidates[s] for s in aorta] == [found["quiet"].candidates[s] for s in aorta]
    assert found["noisy"].candidates["aortic_valve"] + found["noisy"].candidates["mitral_annulus"] <= 2
    monkeypatch.setattr(N, "NOISE_SD", 0.0)
    anatomy = analyse(noisy.hu, noisy.spacing_zyx)
    assert find_sites(noisy.hu, anatomy, coronary=noisy.labels).candidates["mitral_annulus"] > 100
