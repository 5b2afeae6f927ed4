"""Kendall's tau-b, its bootstrap CI and Jiang et al.'s granulated tau, against values
derived by hand, and against scipy.stats.kendalltau."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from advland.report.rank import bootstrap_ci, granulated_tau, kendall_tau


def test_kendall_tau_b_with_and_without_ties():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # scipy's example: 2 concordant, 6 discordant, ties 2 in x and 1 in y of 10 pairs:
    # (2 - 6) / sqrt(8 * 9) = -sqrt(2) / 3 (scipy: -0.4714045207910316)
    assert kendall_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-math.sqrt(2) / 3)
    # 12 concordant, 3 pairs tied in y, of 15: 12 / sqrt(15 * 12) (scipy: 0.894427190999916)
    assert kendall_tau([1, 2, 3, 4, 5, 6], [1, 1, 2, 2, 3, 3]) == pytest.approx(2 / math.sqrt(5))
    # 4 adjacent swaps of 28 pairs: (24 - 4) / 28 (scipy: 0.7142857142857142)
    assert kendall_tau(range(1, 9), [2, 1, 4, 3, 6, 5, 8, 7]) == pytest.approx(20 / 28)


def test_kendall_tau_is_nan_when_undefined_and_skips_non_finite_pairs():
    assert math.isnan(kendall_tau([1, 2, 3], [5, 5, 5]))
    assert math.isnan(kendall_tau([1], [2]))
    assert kendall_tau([1, 2, np.nan, 3], [1, 2, 0, 3]) == 1.0
    with pytest.raises(ValueError, match="one length"):
        kendall_tau([1, 2], [1, 2, 3])


def test_bootstrap_ci_is_deterministic_and_covers_a_clear_tau():
    rng = np.random.default_rng(1)
    a = np.arange(40.0)
    b = a + rng.normal(0, 6, 40)  # strongly, not perfectly, concordant
    tau = kendall_tau(a, b)
    lo, hi = bootstrap_ci(a, b, kendall_tau, n_boot=300, seed=3)
    assert (lo, hi) == bootstrap_ci(a, b, kendall_tau, n_boot=300, seed=3)
    assert (lo, hi) != bootstrap_ci(a, b, kendall_tau, n_boot=300, seed=4)
    assert 0 < lo < tau < hi < 1
    noise = rng.normal(0, 1, 40)  # independent of a: the CI straddles 0
    lo, hi = bootstrap_ci(a, noise, kendall_tau, n_boot=300)
    assert lo < kendall_tau(a, noise) < hi and lo < 0 < hi
    assert bootstrap_ci([1, 2, 3], [3, 2, 1], kendall_tau, n_boot=50) == (-1.0, -1.0)


def test_kendall_tau_of_rows_is_the_tau_of_each_row():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 4, (20, 7)).astype(float), rng.normal(size=(20, 7))
    a[3] = 1.0  # a constant row: NaN
    rows = kendall_tau(a, b)
    assert rows.shape == (20,) and math.isnan(rows[3])
    expected = [kendall_tau(x, y) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(rows, expected, equal_nan=True)


def test_bootstrap_ci_of_an_undefined_statistic_is_nan():
    assert all(math.isnan(x) for x in bootstrap_ci([1, 2, 3], [5, 5, 5], kendall_tau, 50))
    assert all(math.isnan(x) for x in bootstrap_ci([1], [1], kendall_tau, 50))


def test_granulated_tau_averages_within_groups_that_vary_along_each_axis():
    """Along eps (remedy fixed): none gives +1, awp -1: 0. Along remedy (eps fixed):
    eps 0 and 1 concordant (+1), eps 2 discordant (-1): 1/3. capacity never varies."""
    frame = pd.DataFrame(
        {
            "eps": [0, 1, 2, 0, 1, 2],
            "remedy": ["none"] * 3 + ["awp"] * 3,
            "capacity": ["default"] * 6,
            "measure": [1, 2, 3, 4, 5, 6],
            "gap": [1, 2, 3, 5, 4, 1],
        }
    )
    g = granulated_tau(frame, "measure", "gap", ["eps", "remedy", "capacity"])
    assert g["eps"] == pytest.approx(0.0) and g["remedy"] == pytest.approx(1 / 3)
    assert g["capacity"] is None and g["mean"] == pytest.approx(1 / 6)


def test_granulated_tau_counts_a_constant_measure_as_zero_and_skips_missing_rows():
    frame = pd.DataFrame(
        {"eps": [0, 1, 2, 3], "remedy": ["none"] * 4, "m": [1.0, 1, 1, np.nan], "gap": [1, 2, 3, 4]}
    )
    assert granulated_tau(frame, "m", "gap", ["eps", "remedy"]) == {
        "eps": 0.0,
        "remedy": None,
        "mean": 0.0,
    }
    assert granulated_tau(frame, "m", "gap", ["remedy"]) == {"remedy": None, "mean": None}


def test_kendall_tau_equals_scipys_on_random_data_with_ties():
    rng = np.random.default_rng(1)
    for n in (5, 17, 60):
        a, b = rng.integers(0, 6, n), rng.normal(size=n).round(1)
        assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
        rows = rng.integers(0, 4, (3, n)).astype(float)
        expected = [stats.kendalltau(r, b).statistic for r in rows]
        np.testing.assert_allclose(kendall_tau(rows, np.tile(b, (3, 1))), expected, atol=1e-12)
