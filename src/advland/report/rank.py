"""Rank correlations: Kendall's tau-b, vectorized over bootstrap resamples (one call
for all of them; equal to scipy.stats.kendalltau, tests/test_rank.py), its percentile
bootstrap CI, and the granulated tau of Jiang et al. (2019, "Fantastic generalization
measures").

Two sequences are reduced to the pairs where both values are finite.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd


def finite_pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (a_i, b_i) where both are finite, as two float arrays."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two 1-D sequences of one length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def taus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row of two finite (k, n) arrays."""
    i, j = np.triu_indices(a.shape[-1], k=1)
    da, db = np.sign(a[:, i] - a[:, j]), np.sign(b[:, i] - b[:, j])
    untied = np.count_nonzero(da, axis=1) * np.count_nonzero(db, axis=1).astype(float)
    with np.errstate(invalid="ignore"):  # 0 / 0: a row constant on one side
        return (da * db).sum(axis=1) / np.sqrt(untied)


def kendall_tau(a, b):
    """Kendall's tau-b: (concordant - discordant) / sqrt(n_a n_b) over all pairs i < j,
    n_a (n_b) the pairs not tied in a (in b); NaN with fewer than two pairs or when
    either side is constant (as scipy.stats.kendalltau). Two sequences give a float over
    their finite pairs; two finite (k, n) arrays give the k taus of their rows (what
    `bootstrap_ci` passes)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.ndim == 2 and a.shape == b.shape:
        return taus(a, b)
    a, b = finite_pairs(a, b)
    return float(taus(a[None], b[None])[0])


def bootstrap_ci(
    a,
    b,
    stat: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of stat(a, b) over the finite pairs: n_boot resamples of
    the pairs with replacement (numpy's default_rng(seed), so the same inputs give the
    same interval). `stat` takes the (n_boot, n) resampled arrays and returns one value
    per row (kendall_tau does); resamples where it is NaN (e.g. all one pair) are left
    out. (nan, nan) with fewer than two pairs or when no resample gives a number."""
    a, b = finite_pairs(a, b)
    if len(a) < 2:
        return float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    values = np.asarray(stat(a[draws], b[draws]), float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    lo, hi = np.quantile(values, [tail, 1 - tail])
    return float(lo), float(hi)


def granulated_tau(
    frame: pd.DataFrame, measure_col: str, target_col: str, axes: list[str]
) -> dict[str, float | None]:
    """Jiang et al.'s granulated Kendall tau. For each axis: group the rows by the
    values of every other axis, take tau(measure, target) in each group whose rows hold
    >= 2 distinct values of the axis, and average over those groups (NaN taus, e.g. of
    a constant measure, count as 0: no rank information). None where no group varies
    along the axis. Key "mean": the mean over the axes that are not None (None if all
    are). Rows where the measure or the target is not finite are left out."""
    rows = frame[np.isfinite(frame[measure_col].astype(float))]
    rows = rows[np.isfinite(rows[target_col].astype(float))]
    out: dict[str, float | None] = {}
    for axis in axes:
        others = [x for x in axes if x != axis]
        groups = rows.groupby(others, sort=False, dropna=False) if others else [((), rows)]
        taus = [
            kendall_tau(g[measure_col], g[target_col])
            for _, g in groups
            if g[axis].nunique(dropna=False) >= 2
        ]
        out[axis] = float(np.mean(np.nan_to_num(taus))) if taus else None
    found = [v for v in out.values() if v is not None]
    out["mean"] = float(np.mean(found)) if found else None
    return out
