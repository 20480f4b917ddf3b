"""Agreement statistics against worked examples from the literature and the libraries' documentation."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from cac_mhub.scoring.categories import risk_group
from cac_mhub.stats import agreement as A

REFERENCE_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "reference" / "deepcac_nlst_results.csv"

#: Shrout & Fleiss (1979), Psychol Bull 86:420, Table 2: 6 targets rated by 4 judges.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])


def test_icc_matches_shrout_and_fleiss_table_4() -> None:
    """Their Table 4 gives ICC(1,1) = .17, ICC(2,1) = .29, ICC(3,1) = .71 for these ratings."""
    icc = A.icc_table(SHROUT_FLEISS)
    assert icc["icc_1_1"] == pytest.approx(0.17, abs=0.005)
    assert icc["icc_2_1"] == pytest.approx(0.29, abs=0.005)
    assert icc["icc_3_1"] == pytest.approx(0.71, abs=0.005)


def test_icc_two_raters_equals_the_anova_formulas() -> None:
    """Two raters, checked against the mean squares of a two-way ANOVA written out here."""
    rng = np.random.default_rng(3)
    truth = rng.gamma(0.7, 150, 40)
    x, y = truth + rng.normal(0, 20, 40), truth * 1.1 + rng.normal(0, 30, 40) + 15
    data = np.column_stack([x, y])
    n, k = data.shape
    grand = data.mean()
    ms_rows = k * ((data.mean(1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((data.mean(0) - grand) ** 2).sum() / (k - 1)
    ss_within = ((data - data.mean(1, keepdims=True)) ** 2).sum()
    ms_within = ss_within / (n * (k - 1))
    ms_error = (ss_within - ms_cols * (k - 1)) / ((n - 1) * (k - 1))
    expected = {
        "icc_1_1": (ms_rows - ms_within) / (ms_rows + (k - 1) * ms_within),
        "icc_2_1": (ms_rows - ms_error) / (ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n),
        "icc_3_1": (ms_rows - ms_error) / (ms_rows + (k - 1) * ms_error),
    }
    got = A.icc(x, y)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
    assert got["icc_2_1"] < got["icc_3_1"]  # a systematic offset costs absolute agreement only


def test_kappa_textbook_example_and_weighted_forms() -> None:
    """The classic 2 x 2 example (20, 5 / 10, 15): p_o = 0.7, p_e = 0.5, kappa = 0.4; with two
    groups every weighting gives the same kappa."""
    reference = np.array([0] * 25 + [1] * 25)
    test = np.array([0] * 20 + [1] * 5 + [0] * 10 + [1] * 15)
    out = A.kappas(reference, test, 2)
    assert out["confusion_matrix"] == [[20, 5], [10, 15]]
    assert out["group_agreement"] == pytest.approx(0.7)
    for key in ("kappa", "kappa_linear", "kappa_quadratic"):
        assert out[key] == pytest.approx(0.4), key


def _weighted_kappa(matrix: np.ndarray, power: int) -> float:
    """1 - sum(w O) / sum(w E) with w = |i - j|^power, written out by hand."""
    matrix = matrix / matrix.sum()
    expected = np.outer(matrix.sum(1), matrix.sum(0))
    i, j = np.indices(matrix.shape)
    weights = np.abs(i - j) ** power if power else (i != j).astype(float)
    return 1 - (weights * matrix).sum() / (weights * expected).sum()


def test_weighted_kappa_over_four_groups_by_hand() -> None:
    matrix = np.array([[30, 5, 1, 0], [6, 25, 4, 1], [0, 5, 12, 3], [1, 0, 4, 20]])
    reference = np.repeat(np.arange(4), matrix.sum(1))
    test = np.concatenate([np.repeat(np.arange(4), row) for row in matrix])
    out = A.kappas(reference, test, 4)
    assert out["confusion_matrix"] == matrix.tolist()
    assert out["kappa"] == pytest.approx(_weighted_kappa(matrix, 0))
    assert out["kappa_linear"] == pytest.approx(_weighted_kappa(matrix, 1))
    assert out["kappa_quadratic"] == pytest.approx(_weighted_kappa(matrix, 2))
    assert out["kappa"] < out["kappa_linear"] < out["kappa_quadratic"]  # near-misses dominate here


def test_spearman_scipy_documentation_example_and_pearson_on_logs() -> None:
    # scipy.stats.spearmanr's documented example: rho = 0.8207826816681233
    assert A.spearman(np.array([1, 2, 3, 4, 5.0]), np.array([5, 6, 7, 8, 7.0])) == pytest.approx(0.8207826816681233)
    x, y = np.array([0, 10, 100, 1000.0]), np.array([1, 12, 80, 1500.0])
    assert A.pearson_log(x, y) == pytest.approx(np.corrcoef(np.log1p(x), np.log1p(y))[0, 1])
    assert A.spearman(np.zeros(5), np.arange(5.0)) is None  # undefined, not NaN


def test_bland_altman_by_hand() -> None:
    out = A.bland_altman(np.array([10, 20, 30, 40.0]), np.array([11, 19, 33, 41.0]))  # differences 1, -1, 3, 1
    sd = np.sqrt(8 / 3)
    assert out["mean_difference"] == pytest.approx(1.0)
    assert out["sd_difference"] == pytest.approx(sd)
    assert out["limits_of_agreement"] == pytest.approx([1 - 1.96 * sd, 1 + 1.96 * sd])


def test_risk_groups_follow_the_scoring_module_at_the_boundaries() -> None:
    scores = [0, 0.01, 1, 100, 100.01, 300, 300.5, 5000]
    assert A.risk_groups(scores).tolist() == [risk_group(s) for s in scores] == [0, 1, 1, 1, 2, 2, 3, 3]
    assert A.risk_groups(scores, (0, 10, 100, 400)).tolist() == [0, 1, 1, 2, 3, 3, 3, 4]
    assert A.group_names() == ["0", "(0, 100]", "(100, 300]", "> 300"]


def test_agreement_identical_and_bootstrap_is_reproducible() -> None:
    rng = np.random.default_rng(1)
    reference = np.round(rng.gamma(0.5, 200, 60), 1)
    same = A.agreement(reference, reference)
    assert same["spearman"] == pytest.approx(1) and same["icc_2_1"] == pytest.approx(1)
    assert same["kappa_quadratic"] == pytest.approx(1) and same["group_agreement"] == 1
    assert same["mean_difference"] == 0 and same["limits_of_agreement"] == [0, 0]
    test = reference * rng.normal(1, 0.3, 60)
    stats = A.agreement(reference, test)
    first = A.bootstrap(reference, test, resamples=60, seed=7)
    assert first == A.bootstrap(reference, test, resamples=60, seed=7)
    assert first != A.bootstrap(reference, test, resamples=60, seed=8)
    for key in ("spearman", "icc_2_1", "kappa_linear", "mean_difference"):
        low, high = first[key]
        assert low <= stats[key] <= high, key


def test_agreement_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        A.agreement([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        A.agreement([1, 2, float("nan")], [1, 2, 3])


def test_deepcac_published_concordance_is_reproduced() -> None:
    """DeepCAC's stats/Concordance.ipynb prints, for this very table, Kappa 0.6177872074014817 and
    concordance rate 0.719696969697 (unweighted kappa over 0 / 1-100 / 101-300 / > 300)."""
    if not REFERENCE_CSV.is_file():
        pytest.skip(f"reference table not found at {REFERENCE_CSV}")
    with open(REFERENCE_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    manual = [float(r["CAC_manual"]) for r in rows]
    ai = [float(r["CAC_AI"]) for r in rows]
    out = A.agreement(manual, ai)
    assert out["n"] == 396
    assert out["kappa"] == pytest.approx(0.6177872074014817, abs=1e-12)
    assert out["group_agreement"] == pytest.approx(0.719696969697, abs=1e-9)
