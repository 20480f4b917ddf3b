"""``cac-mhub outcomes``: library-backed survival statistics checked against documented results and
synthetic cohorts with known hazards; every row that cannot be used is counted."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cac_mhub.cli import main
from cac_mhub.stats.survival import Spec, analyse, concordance, cox, group_label, join, kaplan_meier, log_rank

#: scikit-survival's user guide (doc/user_guide/00-introduction.ipynb), Cox model on the Veterans'
#: Administration lung cancer data shipped with the library, and Harrell's C of its risk score.
VETERANS_COEF = {"Age_in_years": -0.008549, "Celltype=large": -0.788672, "Celltype=smallcell": -0.331813,
                 "Celltype=squamous": -1.188299, "Karnofsky_score": -0.032622, "Months_from_Diagnosis": -0.000092,
                 "Prior_therapy=yes": 0.072327, "Treatment=test": 0.289936}
VETERANS_C = 0.7362562471603816


@pytest.fixture(scope="module")
def veterans():
    from sksurv.datasets import load_veterans_lung_cancer
    from sksurv.preprocessing import OneHotEncoder

    x, y = load_veterans_lung_cancer()
    return x, OneHotEncoder().fit_transform(x), y


def test_cox_and_harrells_c_match_the_documented_veterans_example(veterans) -> None:
    _, numeric, y = veterans
    result = cox(y["Survival_in_days"], y["Status"], numeric.to_numpy(float), list(numeric.columns))
    for term in result["terms"]:
        assert term["coef"] == pytest.approx(VETERANS_COEF[term["term"]], abs=5e-7), term["term"]
        assert term["hr"] == pytest.approx(np.exp(term["coef"]))
        assert term["ci_lower"] < term["hr"] < term["ci_upper"]
    assert result["concordance"] == pytest.approx(VETERANS_C, abs=1e-12)
    assert result["n"] == 137 and result["events"] == 128


def test_log_rank_and_kaplan_meier_on_the_veterans_cell_types(veterans) -> None:
    from sksurv.nonparametric import kaplan_meier_estimator

    x, _, y = veterans
    time, event, cell = y["Survival_in_days"], y["Status"], x["Celltype"].to_numpy(str)
    test = log_rank(time, event, cell.astype(object))
    assert test["df"] == 3 and test["chi2"] == pytest.approx(25.4037, abs=1e-3) and test["p"] < 1e-4  # R: 25.4 on 3 df
    squamous = cell == "squamous"
    km = kaplan_meier(time[squamous], event[squamous], [100.0, 200.0, 5000.0])
    steps, survival = kaplan_meier_estimator(event[squamous], time[squamous])
    assert km["survival"][0] == pytest.approx(survival[np.searchsorted(steps, 100.0, side="right") - 1])
    assert km["lower"][0] < km["survival"][0] < km["upper"][0]
    assert km["survival"][2] is None  # beyond the group's follow-up: no estimate


def _synthetic(n: int, seed: int, hazard_ratios=(1.0, 1.5, 2.5, 4.0), confounded: bool = False):
    """Exponential survival with a known hazard ratio per CAC group, uniform and administrative censoring.

    ``confounded``: older people get higher CAC groups and age itself raises the hazard (x1.05 a year).
    """
    rng = np.random.default_rng(seed)
    age = rng.uniform(45.0, 80.0, n)
    if confounded:
        group = np.clip(((age - 45.0) / 35.0 * 4 + rng.normal(0, 0.8, n)).astype(int), 0, 3)
    else:
        group = rng.integers(0, 4, n)
    hazard = 0.03 * np.asarray(hazard_ratios)[group] * (1.05 ** (age - 60.0) if confounded else 1.0)
    event_time = rng.exponential(1.0 / hazard)
    censor = np.minimum(rng.uniform(0.0, 20.0, n), 10.0)
    time = np.minimum(event_time, censor)
    score = np.array([0.0, 40.0, 180.0, 900.0])[group]
    return group, score, age, time, (event_time <= censor).astype(int)


def _tables(score, age, time, event):
    cohort = [{"key": f"s{i}", "status": "scored", "agatston": f"{score[i]:g}", "age": f"{age[i]:.3f}",
               "sex": "MF"[i % 2]} for i in range(len(score))]
    followup = [{"key": f"s{i}", "years": f"{time[i]:.6f}", "death": str(event[i])} for i in range(len(score))]
    return cohort, followup


def test_a_synthetic_cohort_gives_back_its_true_hazard_ratios() -> None:
    truth = (1.0, 1.5, 2.5, 4.0)
    _, score, age, time, event = _synthetic(20000, 11, truth)
    spec = Spec(id="key", time="years", event="death")
    result = analyse(join(*_tables(score, age, time, event), spec), spec)
    assert result["n"] == 20000 and result["reference_group"] == "0"
    terms = result["cox_unadjusted"]["terms"]
    assert [t["term"] for t in terms] == ["group >0-100 vs 0", "group >100-300 vs 0", "group >300 vs 0"]
    for term, true_hr in zip(terms, truth[1:]):
        assert term["ci_lower"] <= true_hr <= term["ci_upper"], term
        assert term["hr"] == pytest.approx(true_hr, rel=0.1)
    assert result["log_rank"]["p"] < 1e-50
    assert 0.5 < result["cox_unadjusted"]["concordance"] < 0.8


def test_the_95_percent_intervals_cover_the_truth_about_95_percent_of_the_time() -> None:
    covered = total = 0
    for seed in range(120):
        group, _, _, time, event = _synthetic(500, 1000 + seed, (1.0, 2.0, 2.0, 2.0))
        design = (group > 0).astype(float)[:, None]
        term = cox(time, event.astype(bool), design, ["CAC > 0"])["terms"][0]
        covered += term["ci_lower"] <= 2.0 <= term["ci_upper"]
        total += 1
    assert 0.88 <= covered / total <= 0.99, covered / total


def test_adjustment_for_a_confounder_recovers_the_true_hazard_ratio() -> None:
    truth = (1.0, 1.5, 2.5, 4.0)
    _, score, age, time, event = _synthetic(20000, 5, truth, confounded=True)
    spec = Spec(id="key", time="years", event="death", adjust=["age", "sex"])
    result = analyse(join(*_tables(score, age, time, event), spec), spec)
    crude = result["cox_unadjusted"]["terms"][-1]
    adjusted = {t["term"]: t for t in result["cox_adjusted"]["terms"]}
    assert crude["ci_lower"] > 4.0  # age confounds: the crude ratio is too high
    top = adjusted["group >300 vs 0"]
    assert top["ci_lower"] <= 4.0 <= top["ci_upper"]
    assert adjusted["age"]["ci_lower"] <= 1.05 <= adjusted["age"]["ci_upper"]
    assert "sex=M vs F" in adjusted and adjusted["sex=M vs F"]["ci_lower"] <= 1.0 <= adjusted["sex=M vs F"]["ci_upper"]
    assert result["cox_adjusted"]["covariates"] == ["age", "sex"]


def test_every_row_that_cannot_be_used_is_counted_with_its_id() -> None:
    cohort = [
        {"key": "a", "status": "scored", "agatston": "0", "age": "60"},
        {"key": "b", "status": "scored", "agatston": "150", "age": "61"},
        {"key": "c", "status": "scored", "agatston": "500", "age": ""},      # no age: left out of the adjusted model only
        {"key": "d", "status": "skipped", "agatston": "", "age": "70"},       # not scored
        {"key": "e", "status": "scored", "agatston": "10", "age": "55"},
        {"key": "e", "status": "scored", "agatston": "12", "age": "55"},      # duplicate id in the cohort
        {"key": "f", "status": "scored", "agatston": "", "age": "50"},        # no score, no group
        {"key": "g", "status": "scored", "agatston": "20", "age": "50"},      # negative time
        {"key": "h", "status": "scored", "agatston": "30", "age": "50"},      # event 2
        {"key": "i", "status": "scored", "agatston": "40", "age": "50"},      # event 'yes'
        {"key": "j", "status": "scored", "agatston": "50", "age": "50"},      # no follow-up row
        {"key": "k", "status": "scored", "agatston": "60", "age": "50"},      # time missing
        {"key": "l", "status": "scored", "agatston": "70", "age": "50"},      # follow-up twice
        {"key": "m", "status": "scored", "agatston": "0", "age": "52"},
    ]
    followup = [{"key": k, "years": t, "death": e} for k, t, e in [
        ("a", "5", "1"), ("b", "3", "1"), ("c", "4", "0"), ("d", "2", "1"), ("e", "1", "1"), ("f", "2", "0"),
        ("g", "-1", "1"), ("h", "2", "2"), ("i", "2", "yes"), ("k", "", "1"), ("l", "1", "0"), ("l", "2", "1"),
        ("m", "6", "0"), ("z", "3", "1")]]
    spec = Spec(id="key", time="years", event="death", adjust=["age"])
    joined = join(cohort, followup, spec)
    assert joined.excluded == {
        "no_followup_row": ["j"], "no_cohort_row": ["z"], "cohort_duplicate_id": ["e"], "followup_duplicate_id": ["l"],
        "cohort_not_scored": ["d"], "no_group": ["f"], "missing_time": ["k"], "negative_time": ["g"],
        "bad_event": ["h", "i"]}
    assert joined.ids == ["a", "b", "c", "m"]
    result = analyse(joined, spec)
    assert result["n"] == 4 and result["events"] == 2
    assert result["excluded"]["bad_event"] == 2 and result["excluded_ids"]["no_cohort_row"] == ["z"]
    assert result["cox_adjusted"]["left_out_missing_covariate"] == 1 and result["cox_adjusted"]["left_out_ids"] == ["c"]


def test_groups_from_the_score_and_the_reference_group() -> None:
    assert [group_label(s, (0, 100, 300)) for s in (0, 0.4, 100, 100.01, 300, 301)] == \
        ["0", ">0-100", ">0-100", ">100-300", ">100-300", ">300"]
    cohort = [{"key": str(i), "status": "scored", "grp": g} for i, g in enumerate("abcabcabc")]
    followup = [{"key": str(i), "t": str(i + 1), "e": str(i % 2)} for i in range(9)]
    spec = Spec(id="key", time="t", event="e", group="grp", reference_group="b")
    assert join(cohort, followup, spec).groups == ["b", "a", "c"]
    with pytest.raises(ValueError, match="reference group 'x'"):
        join(cohort, followup, Spec(id="key", time="t", event="e", group="grp", reference_group="x"))


def test_concordance_is_none_without_comparable_pairs() -> None:
    assert concordance(np.array([1.0, 2.0]), np.array([False, False]), np.array([0.1, 0.2])) is None


def _write(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_command_writes_json_html_and_plot_and_links_them_from_the_dashboard(tmp_path: Path, capsys) -> None:
    from cac_mhub.report.dashboard import write_dashboard

    _, score, age, time, event = _synthetic(600, 3)
    cohort, followup = _tables(score, age, time, event)
    out = tmp_path / "out"
    out.mkdir()
    _write(out / "cohort.csv", [{**row, "status": "scored", "risk_category": "low"} for row in cohort])
    write_dashboard(out)
    assert "outcomes.html" not in (out / "dashboard.html").read_text()
    fu = _write(tmp_path / "followup.csv", followup + [{"key": "nobody", "years": "1", "death": "1"}])
    code = main(["outcomes", str(out), str(fu), "--time", "years", "--event", "death", "--adjust", "age,sex",
                 "--horizons", "2,5,8", "--time-label", "years", "--output", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "n 600" in printed and "1 no cohort row" in printed and "HR" in printed
    result = json.loads((out / "outcomes.json").read_text())
    assert result["horizons"] == [2.0, 5.0, 8.0] and result["excluded"] == {"no_cohort_row": 1}
    assert set(result["kaplan_meier"]) == {"0", ">0-100", ">100-300", ">300"}
    page = (out / "outcomes.html").read_text()
    assert "outcomes_km.png" in page and "Numbers at risk" in page and "Cox model, adjusted" in page
    assert (out / "outcomes_km.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "href='outcomes.html'" in (out / "dashboard.html").read_text()


def test_command_refuses_bad_input_in_one_line(tmp_path: Path, capsys) -> None:
    cohort = _write(tmp_path / "cohort.csv", [{"key": "a", "status": "scored", "agatston": "1"}])
    fu = _write(tmp_path / "fu.csv", [{"key": "a", "years": "1", "death": "1"}])
    assert main(["outcomes", str(cohort), str(fu), "--time", "time", "--event", "death", "--output", str(tmp_path)]) == 2
    assert "column(s) time in neither table" in capsys.readouterr().err
    assert main(["outcomes", str(cohort), str(tmp_path / "none.csv"), "--time", "years", "--event", "death",
                 "--output", str(tmp_path)]) == 2
    assert "no such table" in capsys.readouterr().err
    assert main(["outcomes", str(cohort), str(fu), "--time", "years", "--event", "death", "--cuts", "100,0",
                 "--output", str(tmp_path)]) == 2
    fu_bad = _write(tmp_path / "bad.csv", [{"key": "a", "years": "-3", "death": "1"}])
    assert main(["outcomes", str(cohort), str(fu_bad), "--time", "years", "--event", "death",
                 "--output", str(tmp_path)]) == 2
    assert "no row left to analyse: 1 follow-up time negative" in capsys.readouterr().err
