"""advland.measure.aggregate' t-quantile without scipy: equal to scipy's to the bit where the table
holds it (df 1..100), and within 4e-11 beyond."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest
from scipy import stats

from advland.measure.aggregate import T975, ci95_half_width, t975


def test_table_is_scipys_to_the_bit():
    assert len(T975) == 100
    for df in range(1, 101):
        assert t975(df) == float(stats.t.ppf(0.975, df)), df


def test_half_width_is_the_scipy_formulas_to_the_bit():
    rng = random.Random(0)
    for n in [*range(2, 12), 50, 101]:
        for scale in (1e-3, 1.0, 1e4):
            values = [rng.gauss(0, scale) for _ in range(n)]
            mean = sum(values) / n
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
            old = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
            assert ci95_half_width(values) == old, (n, scale)


def test_beyond_the_table_within_4e_11_of_scipy():
    for df in [101, 102, 150, 500, 10**4, 10**7]:
        assert t975(df) == pytest.approx(float(stats.t.ppf(0.975, df)), rel=4e-11, abs=0), df


def test_df_below_one_is_refused():
    with pytest.raises(ValueError, match="df must be >= 1"):
        t975(0)


def test_seeds_imports_no_scipy():
    code = "import sys, advland.measure.aggregate; sys.exit('scipy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
