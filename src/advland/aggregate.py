"""Several seeds of one run: per-seed metrics and their mean with a 95% confidence interval.

For n >= 2 seeds the interval is mean +- t_{0.975, n-1} s / sqrt(n), s the sample
standard deviation (Student's t, as the seeds are few); with one seed there is none.
"""

from __future__ import annotations

import math

from scipy import stats


def ci95_half_width(values: list[float]) -> float:
    """Half-width of the 95% t-interval of the mean of `values` (n >= 2)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))


def summarize(per_seed: dict[int, dict[str, float]]) -> dict:
    """{"n_seeds", "seeds": {seed: metrics}, "mean": {...}, "ci95": {...}} over the
    numeric metrics every seed has; "ci95" only with >= 2 seeds."""
    seeds = list(per_seed)
    keys = [
        k
        for k, v in per_seed[seeds[0]].items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and all(k in per_seed[s] for s in seeds)
    ]
    out = {
        "n_seeds": len(seeds),
        "seeds": {str(s): per_seed[s] for s in seeds},
        "mean": {k: sum(per_seed[s][k] for s in seeds) / len(seeds) for k in keys},
    }
    if len(seeds) >= 2:
        out["ci95"] = {k: ci95_half_width([per_seed[s][k] for s in seeds]) for k in keys}
    return out
